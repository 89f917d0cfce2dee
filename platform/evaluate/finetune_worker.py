"""The Ray Train worker of a fine-tuning run (:mod:`brainjepa_platform.evaluate.finetune` is its driver):
per-scan bookkeeping, seeded epoch batches shared by all ranks, training, rank-0 validation and the
best epoch's checkpoint. Workers import only this module, torch and the model library."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from brainjepa.heads import FinetuneConfig, FinetuneEngine, FinetuneModel
from brainjepa_platform.train.checkpoints import write_checkpoint_dir

CHECKPOINT_KIND = "finetune"


# --- per-scan bookkeeping --------------------------------------------------------------------------
def scan_mean(values: np.ndarray, rows: np.ndarray, n_scans: int) -> np.ndarray:
    """Average window outputs per scan: ``values[j]`` belongs to scan ``rows[j]`` (0..n_scans-1)."""
    values = np.asarray(values, dtype=np.float64)
    sums = np.zeros((n_scans, *values.shape[1:]))
    np.add.at(sums, rows, values)
    counts = np.bincount(rows, minlength=n_scans).reshape(-1, *([1] * (values.ndim - 1)))
    return sums / counts


# --- validation ------------------------------------------------------------------------------------
def window_outputs(engine: FinetuneEngine, windows: Any, batch_size: int = 64) -> np.ndarray:
    """Class probabilities (n, k) for classification, predictions in original units (n,) for regression."""
    if engine.task == "classification":
        return engine.predict_proba(windows, batch_size)
    return engine.predict(windows, batch_size)


def val_score(task: str, scan_outputs: np.ndarray, scan_targets: np.ndarray) -> float:
    """Balanced accuracy (classification, higher is better) or MSE (regression, lower is better)."""
    if task == "classification":
        from brainjepa_platform.evaluate.metrics import balanced_accuracy

        return balanced_accuracy(scan_targets, scan_outputs.argmax(axis=1))
    return float(np.mean((scan_outputs - scan_targets) ** 2))


def _improves(task: str, score: float, best: float | None) -> bool:
    """Strictly better than ``best`` (ties keep the earlier, shorter-trained epoch)."""
    if best is None:
        return True
    return score > best if task == "classification" else score < best


# --- the Ray Train worker --------------------------------------------------------------------------
def epoch_batches(n: int, batch_size: int, seed: int, epoch: int, rank: int, world: int) -> list[np.ndarray]:
    """This rank's batches of one epoch: a shared seeded permutation, padded to a multiple of ``world``
    by repeating its head, dealt round-robin; every rank gets ``ceil(ceil(n / world) / batch_size)``."""
    order = np.random.default_rng([seed, epoch]).permutation(n)
    padded = np.concatenate([order, order[: (-n) % world]])
    mine = padded[rank::world]
    return [mine[i : i + batch_size] for i in range(0, mine.size, batch_size)]


def _build_engine(config: dict[str, Any], world: int) -> FinetuneEngine:
    import ray
    import ray.train.torch

    cfg: FinetuneConfig = config["cfg"]
    torch.manual_seed(cfg.seed)
    model = FinetuneModel(ray.get(config["encoder"]), config["n_outputs"])
    device = ray.train.torch.get_device()
    model.to(device)
    module = ray.train.torch.prepare_model(model, move_to_device=False)
    steps = cfg.total_steps(config["n_train"], world)
    return FinetuneEngine(model, cfg, steps, config["task"], config["n_outputs"], train_module=module, device=device)


def _train_epoch(engine: FinetuneEngine, x: torch.Tensor, t: torch.Tensor, epoch: int, rank: int, world: int) -> float:
    """One epoch over this rank's batches; the mean training loss."""
    batches = epoch_batches(x.shape[0], engine.cfg.batch_size, engine.cfg.seed, epoch, rank, world)
    return float(np.mean([engine.train_step(x[b], t[b]) for b in batches]))


def _validate(engine: FinetuneEngine, data: dict[str, np.ndarray], best: dict[str, Any], epoch: int) -> None:
    """Rank 0: score the validation scans; keep a CPU copy of the weights when the score improves."""
    outputs = scan_mean(window_outputs(engine, data["val_x"]), data["val_rows"], data["val_t"].shape[0])
    score = val_score(engine.task, outputs, data["val_t"])
    if _improves(engine.task, score, best["val_scores"].get(best["best_epoch"])):
        best["best_epoch"] = epoch
        best["model"] = {k: v.detach().cpu().clone() for k, v in engine.model.state_dict().items()}
    best["val_scores"][epoch] = score


def _report(engine: FinetuneEngine, metrics: dict[str, float], best: dict[str, Any] | None) -> None:
    """Every rank reports once; rank 0 (``best`` given) attaches the best epoch's weights as the checkpoint."""
    import ray.train

    if best is None:
        ray.train.report(metrics, checkpoint=None)
        return
    state = {
        **best,
        "step": engine.step,
        "task": engine.task,
        "target_mean": engine.target_mean.clone(),
        "target_std": engine.target_std.clone(),
    }
    metrics = {**metrics, "best_epoch": best["best_epoch"], "best_val_score": best["val_scores"][best["best_epoch"]]}
    with tempfile.TemporaryDirectory(prefix="brainjepa-finetune-") as tmp:
        write_checkpoint_dir(Path(tmp), state, {"kind": CHECKPOINT_KIND, **metrics})
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train entry point: fine-tune for ``cfg.epochs``, rank 0 scoring every epoch and keeping the best.

    One report at the end (the validation history travels in the checkpoint), so ranks synchronise
    only through DDP's all-reduce while training.
    """
    import ray
    import ray.train

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    data = {k: np.array(v) for k, v in ray.get(config["data"]).items()}  # writable copies of the store's views
    engine = _build_engine(config, world)
    if engine.task == "regression":
        engine.set_target_scaling(data["train_t"])
    x, t = torch.tensor(data["train_x"]), torch.tensor(data["train_t"])
    best: dict[str, Any] = {"best_epoch": 0, "val_scores": {}, "model": None}
    for epoch in range(1, engine.cfg.epochs + 1):
        loss = _train_epoch(engine, x, t, epoch, rank, world)
        if rank == 0:
            _validate(engine, data, best, epoch)
    _report(engine, {"epochs": engine.cfg.epochs, "train_loss": loss}, best if rank == 0 else None)
