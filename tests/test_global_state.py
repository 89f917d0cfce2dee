"""Library code leaves process-wide state as it found it: matplotlib's backend, Ray Data's DataContext,
MLflow's tracking URI."""

from __future__ import annotations

import os
import subprocess
import sys

import mlflow
import pytest

DRAW = """
import sys
import matplotlib
import numpy as np
import brainjepa_platform.plots as plots
from brainjepa.masks import MaskCollator, MaskConfig
masks = MaskCollator(MaskConfig(), 20, 5, seed=0).next_masks(2)
plots.plot_masks(masks, 20, 5, sys.argv[1] + "/masks.png")
plots.plot_training_curves([{"step": 1, "loss": 1.0}, {"step": 2, "loss": 0.5}], sys.argv[1] + "/curves.png")
print(matplotlib.get_backend(), "matplotlib.pyplot" in sys.modules)
"""


def test_plots_leave_matplotlibs_backend_and_pyplot_alone(tmp_path) -> None:
    env = {**os.environ, "MPLBACKEND": "svg"}
    out = subprocess.run(
        [sys.executable, "-c", DRAW, str(tmp_path)], capture_output=True, text=True, env=env, timeout=300, check=True
    )
    assert out.stdout.split() == ["svg", "False"], out.stdout + out.stderr
    assert (tmp_path / "masks.png").read_bytes()[:4] == b"\x89PNG" and (tmp_path / "curves.png").stat().st_size > 1000


def test_ray_data_progress_bars_are_off_only_inside() -> None:
    from ray.data import DataContext

    from brainjepa_platform.cluster.connect import no_ray_data_progress_bars

    before = DataContext.get_current()
    enabled = before.enable_progress_bars
    with no_ray_data_progress_bars():
        assert DataContext.get_current().enable_progress_bars is False
    assert DataContext.get_current() is before and before.enable_progress_bars == enabled


@pytest.mark.parametrize("env", [None, "sqlite:///env.db"])
def test_using_tracking_uri_puts_the_process_uri_back(env, monkeypatch, tmp_path) -> None:
    from brainjepa_platform.tracking.uri import using_tracking_uri

    if env is None:
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    else:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", env)
    mlflow.set_tracking_uri(None)
    before, was_set = mlflow.get_tracking_uri(), mlflow.is_tracking_uri_set()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with pytest.raises(RuntimeError), using_tracking_uri(uri):
        assert mlflow.get_tracking_uri() == uri
        raise RuntimeError("a failed run")
    assert (mlflow.get_tracking_uri(), mlflow.is_tracking_uri_set()) == (before, was_set)
    assert os.environ.get("MLFLOW_TRACKING_URI") == env
