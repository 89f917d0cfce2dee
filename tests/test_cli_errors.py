"""How commands end (exit status 0 / 2 / 130 / 141, one line for user errors, tracebacks for bugs) and
the tracking-server check that runs before any Ray work. No Ray cluster is started here."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from brainjepa_platform.cli import main as cli
from brainjepa_platform.errors import DEBUG_ENV, EXIT_BROKEN_PIPE, EXIT_ERROR, UserError
from brainjepa_platform.tracking.store import check_tracking_uri
from tests.manifests import small_manifest, write_manifest

BRAINJEPA = shutil.which("brainjepa") or str(Path(sys.executable).parent / "brainjepa")
REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_error_line(err: str, command: str) -> str:
    """The single stderr line of a user error (no traceback; MLflow's own INFO lines about creating its
    database aside)."""
    lines = [line for line in err.splitlines() if line.strip() and " INFO mlflow." not in line]
    assert "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith(f"brainjepa {command}: error: "), err
    return lines[0]


@pytest.fixture
def fc_file(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((24, 200))
    path = tmp_path / "fc.npy"
    np.save(path, np.corrcoef(x))
    return path


@pytest.fixture(autouse=True)
def no_debug(monkeypatch) -> None:
    monkeypatch.delenv(DEBUG_ENV, raising=False)


# --- exit status 2 and one line for user errors ------------------------------------------------------
def test_output_under_a_file_is_one_line(fc_file, tmp_path, capsys) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert cli.main(["gradients", str(fc_file), "--out", str(blocker / "g.npz")]) == EXIT_ERROR
    line = one_error_line(capsys.readouterr().err, "gradients")
    assert str(blocker) in line


def test_output_that_is_a_folder_is_one_line(fc_file, tmp_path, capsys) -> None:
    assert cli.main(["gradients", str(fc_file), "--out", str(tmp_path)]) == EXIT_ERROR
    assert "is a folder" in one_error_line(capsys.readouterr().err, "gradients")


@pytest.mark.skipif(sys.platform != "linux", reason="needs a place nobody can write to (/sys on Linux)")
def test_read_only_output_is_one_line(fc_file, capsys) -> None:
    assert cli.main(["gradients", str(fc_file), "--out", "/sys/brainjepa-test/g.npz"]) == EXIT_ERROR
    assert "/sys/brainjepa-test" in one_error_line(capsys.readouterr().err, "gradients")


def test_missing_source_says_it_does_not_exist(tmp_path, capsys) -> None:
    missing = tmp_path / "no-such-cohort"
    assert cli.main(["gradients", str(missing), "--out", str(tmp_path / "g.npz")]) == EXIT_ERROR
    assert "no such file or folder" in one_error_line(capsys.readouterr().err, "gradients")
    assert cli.main(["dataset", "info", str(missing)]) == EXIT_ERROR
    assert str(missing) in one_error_line(capsys.readouterr().err, "dataset info")


def test_unknown_model_uri_is_one_line(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    code = cli.main(
        ["embed", "--model", "models:/no-such-model", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "emb")]
    )
    assert code == EXIT_ERROR
    assert "no-such-model" in one_error_line(capsys.readouterr().err, "embed")


def test_malformed_yaml_names_the_override_or_the_file(tmp_path, capsys) -> None:
    code = cli.main(
        [
            "sweep",
            "--config",
            str(REPO / "configs/sweep/laptop.yaml"),
            "data.dataset=x",
            "space={model.n_gradients: {values: [3, 10}",
        ]
    )
    assert code == EXIT_ERROR
    line = one_error_line(capsys.readouterr().err, "sweep")
    assert "space=" in line and "malformed YAML" in line
    config = tmp_path / "bad.yaml"
    config.write_text("model:\n  size: [tiny\n")
    assert cli.main(["pretrain", "--config", str(config), "data.dataset=x"]) == EXIT_ERROR
    line = one_error_line(capsys.readouterr().err, "pretrain")
    assert "malformed YAML" in line and f"{config}, line 3" in line


def test_debug_shows_the_traceback(tmp_path, monkeypatch, capsys) -> None:
    args = ["gradients", str(tmp_path / "missing.npy"), "--out", str(tmp_path / "g.npz")]
    for argv in (["--debug", *args], [*args, "--debug"]):
        assert cli.main(argv) == EXIT_ERROR
        err = capsys.readouterr().err
        assert "Traceback" in err and err.strip().splitlines()[-1].startswith("brainjepa gradients: error:")
    monkeypatch.setenv(DEBUG_ENV, "1")
    assert cli.main(args) == EXIT_ERROR
    assert "Traceback" in capsys.readouterr().err


@pytest.mark.parametrize(
    "bug",
    [
        TypeError("unsupported operand"),
        AttributeError("no attribute 'x'"),
        KeyError("n_rois"),
        RuntimeError("internal invariant"),
    ],
)
def test_programming_errors_keep_their_traceback(bug, fc_file, tmp_path, monkeypatch) -> None:
    def broken(request):
        raise bug

    monkeypatch.setattr("brainjepa_platform.data.gradient_artifacts.run_gradients", broken)
    with pytest.raises(type(bug)):
        cli.main(["gradients", str(fc_file), "--out", str(tmp_path / "g.npz")])


@pytest.mark.integration
def test_closed_output_pipe_ends_quietly() -> None:
    """`brainjepa ... | head -1` where head has gone: no traceback, no message, status 141 (as a shell
    reports for a closed pipe)."""
    proc = subprocess.Popen(
        [BRAINJEPA, "masks", "--rois", "20", "--frames", "40", "--patch", "8", "--samples", "5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    proc.stdout.close()  # the reader goes away before the command writes anything
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == EXIT_BROKEN_PIPE
    assert err == ""


# --- the tracking server is checked before Ray starts ------------------------------------------------
def test_tracking_server_refusing_connections_fails_fast() -> None:
    uri = f"http://127.0.0.1:{free_port()}"
    start = time.monotonic()
    with pytest.raises(UserError, match=uri.replace(".", r"\.")):
        check_tracking_uri(uri, timeout=5)
    assert time.monotonic() - start < 30


def test_tracking_server_that_never_answers_fails_after_the_timeout() -> None:
    with socket.socket() as server:  # accepts connections (the kernel does), never answers
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        uri = f"http://127.0.0.1:{server.getsockname()[1]}"
        with pytest.raises(UserError, match="cannot be reached"):
            check_tracking_uri(uri, timeout=1)


def test_tracking_server_answering_any_status_is_reachable() -> None:
    from http.server import BaseHTTPRequestHandler, HTTPServer
    from threading import Thread

    class NotFound(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_error(404)

        def log_message(self, *args) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), NotFound)
    Thread(target=server.serve_forever, daemon=True).start()
    try:
        uri = f"http://127.0.0.1:{server.server_port}"
        assert check_tracking_uri(uri, timeout=5) == uri
    finally:
        server.shutdown()


def test_tracking_store_in_an_unwritable_place_is_refused(tmp_path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(UserError, match="not a writable folder"):
        check_tracking_uri(f"sqlite:///{blocker / 'mlflow.db'}")
    assert check_tracking_uri(f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}")  # created by MLflow later


def test_pretrain_with_unreachable_tracking_server_fails_before_ray(forbid_ray, tmp_path, monkeypatch, capsys) -> None:
    uri = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    code = cli.main(
        ["pretrain", "--config", str(REPO / "configs/pretrain/tiny.yaml"), f"data.dataset={tmp_path / 'data'}"]
    )
    assert code == EXIT_ERROR
    assert uri in one_error_line(capsys.readouterr().err, "pretrain")


def test_sweep_that_cannot_fit_the_atlas_fails_before_ray(forbid_ray, tmp_path, monkeypatch, capsys) -> None:
    """The gradients sweep (up to 30 gradients) on a 24-ROI dataset: refused at once, not after Ray work."""
    dataset = write_manifest(tmp_path / "cohort", small_manifest(24, atlas="atlas"))
    code = cli.main(
        [
            "sweep",
            "--config",
            str(REPO / "configs/sweep/gradients.yaml"),
            f"data.dataset={dataset}",
            f"pretrain_config={REPO / 'configs/pretrain/tiny.yaml'}",
            f"storage_path={tmp_path / 'sweeps'}",
        ]
    )
    assert code == EXIT_ERROR
    line = one_error_line(capsys.readouterr().err, "sweep")
    assert "space.model.n_gradients: [30]" in line and "24 ROIs" in line


@pytest.mark.parametrize("interrupted", [True, False])
def test_console_script_keeps_130_once_interrupted(interrupted, monkeypatch) -> None:
    """A local Ray node turns a SIGTERM into ``sys.exit(1)`` (Ray's reaper may send one to the process group as
    the cluster stops): after the command has reported Ctrl-C the exit status stays 130; otherwise it is kept."""
    import signal
    import threading

    def command_then_ray_exit(argv: list[str] | None = None) -> int:
        if interrupted:
            cli.INTERRUPTED.set()  # what _run does when it reports the interruption
        raise SystemExit(1)

    monkeypatch.setattr(cli, "INTERRUPTED", threading.Event())
    monkeypatch.setattr(cli, "main", command_then_ray_exit)
    before = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(SystemExit) as stop:
            cli.console()
        assert stop.value.code == (130 if interrupted else 1)
        assert (signal.getsignal(signal.SIGTERM) == signal.SIG_IGN) == interrupted
    finally:
        signal.signal(signal.SIGTERM, before)


def test_a_local_ray_start_is_tried_again_only_when_the_raylet_timed_out(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ray gives a starting raylet a fixed 30 s; an overloaded machine gets a second try, other errors none."""
    import ray

    from brainjepa_platform.cluster import connect

    calls: list[str] = []
    outcomes: list[BaseException | str] = []

    def fake_init(**kwargs: object) -> str:
        calls.append("init")
        outcome = outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    monkeypatch.setattr(ray, "init", fake_init)
    monkeypatch.setattr(ray, "shutdown", lambda: calls.append("shutdown"))
    timeout = Exception("The current node timed out during startup. This could happen because ...")

    outcomes[:] = [timeout, "context"]
    assert connect.start_local_ray(num_cpus=4) == "context"
    assert calls == ["init", "shutdown", "init"]

    calls.clear()
    outcomes[:] = [timeout, timeout]
    with pytest.raises(Exception, match="timed out during startup"):
        connect.start_local_ray(num_cpus=4)
    assert calls == ["init", "shutdown", "init"]

    calls.clear()
    outcomes[:] = [ValueError("num_cpus must be >= 0")]
    with pytest.raises(ValueError, match="num_cpus"):
        connect.start_local_ray(num_cpus=-1)
    assert calls == ["init"]
