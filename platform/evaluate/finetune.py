"""Fine-tuning for downstream evaluation: encoder + pooled LayerNorm + linear head on Ray Train.

``finetune`` trains ``FinetuneModel(copy of bundle.encoder)`` with ``FinetuneEngine`` (AdamW over
layer-wise-decayed groups, warmup + cosine) in a ``TorchTrainer`` (DDP: gloo on CPU, nccl on GPU).
Inputs are windows of scans: ``windows[j]`` is one robust-scaled (R, frames) model input and
``scan_index[j]`` its scan; splits and targets are per scan. Rank 0 scores the validation scans
after every epoch (window outputs averaged per scan) and keeps the best epoch's weights, which it
reports as the run's checkpoint. ``finetune_probe`` then scores the test scans on the driver and
returns a ``ProbeResult``, so fine-tuned encoders sit next to linear probes in a ``ComparisonResult``.

Data reach the workers as object-store references in ``train_loop_config`` rather than as a Ray
Dataset: the windows are already a small in-memory array, every epoch needs a fresh seeded shuffle,
and DDP needs every rank to take exactly the same number of steps (an extra step on one rank hangs
the all-reduce). Each worker fetches the arrays from the object store (shared memory on its node)
and takes a ``DistributedSampler``-style slice of one shared permutation, padded to a multiple of
the world size. Workers import only :mod:`brainjepa_platform.evaluate.finetune_worker` (torch and the model
library); the driver-only modules (probes and metrics: scikit-learn; tracking: MLflow) stay out of them.
"""

from __future__ import annotations

import copy
import dataclasses
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from brainjepa.heads import FinetuneConfig, FinetuneEngine, FinetuneModel, Task
from brainjepa_platform.evaluate.finetune_worker import (
    epoch_batches,
    scan_mean,
    train_loop_per_worker,
    val_score,
    window_outputs,
)
from brainjepa_platform.train.checkpoints import read_local_checkpoint

if TYPE_CHECKING:
    from brainjepa_platform.evaluate.probe import ComparisonResult, ProbeResult
    from brainjepa_platform.evaluate.splits import SplitIndices
    from brainjepa_platform.tracking.bundle import EncoderBundle


# --- the driver ------------------------------------------------------------------------------------
# inputs, split parts and targets (checked on the driver, before any worker starts)
@dataclass(frozen=True)
class _Part:
    """The windows of one split part: window indices and, per window, the row of its scan in ``scans``."""

    scans: np.ndarray
    windows: np.ndarray
    rows: np.ndarray


def _part(scan_index: np.ndarray, scans: np.ndarray, name: str) -> _Part:
    lookup = np.full(int(max(scan_index.max(), scans.max())) + 1, -1)
    lookup[scans] = np.arange(scans.size)
    windows = np.flatnonzero(lookup[scan_index] >= 0)
    rows = lookup[scan_index[windows]]
    missing = np.setdiff1d(np.arange(scans.size), rows)
    if missing.size:
        raise ValueError(
            f"{missing.size} {name} scans have no windows (e.g. scan {int(scans[missing[0]])}); "
            "every scan of the split needs at least one window"
        )
    return _Part(scans, windows, rows)


def _check_inputs(bundle: EncoderBundle, windows: np.ndarray, scan_index: np.ndarray, n_scans: int) -> None:
    cfg = bundle.config
    if windows.ndim != 3 or windows.shape[1:] != (cfg.n_rois, cfg.frames):
        raise ValueError(
            f"windows must be (n_windows, {cfg.n_rois} ROIs, {cfg.frames} frames) for this encoder, got {windows.shape}"
        )
    if windows.shape[0] == 0 or scan_index.shape != (windows.shape[0],):
        raise ValueError(f"need windows and one scan_index per window: {scan_index.shape} for {windows.shape[0]}")
    if scan_index.min() < 0 or scan_index.max() >= n_scans:
        raise ValueError(f"scan_index values must be scan numbers 0..{n_scans - 1} (one target per scan)")
    if not np.all(np.isfinite(windows)):
        raise ValueError("windows contain NaN or Inf")


def _targets(y: np.ndarray, task: str, train_scans: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, int]:
    """(per-scan training targets: class codes or floats, sorted classes or None, number of outputs)."""
    if task == "regression":
        values = y.astype(np.float64)
        if not np.all(np.isfinite(values)):
            raise ValueError("regression targets contain NaN or Inf; drop those scans first")
        return values, None, 1
    if task != "classification":
        raise ValueError(f"task must be 'classification' or 'regression', got {task!r}")
    classes, codes = np.unique(y, return_inverse=True)
    if np.unique(codes[train_scans]).size < 2:
        raise ValueError(
            f"the training part holds a single class ({classes[codes[train_scans][0]]!r}); "
            "cannot fine-tune a classifier"
        )
    return codes.astype(np.int64), classes, len(classes)


@dataclass
class FinetuneRun:
    """The best-epoch model of a fine-tuning run, an engine to predict with it, and its validation history."""

    model: FinetuneModel
    engine: FinetuneEngine
    task: Task
    classes: np.ndarray | None
    best_epoch: int
    val_scores: dict[int, float]
    metrics: dict[str, Any]
    checkpoint: str | None
    """The checkpoint's path in the storage filesystem; None when the run used a temporary storage path."""


def _trainer(config: dict[str, Any], num_workers: int, use_gpu: bool, storage_path: str, name: str) -> Any:
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    from brainjepa_platform.storage import resolve, run_filesystem

    root = resolve(storage_path)
    run_config = ray.train.RunConfig(
        name=name,
        storage_path=root.path,
        storage_filesystem=run_filesystem(root),
        checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),
    )
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=config,
        run_config=run_config,
        scaling_config=ray.train.ScalingConfig(num_workers=num_workers, use_gpu=use_gpu),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
    )


def _load_run(
    bundle: EncoderBundle, state: dict[str, Any], cfg: FinetuneConfig, task: Task, n_outputs: int
) -> tuple[FinetuneModel, FinetuneEngine]:
    """The best-epoch weights in a CPU model, with an engine (target scaling restored) to predict."""
    model = FinetuneModel(copy.deepcopy(bundle.encoder).cpu(), n_outputs)
    model.load_state_dict(state["model"])
    engine = FinetuneEngine(model, cfg, max(1, int(state["step"])), task, n_outputs)
    engine.target_mean, engine.target_std = state["target_mean"].clone(), state["target_std"].clone()
    return model.eval(), engine


def finetune(
    bundle: EncoderBundle,
    windows: np.ndarray,
    scan_index: np.ndarray,
    y: Any,
    task: Task,
    split: SplitIndices,
    cfg: FinetuneConfig,
    *,
    seed: int = 0,
    num_workers: int = 1,
    use_gpu: bool = False,
    storage_path: str | None = None,
    name: str | None = None,
) -> FinetuneRun:
    """Fine-tune a copy of ``bundle.encoder`` on the training scans' windows; keep the best validation epoch.

    ``seed`` replaces ``cfg.seed`` (head initialisation and data order). ``storage_path`` (local or
    s3://; shared storage on a multi-node cluster) keeps the run; None uses a temporary local folder.
    """
    import ray

    from brainjepa_platform.cluster.connect import init_ray

    windows, scan_index, y = np.asarray(windows, np.float32), np.asarray(scan_index, np.int64), np.asarray(y)
    _check_inputs(bundle, windows, scan_index, y.shape[0])
    targets, classes, n_outputs = _targets(y, task, split.train)
    train, val, _ = (_part(scan_index, scans, part) for part, scans in split.parts().items())
    cfg = dataclasses.replace(cfg, seed=seed)
    init_ray()
    data = {
        "train_x": windows[train.windows],
        "train_t": targets[scan_index[train.windows]],
        "val_x": windows[val.windows],
        "val_rows": val.rows,
        "val_t": targets[val.scans],
    }
    config = {
        "cfg": cfg,
        "task": task,
        "n_outputs": n_outputs,
        "n_train": int(train.windows.size),
        "data": ray.put(data),
        "encoder": ray.put(copy.deepcopy(bundle.encoder).cpu()),
    }
    name = name or f"finetune-{task}-s{seed}-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="brainjepa-finetune-") if storage_path is None else nullcontext() as tmp:
        result = _trainer(config, num_workers, use_gpu, storage_path or tmp, name).fit()
        if result.error is not None:
            raise result.error
        if result.checkpoint is None:
            raise RuntimeError(f"fine-tuning run {name} finished without a checkpoint")
        with result.checkpoint.as_directory() as d:
            state = read_local_checkpoint(Path(d))
    model, engine = _load_run(bundle, state, cfg, task, n_outputs)
    return FinetuneRun(
        model,
        engine,
        task,
        classes,
        int(state["best_epoch"]),
        dict(state["val_scores"]),
        dict(result.metrics),
        None if storage_path is None else result.checkpoint.path,
    )


def evaluate_run(
    run: FinetuneRun, windows: np.ndarray, scan_index: np.ndarray, y: Any, split: SplitIndices
) -> ProbeResult:
    """Test metrics of a fine-tuned model: window outputs averaged per test scan, scored with eval_metrics."""
    from brainjepa_platform.evaluate.metrics import classification_metrics, regression_metrics
    from brainjepa_platform.evaluate.probe import ProbeResult

    y, scan_index = np.asarray(y), np.asarray(scan_index, dtype=np.int64)
    test = _part(scan_index, split.test, "test")
    outputs = scan_mean(
        window_outputs(run.engine, np.asarray(windows, np.float32)[test.windows]), test.rows, test.scans.size
    )
    y_true = y[test.scans]
    if run.task == "classification":
        y_pred = run.classes[outputs.argmax(axis=1)]
        metrics = classification_metrics(y_true, y_pred, outputs, classes=run.classes)
        return ProbeResult(
            "classification",
            metrics,
            "epochs",
            run.best_epoch,
            run.val_scores,
            y_true,
            y_pred,
            outputs,
            run.classes,
            split.sizes(),
        )
    y_true = y_true.astype(np.float64)
    return ProbeResult(
        "regression",
        regression_metrics(y_true, outputs),
        "epochs",
        run.best_epoch,
        run.val_scores,
        y_true,
        outputs,
        sizes=split.sizes(),
    )


def finetune_probe(
    bundle: EncoderBundle,
    windows: np.ndarray,
    scan_index: np.ndarray,
    y: Any,
    task: Task,
    split: SplitIndices,
    cfg: FinetuneConfig,
    *,
    seed: int = 0,
    num_workers: int = 1,
    use_gpu: bool = False,
    storage_path: str | None = None,
) -> ProbeResult:
    """Fine-tune (see :func:`finetune`) and score the test scans; ``param_value`` is the best epoch."""
    run = finetune(
        bundle,
        windows,
        scan_index,
        y,
        task,
        split,
        cfg,
        seed=seed,
        num_workers=num_workers,
        use_gpu=use_gpu,
        storage_path=storage_path,
    )
    return evaluate_run(run, windows, scan_index, y, split)


def compare_finetune(
    bundles: Mapping[str, EncoderBundle],
    windows: np.ndarray,
    scan_index: np.ndarray,
    subjects: Sequence[str],
    y: Any,
    task: Task,
    seeds: Sequence[int],
    fractions: Sequence[float] = (0.6, 0.2, 0.2),
    cfg: FinetuneConfig | None = None,
    split_column: Sequence[str] | None = None,
    **kw: Any,
) -> ComparisonResult:
    """Per seed one subject split (as ``compare_features`` makes it), every bundle fine-tuned on it.

    ``kw`` goes to :func:`finetune_probe` (``num_workers``, ``use_gpu``, ``storage_path``).
    """
    from brainjepa_platform.evaluate.probe import ComparisonResult
    from brainjepa_platform.evaluate.splits import subject_split

    if not bundles or not seeds:
        raise ValueError("compare_finetune needs at least one bundle and one seed")
    y = np.asarray(y)
    if len(subjects) != y.shape[0]:
        raise ValueError(f"{len(subjects)} subjects for {y.shape[0]} targets: give one subject per scan")
    cfg = cfg or FinetuneConfig()
    labels = y if task == "classification" else None
    results: dict[str, list[ProbeResult]] = {name: [] for name in bundles}
    for seed in seeds:
        split = subject_split(subjects, seed, fractions, split_column, labels=labels)
        for name, bundle in bundles.items():
            results[name].append(finetune_probe(bundle, windows, scan_index, y, task, split, cfg, seed=seed, **kw))
    return ComparisonResult(task, [int(s) for s in seeds], tuple(float(f) for f in fractions), results)


__all__ = [
    "FinetuneRun",
    "compare_finetune",
    "epoch_batches",
    "evaluate_run",
    "finetune",
    "finetune_probe",
    "scan_mean",
    "train_loop_per_worker",
    "val_score",
    "window_outputs",
]
