"""Timing of one full pretraining step against the device's matmul peak, measured in the same run."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from brainjepa.flops import pretrain_step_flops
from brainjepa.jepa import BrainJEPA, PretrainEngine
from brainjepa.masks import MaskCollator, MaskConfig
from brainjepa.model import ModelConfig
from brainjepa.schedules import OptimConfig


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak_gflops(device: str | torch.device, dtype: str, size: int | None = None, repeats: int = 5) -> float:
    """Best-of-``repeats`` GFLOP/s of a large square matmul of ``dtype`` on ``device``."""
    device = torch.device(device)
    size = size or (8192 if device.type == "cuda" else 2048)
    tdtype = torch.bfloat16 if dtype == "bf16" else torch.float32
    a = torch.randn(size, size, device=device, dtype=tdtype)
    b = torch.randn(size, size, device=device, dtype=tdtype)
    for _ in range(2):
        a @ b
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * size**3 / best / 1e9


@dataclass
class StepBenchmark:
    """One pretraining step's throughput and its fraction of the matmul peak."""

    model: str
    device: str
    dtype: str
    batch: int
    steps: int
    step_seconds: float
    samples_per_s: float
    step_tflop: float
    achieved_gflops: float
    matmul_peak_gflops: float
    mfu: float
    context_tokens: float
    target_tokens: float


def benchmark_step(
    model_cfg: ModelConfig,
    batch: int = 2,
    steps: int = 3,
    warmup: int = 1,
    device: str = "cpu",
    dtype: str = "float32",
    seed: int = 0,
    masks: MaskConfig | None = None,
    progress: bool = True,
    peak_size: int | None = None,
) -> StepBenchmark:
    """Time ``steps`` full steps (target forward, context forward, predictor, backward, AdamW, EMA)
    after ``warmup`` untimed ones; FLOPs are counted from each step's actual mask sizes.

    ``progress``: a bar on stderr (stdout stays free for ``--json``), one tick per step, the two matmul
    peak measurements shown as they run. ``peak_size``: side of the peak's square matmul (default by device).
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    gradients = torch.from_numpy(rng.standard_normal((model_cfg.n_rois, model_cfg.n_gradients))).float()
    model = BrainJEPA(model_cfg, gradients if model_cfg.positional == "gradient" else None)
    engine = PretrainEngine(model, OptimConfig(), total_steps=1000, device=device, dtype=dtype, monitor_every=0)
    collator = MaskCollator(masks or MaskConfig(), model_cfg.n_rois, model_cfg.n_time_patches, seed=seed)
    series = torch.from_numpy(rng.standard_normal((batch, model_cfg.n_rois, model_cfg.frames)).astype(np.float32)).to(
        device
    )
    dev = torch.device(device)

    bar = tqdm(
        total=warmup + steps,
        desc=f"bench step {model_cfg.size}",
        unit="step",
        file=sys.stderr,
        disable=not progress,
        dynamic_ncols=True,
    )

    def one_step() -> tuple[float, float, int, int]:
        m = collator.next_masks(batch)
        b = m.to_torch()
        b["series"] = series
        _sync(dev)
        t0 = time.perf_counter()
        engine.train_step([b])
        _sync(dev)
        flops = pretrain_step_flops(model_cfg, batch, m.context.shape[1], m.target.shape[1]).total
        seconds = time.perf_counter() - t0
        bar.set_postfix_str(f"{seconds:.2f}s/step")
        bar.update()
        return seconds, flops, m.context.shape[1], m.target.shape[1]

    def peak() -> float:
        bar.set_postfix_str("matmul peak")
        return matmul_peak_gflops(dev, dtype, size=peak_size)

    with bar:
        for _ in range(warmup):
            one_step()
        # the peak is taken before and after the timed steps (best of both): on a shared machine a
        # single reading may land in a slow moment and flatter the ratio
        peak_before = peak()
        timings = [one_step() for _ in range(steps)]
        peak_gflops = max(peak_before, peak())
    seconds = sum(t[0] for t in timings)
    flops = sum(t[1] for t in timings)
    achieved = flops / seconds / 1e9
    return StepBenchmark(
        model=model_cfg.size,
        device=str(dev),
        dtype=dtype,
        batch=batch,
        steps=steps,
        step_seconds=seconds / steps,
        samples_per_s=batch * steps / seconds,
        step_tflop=flops / steps / 1e12,
        achieved_gflops=achieved,
        matmul_peak_gflops=peak_gflops,
        mfu=achieved / peak_gflops,
        context_tokens=float(np.mean([t[2] for t in timings])),
        target_tokens=float(np.mean([t[3] for t in timings])),
    )
