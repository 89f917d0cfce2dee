"""The brainjepa command line, run as a user runs it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

BRAINJEPA = shutil.which("brainjepa") or str(Path(sys.executable).parent / "brainjepa")


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([BRAINJEPA, *args], capture_output=True, text=True, cwd=cwd, timeout=600)


def test_masks_command_reports_invariants(tmp_path) -> None:
    png = tmp_path / "masks.png"
    out = run("masks", "--rois", "450", "--frames", "160", "--patch", "16", "--batch", "16",
              "--samples", "300", "--seed", "0", "--json", "--plot", str(png))
    assert out.returncode == 0, out.stderr
    stats = json.loads(out.stdout)
    assert stats["overlap_tokens"] == 0
    assert stats["samples_missing_region"] == 0
    assert stats["last_patch_observed_fraction"] > 0
    assert 0 < stats["context_tokens_mean"] < 4500 and 0 < stats["target_tokens_mean"] < 4500
    assert png.stat().st_size > 10_000


def test_masks_command_rejects_bad_override() -> None:
    out = run("masks", "--rois", "20", "--frames", "40", "--patch", "8", "cross_roi_scale=[0.9, 0.1]")
    assert out.returncode == 2
    assert "cross_roi_scale" in out.stderr


def test_bench_step_prints_mfu_fields() -> None:
    out = run("bench", "step", "--model", "tiny", "--rois", "40", "--frames", "64", "--patch", "16",
              "--batch", "2", "--steps", "1", "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    for key in ("samples_per_s", "step_tflop", "achieved_gflops", "matmul_peak_gflops", "mfu"):
        assert result[key] > 0
    assert result["mfu"] == pytest.approx(result["achieved_gflops"] / result["matmul_peak_gflops"])


def test_local_pretraining_trains_and_writes_artifacts(tmp_path) -> None:
    out = run("pretrain-local", "--steps", "30", "--out", str(tmp_path / "demo"), "batch_size=8", "subjects=12")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Loss fell from" in out.stdout
    for name in ("config.yaml", "checkpoint.pt", "masks.png", "training_curves.png"):
        assert (tmp_path / "demo" / name).exists(), name
    resolved = yaml.safe_load((tmp_path / "demo" / "config.yaml").read_text())
    assert resolved["steps"] == 30 and resolved["batch_size"] == 8
