"""Pretraining-step benchmark: samples/s and MFU (achieved matmul FLOP/s over the same run's matmul peak).

    python benchmarks/pretrain_step.py --models small --batches 2 4
    python benchmarks/pretrain_step.py --models base --batches 16 --device cuda --dtype bf16

Each row is one `brainjepa bench step` measurement; the ratio is measured within the run, so it
holds on a shared, noisy machine where absolute timings do not.
"""

from __future__ import annotations

import argparse

import torch

from brainjepa.benchmark import benchmark_step
from brainjepa.model import ModelConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["small"])
    parser.add_argument("--batches", nargs="+", type=int, default=[2])
    parser.add_argument("--rois", type=int, default=450)
    parser.add_argument("--frames", type=int, default=160)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bf16"])
    args = parser.parse_args()
    print(f"{'model':<6} {'batch':>5} {'samples/s':>10} {'step TFLOP':>10} {'GFLOP/s':>9} {'peak':>8} {'MFU':>5}")
    for model in args.models:
        for batch in args.batches:
            cfg = ModelConfig(size=model, n_rois=args.rois, frames=args.frames)
            r = benchmark_step(cfg, batch=batch, steps=args.steps, device=args.device, dtype=args.dtype)
            print(
                f"{model:<6} {batch:>5} {r.samples_per_s:>10.3f} {r.step_tflop:>10.3f} "
                f"{r.achieved_gflops:>9.1f} {r.matmul_peak_gflops:>8.1f} {r.mfu:>5.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
