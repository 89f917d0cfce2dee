"""Ctrl-C, Ray's own output and the local cluster's exposure, checked on one real `brainjepa ingest` in a
subprocess (one Ray start for the three): it listens on the loopback address only, prints none of Ray's
chatter, and Ctrl-C ends it with one line and exit status 130."""

from __future__ import annotations

import ipaddress
import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from brainjepa_platform.data.synth import SynthOptions, write_bids
from brainjepa_platform.errors import DEBUG_ENV, EXIT_INTERRUPTED
from brainjepa_platform.storage import resolve

BRAINJEPA = shutil.which("brainjepa") or str(Path(sys.executable).parent / "brainjepa")
RAY_CHATTER = ("core_worker.cc", "Token authentication", "streaming_executor", "Progress bars disabled")


def is_loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip.split("%")[0])
    return (getattr(address, "ipv4_mapped", None) or address).is_loopback


def listening_addresses(pid: int) -> list[tuple[str, str]]:
    """(process name, address) of every listening TCP socket of ``pid`` and its descendants."""
    root = psutil.Process(pid)
    found = []
    for proc in [root, *root.children(recursive=True)]:
        try:
            found += [
                (proc.name(), c.laddr.ip) for c in proc.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN
            ]
        except psutil.Error:  # exited meanwhile
            continue
    return found


def read_stderr_until(proc: subprocess.Popen, marker: bytes, timeout: float) -> bytes:
    err, deadline = b"", time.monotonic() + timeout
    while marker not in err:
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"the command did not reach {marker!r}: {err.decode(errors='replace')}")
        ready, _, _ = select.select([proc.stderr], [], [], 1.0)
        if ready:
            err += os.read(proc.stderr.fileno(), 1 << 16)
    return err


@pytest.mark.integration
def test_ctrl_c_in_ingest_on_a_quiet_loopback_cluster(tmp_path) -> None:
    bids, out = tmp_path / "bids", tmp_path / "dataset"
    paths = write_bids(resolve(bids), SynthOptions(subjects=16, seed=0))
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", DEBUG_ENV)}
    command = [
        BRAINJEPA,
        "ingest",
        str(bids),
        "--atlas",
        paths["atlas"],
        "--labels",
        paths["labels"],
        "--out",
        str(out),
        "--scans-per-shard",
        "2",
    ]
    # its own process group, as a terminal's foreground job; SIGINT handled even if this runs in the background
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        err = read_stderr_until(proc, b"ingest:", timeout=300)  # the progress bar: Ray is up, chunks running
        listening = listening_addresses(proc.pid)
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in a terminal reaches the whole foreground group
        _, rest = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    err = (err + rest).decode(errors="replace")

    assert {name for name, _ in listening} >= {"gcs_server", "raylet"}, listening
    exposed = [(name, ip) for name, ip in listening if not is_loopback(ip)]
    assert not exposed, f"listening beyond the loopback address: {exposed}"

    assert proc.returncode == EXIT_INTERRUPTED, err
    assert "Traceback" not in err, err
    assert not [word for word in RAY_CHATTER if word in err], err
    lines = [line.strip() for line in err.replace("\r", "\n").splitlines() if line.strip()]
    assert [line for line in lines if "interrupted" in line] == [lines[-1]], err
    assert lines[-1].startswith("brainjepa ingest: interrupted (Ctrl-C); chunks finished so far are kept in "), err
    assert "the same command" in lines[-1]


def test_quieted_ray_still_raises_task_errors(ray_cluster, capfd) -> None:
    """Quieting Ray (Ray Data's console, the core worker's once-per-process line) leaves exceptions alone."""
    import ray

    from brainjepa_platform.cluster.connect import consume_actor_restart_warning, quiet_ray_data_console

    quiet_ray_data_console()
    consume_actor_restart_warning()

    @ray.remote
    def broken() -> None:
        raise ValueError("a real error in a Ray task")

    with pytest.raises(ValueError, match="a real error in a Ray task"):
        ray.get(broken.remote())
    assert "constructor arguments" not in capfd.readouterr().err


def test_ctrl_c_reaches_commands_whose_library_takes_sigint(monkeypatch) -> None:
    """Ray Train's fit(), in the main thread, replaces the SIGINT handler with one that aborts the run and
    exits 1 without a word; `brainjepa pretrain` runs it in a worker thread, so Ctrl-C stays a
    KeyboardInterrupt for the command (then one line, status 130), after Ray is stopped."""
    from brainjepa_platform.cluster import connect as cluster

    started, stopped = threading.Event(), threading.Event()
    monkeypatch.setattr(cluster, "stop_ray", stopped.set)
    # as in a fresh `brainjepa` process (an earlier test in this process may have left another handler)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)

    def training() -> None:
        if threading.current_thread() is threading.main_thread():  # as Ray Train does
            signal.signal(signal.SIGINT, lambda *_: sys.exit(1))
        started.set()
        stopped.wait(60)

    def ctrl_c() -> None:
        started.wait(60)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=ctrl_c, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        cluster.run_interruptible(training)
    assert stopped.is_set()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert logging.root.manager.disable == logging.NOTSET  # logging quieted while stopping only
    signal.signal(signal.SIGINT, previous)


WORKER_OUTPUT_SCRIPT = """
import sys, time
import ray
from brainjepa_platform.cluster.connect import init_ray
init_ray(worker_output=True)

@ray.remote
def work():
    print("step 5/20 (25%) from a worker", flush=True)
    print("worker chatter on stderr", file=sys.stderr, flush=True)

ray.get(work.remote())
time.sleep(3)  # the driver prints worker output as Ray's log monitor forwards it
ray.shutdown()
"""


@pytest.mark.integration
def test_pretraining_progress_reaches_the_console_without_ray_chatter(tmp_path) -> None:
    """``init_ray(worker_output=True)`` (``brainjepa pretrain``) shows what workers print on stdout (rank 0's
    progress lines), without Ray's worker prefix, and leaves their stderr in Ray's log files."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", DEBUG_ENV)}
    result = subprocess.run(
        [sys.executable, "-c", WORKER_OUTPUT_SCRIPT], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert "step 5/20 (25%) from a worker" in result.stdout, (result.stdout, result.stderr)
    assert "pid=" not in result.stdout
    assert "worker chatter" not in result.stderr and "worker chatter" not in result.stdout


def test_finalizer_errors_are_quiet_only_after_an_interrupt(capsys, monkeypatch) -> None:
    """After Ctrl-C the console script drops errors raised in finalizers while the process winds down (a Ray
    Data Dataset cut short in construction fails in __del__); before it, and with --debug, Python reports them."""
    from brainjepa_platform.cli.main import INTERRUPTED, quiet_finalizers_after_interrupt

    class HalfBuilt:
        def __del__(self) -> None:
            raise AttributeError("'MaterializedDataset' object has no attribute '_current_executor'")

    captured: list = []
    monkeypatch.setattr(sys, "unraisablehook", captured.append)
    HalfBuilt()  # collected at once: its finalizer's error goes to the hook
    monkeypatch.setattr(sys, "unraisablehook", sys.__unraisablehook__)
    (unraisable,) = captured
    try:
        monkeypatch.delenv(DEBUG_ENV, raising=False)
        quiet_finalizers_after_interrupt(unraisable)
        assert "_current_executor" in capsys.readouterr().err  # not interrupted: reported
        INTERRUPTED.set()
        quiet_finalizers_after_interrupt(unraisable)
        assert capsys.readouterr().err == ""
        monkeypatch.setenv(DEBUG_ENV, "1")
        quiet_finalizers_after_interrupt(unraisable)
        assert "_current_executor" in capsys.readouterr().err  # --debug: reported
    finally:
        INTERRUPTED.clear()
