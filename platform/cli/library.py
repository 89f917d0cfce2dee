"""``brainjepa masks`` and ``brainjepa bench step``: the model library's own checks and measurements (no Ray,
no data), with the options of :class:`~brainjepa_platform.cli.model_commands.MasksCommand` and
:class:`~brainjepa_platform.cli.commands.BenchStepCommand`."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from brainjepa.config import ConfigError, to_dict
from brainjepa_platform.cli.options import add_command, base_options, shortcut
from brainjepa_platform.tables import format_fields

if TYPE_CHECKING:
    from brainjepa_platform.cli.commands import BenchStepCommand
    from brainjepa_platform.cli.model_commands import MasksCommand

GRID = {
    "rois": "ROIs",
    "frames": "frames per window, a multiple of --patch",
    "patch": "frames per time patch",
}
"""The integer flags of the token grid, shared by both commands: key -> help."""


def cmd_masks(opts: MasksCommand, args: argparse.Namespace) -> int:
    """Draw masks, check their invariants independently and print a summary (and a picture)."""
    import numpy as np

    from brainjepa.masks import MaskCollator, MaskConfig, mask_statistics

    if opts.frames % opts.patch:
        raise ConfigError(f"frames={opts.frames} is not a multiple of patch={opts.patch}")
    cfg = base_options(opts, MaskConfig)
    p = opts.frames // opts.patch
    stats: dict[str, Any] = dict(mask_statistics(cfg, opts.rois, p, opts.batch, opts.samples, seed=opts.seed))
    stats["config"] = to_dict(cfg)
    if opts.plot:
        from brainjepa_platform.plots import plot_masks

        masks = MaskCollator(cfg, opts.rois, p, seed=opts.seed).next_masks(opts.batch)
        stats["plot"] = str(plot_masks(masks, opts.rois, p, opts.plot))
    if opts.json:
        print(json.dumps(stats, indent=2))
    else:
        print(f"Masks on a {opts.rois} ROI x {p} time-patch grid ({opts.samples} samples, seed {opts.seed}):")
        print(format_fields({k: v for k, v in stats.items() if k != "config"}))
    ok = stats["overlap_tokens"] == 0 and stats["samples_missing_region"] == 0
    return 0 if ok and np.isfinite(stats["context_tokens_mean"]) else 1


def cmd_bench_step(opts: BenchStepCommand, args: argparse.Namespace) -> int:
    """Time full pretraining steps and report the fraction of the matmul peak reached."""
    import torch

    from brainjepa.benchmark import benchmark_step
    from brainjepa.model import ModelConfig

    if opts.threads:
        torch.set_num_threads(opts.threads)
    cfg = ModelConfig(
        size=opts.model, n_rois=opts.rois, frames=opts.frames, patch=opts.patch, n_gradients=opts.gradients
    )
    result = benchmark_step(
        cfg,
        batch=opts.batch,
        steps=opts.steps,
        warmup=opts.warmup,
        device=opts.device,
        dtype=opts.dtype,
        seed=opts.seed,
    )
    if opts.json:
        print(json.dumps(asdict(result), indent=2))
    else:
        print(f"Pretraining step, {opts.model} at {opts.rois} ROIs x {opts.frames} frames:")
        print(format_fields(asdict(result)))
    return 0


def int_flags(p: argparse.ArgumentParser, helps: dict[str, str]) -> None:
    """``--key N`` shortcuts for the integer options ``helps`` names (key -> help), in that order."""
    for key, text in helps.items():
        shortcut(p, f"--{key}", key=key, type=int, help=text)


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub,
        "masks",
        "model_commands:MasksCommand",
        cmd_masks,
        help="draw spatiotemporal masks, verify invariants, summarise (and plot)",
        overrides_help="any option, e.g. the mask config's min_context=20 cross_roi_scale=[0.3,0.5] "
        "(see --print-config)",
    )
    int_flags(
        p,
        {
            **GRID,
            "batch": "samples per drawn batch",
            "samples": "samples checked and summarised",
            "seed": "random seed",
        },
    )
    shortcut(p, "--json", key="json", action="store_true", help="print JSON only")
    shortcut(p, "--plot", key="plot", metavar="PNG", help="draw a few samples' masks to this file")

    bench = sub.add_parser("bench", help="benchmarks").add_subparsers(dest="bench", required=True)
    p = add_command(
        bench, "step", "BenchStepCommand", cmd_bench_step, help="time full pretraining steps; report samples/s and MFU"
    )
    shortcut(p, "--model", key="model", choices=["tiny", "small", "base", "large"], help="model size")
    int_flags(
        p,
        {
            **GRID,
            "gradients": "number of gradient components m",
            "batch": "samples per step",
            "steps": "timed steps",
            "warmup": "untimed steps first",
        },
    )
    shortcut(p, "--device", key="device", help="torch device")
    shortcut(p, "--dtype", key="dtype", choices=["float32", "bf16"], help="float32 or bf16 autocast")
    int_flags(p, {"threads": "torch CPU threads; 0: torch's own number", "seed": "random seed"})
    shortcut(p, "--json", key="json", action="store_true", help="print JSON only")
