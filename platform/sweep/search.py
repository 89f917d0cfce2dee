"""The search of a sweep: Tune search domains from the config's space, the search algorithm (grid, random or
Optuna TPE) and the ASHA scheduler over the trials' train reports."""

from __future__ import annotations

import importlib.util
from typing import Any

from brainjepa_platform.sweep.config import ParamSpec, SweepConfig, tune_value
from brainjepa_platform.train.config import PretrainConfig

OBJECTIVE = "objective"
"""The metric every trial reports to Tune: the probe score of its encoder (NaN until the final report)."""


def domain(kind: str, spec: ParamSpec) -> Any:
    """A Tune search domain for one key."""
    from ray import tune

    if spec.values is not None:
        values = [tune_value(v) for v in spec.values]
        return tune.grid_search(values) if kind == "grid" else tune.choice(values)
    if spec.integer:
        low, high = int(spec.low), int(spec.high) + 1  # Tune's integer upper bounds are exclusive
        return tune.lograndint(low, high) if spec.log else tune.randint(low, high)
    return tune.loguniform(spec.low, spec.high) if spec.log else tune.uniform(spec.low, spec.high)


def search_space(cfg: SweepConfig) -> dict[str, Any]:
    return {key: domain(cfg.search, spec) for key, spec in cfg.space.items()}


def search_algorithm(cfg: SweepConfig) -> Any:
    """Tune's variant generator (grid and random search), or Optuna (TPE) for ``search=bayes``."""
    if cfg.search == "bayes":
        if importlib.util.find_spec("optuna") is None:
            raise ValueError(
                "search=bayes uses Tune's Optuna integration, but optuna is not installed: "
                "pip install optuna, or use search=random"
            )
        from ray.tune.search.optuna import OptunaSearch

        return OptunaSearch(metric=OBJECTIVE, mode=cfg.objective.mode, seed=cfg.seed)
    from ray.tune.search.basic_variant import BasicVariantGenerator

    return BasicVariantGenerator(random_state=cfg.seed, max_concurrent=cfg.max_concurrent_trials)


def make_scheduler(cfg: SweepConfig, base: PretrainConfig) -> Any:
    """ASHA on a metric of the train reports (one per checkpoint; ``time_attr`` = optimizer step), or None.

    Its rungs end at the last checkpoint before the final step and ``stop_last_trials`` is off, so a
    trial that trains to the end is never stopped at its last report, before its objective is scored.
    """
    if cfg.scheduler.kind == "fifo":
        return None
    from ray.tune.schedulers import ASHAScheduler

    s, every = cfg.scheduler, base.train.checkpoint_every
    grace, last_rung = s.grace_period or every, base.train.steps - every
    if grace > last_rung:
        raise ValueError(
            f"scheduler.grace_period={grace} leaves ASHA no checkpoint to stop at before the end: it "
            f"must be <= train.steps - train.checkpoint_every = {last_rung} (or use scheduler.kind=fifo)"
        )
    return ASHAScheduler(
        time_attr="step",
        metric=s.metric,
        mode=s.mode,
        max_t=last_rung,
        grace_period=grace,
        reduction_factor=s.reduction_factor,
        stop_last_trials=False,
    )
