"""Fine-tuning on Ray Train: an easy task learned with 2 DDP workers, regression in original units,
the bundle's encoder left untouched, and the pure helpers (epoch sharding, per-scan averaging, checks)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from brainjepa.heads import FinetuneConfig
from brainjepa.model import BrainEncoder, ModelConfig
from brainjepa.preprocess import RobustStats
from brainjepa_platform.evaluate.finetune import (
    compare_finetune,
    epoch_batches,
    evaluate_run,
    finetune,
    finetune_probe,
    scan_mean,
)
from brainjepa_platform.evaluate.splits import SplitIndices, subject_split
from brainjepa_platform.tracking.bundle import EncoderBundle
from brainjepa_platform.train.checkpoints import read_local_checkpoint

ON_RAY = pytest.mark.usefixtures("ray_cluster")  # (conftest marks these integration)

N_ROIS, FRAMES, N_SCANS, PER_SCAN = 23, 48, 40, 2
CFG = FinetuneConfig(
    lr=5e-3, min_lr=1e-5, layer_decay=0.75, weight_decay=0.05, epochs=5, batch_size=16, warmup_fraction=0.1
)


def _bundle(seed: int = 0) -> EncoderBundle:
    cfg = ModelConfig(size="tiny", n_rois=N_ROIS, frames=FRAMES, patch=8, n_gradients=5)
    gradients = np.random.default_rng(seed).standard_normal((N_ROIS, 5)).astype(np.float32)
    torch.manual_seed(seed)
    encoder = BrainEncoder(cfg, torch.from_numpy(gradients)).eval().requires_grad_(False)
    stats = RobustStats(np.zeros(N_ROIS), np.ones(N_ROIS))
    return EncoderBundle(encoder, cfg, stats, [f"roi{i}" for i in range(N_ROIS)], "atlas", gradients)


def _windows(shift: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """PER_SCAN noise windows per scan with the first 8 ROIs raised by the scan's ``shift``."""
    scan_index = np.repeat(np.arange(shift.size), PER_SCAN)
    windows = np.random.default_rng(seed).standard_normal((scan_index.size, N_ROIS, FRAMES)).astype(np.float32)
    windows[:, :8] += shift[scan_index, None, None].astype(np.float32)
    return windows, scan_index


def _subjects() -> list[str]:
    return [f"sub-{i:02d}" for i in range(N_SCANS)]


def _state(bundle: EncoderBundle) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in bundle.encoder.state_dict().items()}


@ON_RAY
def test_two_workers_learn_an_easy_task_and_leave_the_bundle_untouched(tmp_path: Path) -> None:
    bundle = _bundle()
    before = _state(bundle)
    y = np.array(["ctrl", "pat"])[np.arange(N_SCANS) % 2]
    windows, scan_index = _windows(3.0 * (y == "pat"), seed=1)
    split = subject_split(_subjects(), seed=0, labels=y)
    run = finetune(
        bundle, windows, scan_index, y, "classification", split, CFG, num_workers=2, storage_path=str(tmp_path / "runs")
    )
    result = evaluate_run(run, windows, scan_index, y, split)

    assert result.metrics["accuracy"] > 0.8, result.metrics
    assert result.param_name == "epochs" and 1 <= result.param_value <= CFG.epochs
    assert sorted(result.val_scores) == list(range(1, CFG.epochs + 1))
    assert result.val_scores[run.best_epoch] == max(result.val_scores.values())
    assert list(result.classes) == ["ctrl", "pat"] and set(result.y_pred) <= {"ctrl", "pat"}
    np.testing.assert_allclose(result.y_score.sum(axis=1), 1.0, rtol=1e-5)
    assert result.sizes == split.sizes() and len(result.y_true) == split.test.size
    assert run.metrics["epochs"] == CFG.epochs and run.metrics["best_epoch"] == run.best_epoch

    tuned = run.model.encoder.state_dict()
    assert any(not torch.equal(tuned[k], before[k]) for k in before), "fine-tuning left the encoder unchanged"
    assert all(torch.equal(v, before[k]) for k, v in bundle.encoder.state_dict().items())
    assert not any(p.requires_grad for p in bundle.encoder.parameters()) and not bundle.encoder.training

    state = read_local_checkpoint(Path(run.checkpoint))  # torch.load(weights_only=True) behind a hash check
    assert state["best_epoch"] == run.best_epoch
    assert all(torch.equal(v, run.model.state_dict()[k]) for k, v in state["model"].items())


@ON_RAY
def test_compare_finetune_regression_reports_original_units() -> None:
    """One worker (no DDP wrapper) and no storage_path (a temporary run folder), as ``evaluate`` calls it."""
    age = np.random.default_rng(2).uniform(20.0, 80.0, N_SCANS)
    windows, scan_index = _windows((age - 50.0) / 15.0, seed=3)
    comparison = compare_finetune(
        {"model": _bundle()},
        windows,
        scan_index,
        _subjects(),
        age,
        "regression",
        [0],
        (0.6, 0.2, 0.2),
        CFG,
        num_workers=1,
    )

    (result,) = comparison.results["model"]
    assert result.task == "regression" and result.param_name == "epochs"
    assert all(math.isfinite(v) for v in result.metrics.values()), result.metrics
    assert abs(result.y_pred.mean() - age.mean()) < 15.0, "predictions are not in the targets' units"
    np.testing.assert_array_equal(result.y_true, age[subject_split(_subjects(), 0).test])
    assert comparison.to_json()["per_seed"]["model"][0]["epochs"] == result.param_value


def test_epoch_batches_give_every_rank_the_same_steps() -> None:
    for n, world, batch in [(48, 2, 16), (47, 2, 16), (10, 3, 4), (5, 1, 16)]:
        per_rank = [epoch_batches(n, batch, seed=0, epoch=1, rank=r, world=world) for r in range(world)]
        assert {len(b) for b in per_rank} == {math.ceil(n / (batch * world))}
        seen = np.concatenate([np.concatenate(b) for b in per_rank])
        assert set(seen.tolist()) == set(range(n)) and seen.size == n + (-n) % world
    first = np.concatenate(epoch_batches(48, 16, seed=0, epoch=1, rank=0, world=1))
    assert not np.array_equal(first, np.concatenate(epoch_batches(48, 16, seed=0, epoch=2, rank=0, world=1)))


def test_scan_mean_averages_windows_per_scan() -> None:
    values = np.array([[1.0, 0.0], [0.0, 1.0], [0.2, 0.8]])
    np.testing.assert_allclose(scan_mean(values, np.array([1, 1, 0]), 2), [[0.2, 0.8], [0.5, 0.5]])
    np.testing.assert_allclose(scan_mean(np.array([1.0, 3.0, 5.0]), np.array([0, 0, 1]), 2), [2.0, 5.0])


@pytest.mark.parametrize(
    "case, message",
    [
        ("shape", "frames"),
        ("no_windows", "no windows"),
        ("one_class", "single class"),
        ("scan_range", "scan numbers"),
    ],
)
def test_bad_inputs_fail_before_training(case: str, message: str) -> None:
    y = np.array(["a", "b"] * 3)
    windows, scan_index = np.zeros((12, N_ROIS, FRAMES), np.float32), np.repeat(np.arange(6), 2)
    split = SplitIndices(np.array([0, 1, 2]), np.array([3]), np.array([4, 5]))
    if case == "shape":
        windows = windows[:, :, :40]
    elif case == "no_windows":
        windows, scan_index = windows[:10], scan_index[:10]
    elif case == "one_class":
        split = SplitIndices(np.array([0, 2]), np.array([1, 3]), np.array([4, 5]))
    else:
        scan_index = scan_index + 1
    with pytest.raises(ValueError, match=message):
        finetune_probe(_bundle(), windows, scan_index, y, "classification", split, CFG, storage_path="unused")
