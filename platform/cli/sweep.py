"""``brainjepa sweep``: a Ray Tune sweep over pretraining settings from a YAML config + overrides."""

from __future__ import annotations

import argparse

from brainjepa_platform.errors import EXIT_INTERRUPTED


def cmd_sweep(args: argparse.Namespace) -> int:
    from brainjepa_platform.storage import resolve
    from brainjepa_platform.sweep.config import load_sweep_config
    from brainjepa_platform.sweep.driver import describe, run_sweep

    cfg = load_sweep_config(args.config, args.overrides)
    args.on_interrupt = (f"finished trials are kept in {resolve(cfg.storage_path).child(cfg.name).uri}; "
                         "the same command resumes the sweep")
    result = run_sweep(cfg)
    print(describe(result, cfg.objective), end="")
    return 0 if result.completed else EXIT_INTERRUPTED  # Tune stopped on Ctrl-C


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="configs/sweep/masking.yaml", help="YAML config (SweepConfig)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides, e.g. pretrain.data.dataset=s3://bucket/cohort search=random "
                        "num_samples=8 scheduler.kind=asha objective.target=age")
    p.set_defaults(func=cmd_sweep)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="Ray Tune sweep over pretraining settings (masking ratios, gradients, lr), "
                                     "scored by a linear probe, tracked in MLflow")
    add_arguments(p)
