"""``brainjepa sweep``: a Ray Tune sweep over pretraining settings from a YAML config + overrides."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from brainjepa_platform.cli.options import add_command
from brainjepa_platform.errors import EXIT_INTERRUPTED

if TYPE_CHECKING:
    from brainjepa_platform.sweep.config import SweepConfig


def cmd_sweep(cfg: SweepConfig, args: argparse.Namespace) -> int:
    from brainjepa_platform.storage import resolve
    from brainjepa_platform.sweep.driver import run_sweep
    from brainjepa_platform.sweep.results import describe

    args.on_interrupt = (
        f"finished trials are kept in {resolve(cfg.storage_path).child(cfg.name).uri}; "
        "the same command resumes the sweep"
    )
    result = run_sweep(cfg)
    print(describe(result, cfg.objective), end="")
    return 0 if result.completed else EXIT_INTERRUPTED  # Tune stopped on Ctrl-C


def load(config: Any, overrides: list[str], flags: dict[str, Any]) -> SweepConfig:
    """The sweep's config (PretrainConfig keys may leave out ``pretrain.``; the sweep has no flags)."""
    from brainjepa_platform.sweep.config import load_sweep_config

    return load_sweep_config(config, overrides)


def register(sub: argparse._SubParsersAction) -> None:
    add_command(
        sub,
        "sweep",
        "brainjepa_platform.sweep.config:SweepConfig",
        cmd_sweep,
        load=load,
        help="Ray Tune sweep over pretraining settings (masking ratios, gradients, lr), scored by a linear "
        "probe or subject fingerprinting, tracked in MLflow",
        config_default="sweep/masking",
        overrides_help="config overrides, e.g. pretrain.data.dataset=s3://bucket/cohort search=random "
        "num_samples=8 scheduler.kind=asha objective.target=age",
    )
