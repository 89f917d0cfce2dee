"""The Ray Train worker: one ``PretrainEngine`` per worker under DDP, fed by the streaming pipeline.

Rank 0 logs metrics to the run's MLflow run (created by the driver) and writes checkpoints; every
rank reports, so Ray Train keeps the latest checkpoint and restores it after a worker failure.
"""

from __future__ import annotations

import itertools
import math
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from brainjepa.config import from_dict
from brainjepa.jepa import BrainJEPA, PretrainEngine, autocast_context, jepa_loss
from brainjepa.monitors import LEARNING_MONITORS
from brainjepa_platform.train.checkpoints import describe, newest_intact, run_location, write_checkpoint_dir
from brainjepa_platform.train.config import PretrainConfig
from brainjepa_platform.train.streaming import MaskingCollate


class MetricsLogger:
    """Rank-0 MLflow metric logging into an existing run (no global active-run state)."""

    def __init__(self, tracking_uri: str, run_id: str, enabled: bool) -> None:
        self.enabled = enabled and bool(run_id)
        if self.enabled:
            from mlflow.tracking import MlflowClient

            self.client, self.run_id = MlflowClient(tracking_uri), run_id

    def log(self, metrics: dict[str, float], step: int) -> None:
        if not self.enabled:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items() if math.isfinite(float(v))]
        self.client.log_batch(self.run_id, metrics=batch)


def step_keys(after_step: int, accumulation_steps: int) -> Iterator[tuple[int, int]]:
    """Mask keys (step, micro-batch) of the micro-batches of every step after ``after_step``."""
    return ((step, micro) for step in itertools.count(after_step + 1) for micro in range(accumulation_steps))


def _collated(shard: Any, cfg: PretrainConfig, rank: int, collate: MaskingCollate) -> Iterator[dict[str, Any]]:
    """Endless stream of collated (unmasked) batches from this worker's shard, epoch after epoch."""
    epoch = 0
    while True:
        produced = 0
        for batch in shard.iter_torch_batches(
            batch_size=cfg.train.batch_size,
            collate_fn=collate,
            drop_last=True,
            local_shuffle_buffer_size=cfg.data.shuffle_buffer or None,
            local_shuffle_seed=cfg.train.seed + epoch,
            prefetch_batches=cfg.data.prefetch_batches,
        ):
            produced += 1
            yield batch
        if produced == 0:
            raise ValueError(
                f"the training split gave worker {rank} no full batch of {cfg.train.batch_size}: the dataset has too "
                "few training scans for batch_size x num_workers; lower train.batch_size or add scans"
            )
        epoch += 1


def batches(shard: Any, cfg: PretrainConfig, rank: int, after_step: int = 0) -> Iterator[dict[str, Any]]:
    """Endless stream of masked training batches for the steps after ``after_step``: the masks of micro-batch
    m of step s are keyed by (seed, rank, s, m), so a resumed run draws the masks the uninterrupted one did."""
    collate = MaskingCollate(cfg.masks, cfg.model, seed=cfg.train.seed, stream=rank)
    keys = step_keys(after_step, cfg.optim.accumulation_steps)
    return collate.masked(
        _collated(shard, cfg, rank, collate), keys, cfg.train.batch_size, ahead=max(1, cfg.data.prefetch_batches)
    )


@torch.no_grad()
def validation_loss(engine: PretrainEngine, val: Any, cfg: PretrainConfig) -> float:
    """Mean JEPA loss of the (unwrapped) student over ``val_batches`` validation batches."""
    if val is None or cfg.train.val_batches <= 0:
        return float("nan")
    collate = MaskingCollate(cfg.masks, cfg.model, seed=cfg.train.seed + 1, stream=0)
    model = engine.model
    model.student.eval()
    losses = []
    collated = itertools.islice(
        val.iter_torch_batches(batch_size=cfg.train.batch_size, collate_fn=collate), cfg.train.val_batches
    )
    for batch in collate.masked(collated, ((i,) for i in itertools.count()), cfg.train.batch_size, ahead=1):
        series = batch["series"].to(engine.device)
        ctx, tgt = batch["context_index"].to(engine.device), batch["target_index"].to(engine.device)
        with autocast_context(engine.device, engine.dtype):
            _, targets = model.targets(series, tgt)
            losses.append(jepa_loss(model.student(series, ctx, tgt)[1].float(), targets.float(), cfg.optim.loss).item())
    model.student.train()
    return float(np.mean(losses)) if losses else float("nan")


def save_checkpoint(engine: PretrainEngine, meta: dict[str, Any], metrics: dict[str, float], rank: int) -> None:
    """Report ``metrics``; rank 0 attaches a checkpoint directory (engine state + metadata, with the report's
    metrics: a rerun of a finished run registers its encoder from them without starting training)."""
    import ray.train

    if rank != 0:
        ray.train.report(metrics, checkpoint=None)
        return
    with tempfile.TemporaryDirectory(prefix="brainjepa-ckpt-") as tmp:
        write_checkpoint_dir(Path(tmp), engine.state_dict(), {**meta, "metrics": metrics})
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))


def restore(engine: PretrainEngine, cfg: PretrainConfig, announce: bool) -> int | None:
    """Load the newest intact checkpoint of this run and return its step (None: nothing to resume).

    Ray Train keeps the run's checkpoints under ``storage_path/name``, so listing that folder finds the
    one Ray Train would hand back as well as newer ones uploaded but not yet registered when the run
    failed; each is verified against its hash, newest first, and a torn one is skipped (said on the
    console by rank 0 when ``announce``).
    """
    run_dir = run_location(cfg.train.storage_path, cfg.train.name)
    selection = newest_intact(run_dir)
    note = describe(selection, run_dir)
    if announce and note:
        print(f"brainjepa pretrain: {note}", file=sys.stderr if selection.skipped else sys.stdout, flush=True)
    if selection.state is None:
        return None
    engine.load_state_dict(selection.state)
    return engine.step


def build_engine(cfg: PretrainConfig, gradients: np.ndarray | None) -> PretrainEngine:
    """Model on this worker's device, student wrapped in DDP by Ray Train."""
    import ray.train.torch

    torch.manual_seed(cfg.train.seed)
    grads = torch.from_numpy(np.asarray(gradients, dtype=np.float32)) if gradients is not None else None
    model = BrainJEPA(cfg.model, grads, cfg.pretext)
    device = ray.train.torch.get_device()
    model.to(device)
    student = ray.train.torch.prepare_model(model.student, move_to_device=False)
    return PretrainEngine(
        model,
        cfg.optim,
        cfg.train.steps,
        device=device,
        dtype=cfg.train.dtype,
        student=student,
        monitor_every=cfg.train.log_every,
    )


def format_duration(seconds: float) -> str:
    """``75`` -> ``1m15s``; ``4000`` -> ``1h06m``; unknown -> ``?``."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class Progress:
    """Rank-0 console progress: step/total, loss, samples/s and ETA, as plain flushed lines (which reach
    the driver's console when Ray forwards worker output). The ETA uses the mean rate since this
    process started training (``first_step``: the step it resumed from, else 0)."""

    def __init__(self, total: int, first_step: int, clock: Any = time.perf_counter) -> None:
        self.total, self.first_step, self.clock = total, first_step, clock
        self.start = clock()

    def line(self, step: int, loss: float, samples_per_s: float) -> str:
        elapsed = self.clock() - self.start
        done = step - self.first_step
        eta = (self.total - step) * elapsed / done if done > 0 and elapsed > 0 else float("nan")
        return (
            f"step {step}/{self.total} ({100 * step / self.total:.0f}%)  loss {loss:.4f}  "
            f"{samples_per_s:.1f} samples/s  ETA {format_duration(eta)}"
        )


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train entry point: ``config`` holds the resolved config dict, gradients and MLflow run id."""
    import ray.train

    cfg = from_dict(PretrainConfig, config["cfg"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    engine = build_engine(cfg, config.get("gradients"))
    resumed_from = restore(engine, cfg, announce=rank == 0)
    logger = MetricsLogger(config.get("tracking_uri", ""), config.get("run_id", ""), enabled=rank == 0)
    if resumed_from is not None:
        logger.log({"resumed_from_step": resumed_from}, step=resumed_from)
    stream = batches(ray.train.get_dataset_shard("train"), cfg, rank, after_step=engine.step)
    samples_per_step = cfg.train.batch_size * cfg.optim.accumulation_steps * world
    progress = Progress(cfg.train.steps, engine.step)
    if rank == 0 and engine.step < cfg.train.steps:
        print(
            f"brainjepa pretrain: steps {engine.step + 1}-{cfg.train.steps} on {world} worker(s), "
            f"{samples_per_step} samples per step; progress every {cfg.train.log_every} steps",
            flush=True,
        )
    val = ray.train.get_dataset_shard("val") if rank == 0 else None
    meta = {"run_id": config.get("run_id", ""), "config": config["cfg"]}
    window_start, window_wait, window_steps = time.perf_counter(), 0.0, 0
    while engine.step < cfg.train.steps:
        t0 = time.perf_counter()
        micro = [next(stream) for _ in range(cfg.optim.accumulation_steps)]
        window_wait += time.perf_counter() - t0
        metrics = engine.train_step(micro)
        window_steps += 1
        step = engine.step
        if rank == 0 and (step % cfg.train.log_every == 0 or step == cfg.train.steps):
            elapsed = time.perf_counter() - window_start
            metrics.update(
                samples_per_s=samples_per_step * window_steps / elapsed, data_wait_fraction=window_wait / elapsed
            )
            logger.log({k: v for k, v in metrics.items() if k != "step"}, step=step)
            print(progress.line(step, metrics["loss"], metrics["samples_per_s"]), flush=True)
            window_start, window_wait, window_steps = time.perf_counter(), 0.0, 0
        if step % cfg.train.checkpoint_every == 0 or step == cfg.train.steps:
            report = {"step": step, "loss": metrics["loss"]}
            if rank == 0:
                report.update({k: metrics[k] for k in LEARNING_MONITORS if k in metrics})
                report["val_loss"] = validation_loss(engine, val, cfg)
                logger.log({"val_loss": report["val_loss"]}, step=step)
                print(
                    f"step {step}/{cfg.train.steps}: checkpoint, validation loss {report['val_loss']:.4f}", flush=True
                )
            save_checkpoint(engine, meta, report, rank)
