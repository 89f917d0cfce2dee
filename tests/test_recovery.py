"""Training recovery and progress without Ray: checkpoint fallback, the run lock, progress lines, bench progress."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest
import torch

from brainjepa.benchmark import benchmark_step
from brainjepa.model import ModelConfig
from brainjepa_platform.storage import resolve
from brainjepa_platform.tracking.names import encoder_model_name
from brainjepa_platform.train.checkpoints import (
    ENGINE_FILE,
    describe,
    finished_checkpoint,
    newest_intact,
    write_checkpoint_dir,
)
from brainjepa_platform.train.loop import Progress, format_duration, step_keys
from brainjepa_platform.train.run_lock import LOCK_FILE, RunLock, RunLockedError

LOCK_LOG = "brainjepa_platform.train.run_lock"


# --- item 5: a torn newest checkpoint falls back to the newest intact one ---------------------------
def _checkpoint(run_dir: Path, name: str, step: int) -> Path:
    """A checkpoint directory as the training loop writes it (engine.pt + meta.json with its hash)."""
    directory = run_dir / name
    directory.mkdir(parents=True)
    state = {"step": step, "model": {"w": torch.full((4,), float(step))}}
    write_checkpoint_dir(directory, state, {"run_id": "r", "config": {}})
    return directory


def test_torn_newest_checkpoint_falls_back_to_previous(tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / "name"
    older = _checkpoint(run_dir, "checkpoint_2026-01-01_00-00-01.000001", 4)
    newest = _checkpoint(run_dir, "checkpoint_2026-01-01_00-00-02.000001", 8)
    engine = newest / ENGINE_FILE
    engine.write_bytes(engine.read_bytes()[: engine.stat().st_size // 2])  # truncated upload
    loc = resolve(run_dir)
    selection = newest_intact(loc)
    assert selection.step == 4 and selection.state["model"]["w"][0] == 4.0
    assert [(s.step, s.uri) for s in selection.skipped] == [(8, str(newest))]
    line = describe(selection, loc)
    assert line == (
        f"skipped unusable checkpoint(s): step 8 at {newest} ({ENGINE_FILE} does not match the hash in "
        f"meta.json (torn or altered file)); resuming from the newest intact one, step 4 at {older}"
    )


def test_missing_engine_and_no_intact_checkpoint_are_said(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    (_checkpoint(run_dir, "checkpoint_a", 4) / ENGINE_FILE).unlink()
    loc = resolve(run_dir)
    selection = newest_intact(loc)
    assert selection.state is None and selection.skipped[0].step == 4
    assert describe(selection, loc) == (
        f"skipped unusable checkpoint(s): step 4 at {run_dir / 'checkpoint_a'} "
        f"({ENGINE_FILE} does not exist); no intact checkpoint left in {run_dir}: "
        "starting from step 0"
    )
    assert describe(newest_intact(resolve(tmp_path / "empty")), loc) is None
    intact = _checkpoint(tmp_path / "ok", "c", 2)
    assert describe(newest_intact(resolve(tmp_path / "ok")), loc) == f"resuming from step 2 at {intact}"


def test_a_run_is_finished_only_at_an_intact_checkpoint_of_its_last_step(tmp_path: Path) -> None:
    """What lets a rerun of a finished run skip training: an intact checkpoint at the last step, nothing less."""
    run_dir = tmp_path / "run"
    assert finished_checkpoint(resolve(run_dir), 8) is None  # no run yet
    _checkpoint(run_dir, "checkpoint_a", 4)
    assert finished_checkpoint(resolve(run_dir), 8) is None  # unfinished: 4 of 8 steps
    last = _checkpoint(run_dir, "checkpoint_b", 8)
    finished = finished_checkpoint(resolve(run_dir), 8)
    assert finished is not None and finished.step == 8 and finished.uri == str(last) and not finished.skipped
    engine = last / ENGINE_FILE
    engine.write_bytes(engine.read_bytes()[:100])  # a torn last checkpoint: the run must train steps 5-8 again
    assert finished_checkpoint(resolve(run_dir), 8) is None


# --- item 6: one run per run folder ---------------------------------------------------------------
def _write_lock(run_dir: Path, **fields: object) -> None:
    now = time.time()
    holder = {"host": socket.gethostname(), "pid": os.getpid(), "token": "other", "started": now, "heartbeat": now}
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / LOCK_FILE).write_text(json.dumps({**holder, **fields}))


def test_second_run_is_refused_naming_the_holder(tmp_path: Path) -> None:
    loc = resolve(tmp_path / "run")
    with RunLock(loc) as first:
        held = json.loads((tmp_path / "run" / LOCK_FILE).read_text())
        assert held["pid"] == os.getpid() and held["host"] == socket.gethostname()
        with pytest.raises(RunLockedError) as refused:
            RunLock(loc).acquire()
        message = str(refused.value)
        assert f"pid {os.getpid()}" in message and socket.gethostname() in message and "train.name" in message
        assert first.read().token == held["token"]  # the refused run left the lock alone
    assert not (tmp_path / "run" / LOCK_FILE).exists()


def test_lock_is_released_on_an_exception(tmp_path: Path) -> None:
    loc = resolve(tmp_path / "run")
    with pytest.raises(KeyboardInterrupt), RunLock(loc):
        raise KeyboardInterrupt
    assert not (tmp_path / "run" / LOCK_FILE).exists()
    with RunLock(loc):  # free again
        pass


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    _write_lock(tmp_path / "run", pid=dead.pid)
    with caplog.at_level(logging.WARNING, logger=LOCK_LOG), RunLock(resolve(tmp_path / "run"), settle_s=0) as lock:
        assert lock.read().token == lock.me.token
    assert f"process {dead.pid} is no longer running" in caplog.text and "taking over" in caplog.text


def test_lock_left_by_this_process_is_taken_over(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A run whose store failed could not delete its lock; the next run in the same process takes it over."""
    _write_lock(tmp_path / "run")  # this pid, a token no live RunLock holds
    with caplog.at_level(logging.WARNING, logger=LOCK_LOG), RunLock(resolve(tmp_path / "run"), settle_s=0):
        pass
    assert "left by an earlier run in this process" in caplog.text


def test_lock_of_another_host_is_stale_only_without_heartbeat(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    loc = resolve(tmp_path / "run")
    _write_lock(tmp_path / "run", host="other-host", pid=1)
    with pytest.raises(RunLockedError, match="host other-host, pid 1"):
        RunLock(loc, stale_after=60).acquire()
    _write_lock(tmp_path / "run", host="other-host", pid=1, heartbeat=time.time() - 600)
    with caplog.at_level(logging.WARNING, logger=LOCK_LOG), RunLock(loc, stale_after=60, settle_s=0):
        pass
    assert "no heartbeat for 600s" in caplog.text


def test_held_lock_heartbeat_is_refreshed(tmp_path: Path) -> None:
    with RunLock(resolve(tmp_path / "run"), heartbeat_s=0.05) as lock:
        first = lock.read().heartbeat
        deadline = time.monotonic() + 30
        while lock.read().heartbeat == first and time.monotonic() < deadline:
            time.sleep(0.05)
        assert lock.read().heartbeat > first


# --- item 7: registered names say what the model accepts --------------------------------------------
def test_encoder_model_name_is_per_atlas_and_valid_for_mlflow() -> None:
    assert encoder_model_name("schaefer400_tian50", 450) == "brainjepa-encoder-schaefer400_tian50-450"
    assert encoder_model_name("a/b: c%d", 24) == "brainjepa-encoder-a-b-c-d-24"
    assert encoder_model_name("../", 3) == "brainjepa-encoder-unnamed-3"
    assert encoder_model_name("atlas", 24) != encoder_model_name("atlas", 90)


# --- item 12: progress ------------------------------------------------------------------------------
def test_progress_line_has_step_loss_rate_and_eta() -> None:
    now = [100.0]
    progress = Progress(total=200, first_step=50, clock=lambda: now[0])
    now[0] += 30.0  # 10 steps in 30 s since the resume at step 50
    line = progress.line(60, 0.12345, 42.0)
    assert line == "step 60/200 (30%)  loss 0.1235  42.0 samples/s  ETA 7m00s"
    assert format_duration(float("nan")) == "?" and format_duration(4000) == "1h06m" and format_duration(5) == "5s"
    assert list(zip(range(5), step_keys(7, 2))) == list(enumerate([(8, 0), (8, 1), (9, 0), (9, 1), (10, 0)]))


def test_bench_step_shows_progress_on_stderr_only(capsys: pytest.CaptureFixture[str]) -> None:
    cfg = ModelConfig(size="tiny", n_rois=8, frames=16, patch=8, n_gradients=3)
    result = benchmark_step(cfg, batch=1, steps=2, warmup=1, peak_size=64)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "bench step tiny" in captured.err and "3/3" in captured.err
    assert result.steps == 2 and result.mfu > 0


def test_a_run_or_sweep_saved_before_a_setting_existed_still_resumes() -> None:
    """Settings added since a run or sweep was saved count as their defaults (which keep the old behaviour);
    changing one of them on the rerun is still refused, and reading a full saved config adds no difference."""
    import copy

    from brainjepa.config import load_config, to_dict
    from brainjepa_platform.sweep.config import load_sweep_config
    from brainjepa_platform.sweep.driver import check_same_sweep, resolved_sweep
    from brainjepa_platform.train.config import PretrainConfig
    from brainjepa_platform.train.trainer import check_resumable, with_current_defaults

    root = Path(__file__).resolve().parents[1] / "configs"
    for overrides in (
        [],
        [
            "masks.preset=authors",
            "masks.cross_roi_scale=[0.3,0.4]",
            "pretext.regularizer=sigreg",
            "pretext.reg_weight=0.05",
        ],
    ):
        current = to_dict(load_config(PretrainConfig, root / "pretrain" / "tiny.yaml", overrides))
        assert with_current_defaults(PretrainConfig, current) == current
        older = copy.deepcopy(current)
        del older["masks"]["in_block_scale"]  # saved before the in-block option existed
        check_resumable(older, current, "r")
        with pytest.raises(ValueError, match=r"masks.in_block_scale: \[0.0, 0.0\] -> \[0.2, 0.3\]"):
            check_resumable(older, {**current, "masks": {**current["masks"], "in_block_scale": [0.2, 0.3]}}, "r")

    sweep = resolved_sweep(load_sweep_config(root / "sweep" / "masking.yaml", ["data.dataset=data/cohort"]))
    older = copy.deepcopy(sweep)
    del older["objective"]["kind"], older["pretrain"]["masks"]["in_block_scale"]
    check_same_sweep(older, sweep, "s")
    with pytest.raises(ValueError, match=r"objective.kind: 'probe' -> 'fingerprint'"):
        changed = {**sweep, "objective": {**sweep["objective"], "kind": "fingerprint", "metric": "identification"}}
        check_same_sweep(older, changed, "s")


def test_resume_refuses_changed_settings_but_not_scale() -> None:
    """A rerun may change scale and tracking; any other setting names the key, old and new value."""
    from brainjepa_platform.sweep.driver import check_same_sweep
    from brainjepa_platform.train.trainer import check_resumable

    saved = {"model": {"depth": 2}, "train": {"num_workers": 1}, "tracking": {"experiment": "a"}}
    check_resumable(saved, {"model": {"depth": 2}, "train": {"num_workers": 4}, "tracking": {"experiment": "b"}}, "r")
    with pytest.raises(ValueError, match=r"model.depth: 2 -> 3"):
        check_resumable(saved, {**saved, "model": {"depth": 3}}, "r")
    with pytest.raises(ValueError, match=r"holds a sweep started with other settings \(grid: 1 -> 2\)"):
        check_same_sweep({"grid": 1, "verbose": 0}, {"grid": 2, "verbose": 1}, "s")
