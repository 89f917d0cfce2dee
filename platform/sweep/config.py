"""Typed config of a Ray Tune sweep (``configs/sweep/*.yaml`` + ``key=value`` overrides).

A sweep starts every trial from one pretraining config: the YAML file named by ``pretrain_config``
(relative to the sweep file's folder, like ``extends``; relative to the working directory when given
as a command-line override) overlaid with the sweep file's ``pretrain:`` mapping. Overrides of
PretrainConfig keys may leave out the ``pretrain.`` prefix (``data.dataset=URI``). ``space`` maps dotted
:class:`PretrainConfig` keys to a list of ``values`` or a ``low``/``high`` range.
"""

from __future__ import annotations

import copy
import difflib
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import yaml

from brainjepa.config import (
    ConfigError,
    apply_overrides,
    deep_merge,
    flatten,
    from_dict,
    read_yaml_with_extends,
    set_dotted,
    to_dict,
)
from brainjepa_platform.errors import user_error_message
from brainjepa_platform.evaluate.metrics import CLASSIFICATION_METRICS, REGRESSION_METRICS
from brainjepa_platform.train.config import PretrainConfig

SearchKind = Literal["grid", "random", "bayes"]
PRETRAIN_SECTIONS = tuple(f.name for f in fields(PretrainConfig))


@dataclass
class ParamSpec:
    """One swept key: discrete ``values`` (grid: each one; random/bayes: a choice) or a range."""

    values: list[Any] | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    """Sample the range on a log scale (learning rates)."""
    integer: bool = False
    """Integers from ``low`` to ``high`` inclusive."""

    def __post_init__(self) -> None:
        has_range = self.low is not None or self.high is not None
        if (self.values is None) == (not has_range):
            raise ConfigError("give either values: [...] or low/high, not both or neither")
        if self.values is not None and not self.values:
            raise ConfigError("values is empty")
        if self.values is not None:
            self.values = [_number(v) for v in self.values]
        if has_range:
            if self.low is None or self.high is None or not self.low < self.high:
                raise ConfigError(f"a range needs low < high, got low={self.low} high={self.high}")
            if self.log and self.low <= 0:
                raise ConfigError(f"a log range needs low > 0, got {self.low}")

    @property
    def is_range(self) -> bool:
        return self.values is None

    def candidates(self) -> list[Any]:
        """Values to validate the key with: every value, or both ends of the range."""
        if self.values is not None:
            return list(self.values)
        return [int(self.low), int(self.high)] if self.integer else [self.low, self.high]


FINGERPRINT_METRICS = ("identification", "i_diff")
"""``kind: fingerprint`` metrics: nearest-neighbour identification accuracy, differential identifiability."""


@dataclass
class ObjectiveConfig:
    """The trial objective, scored on the frozen target encoder's scan embeddings of the validation subjects:
    a linear probe of a phenotype (``kind: probe``) or subject fingerprinting across sessions (``fingerprint``)."""

    kind: Literal["probe", "fingerprint"] = "probe"
    """probe: a phenotype from the features; fingerprint: each validation scan's nearest neighbour (by
    correlation) among the other sessions' scans is its own subject's (needs several sessions per subject)."""
    target: str = "coupling"
    """Phenotype column of the dataset (the synthetic cohort has age, sex and coupling); probe only."""
    metric: str = "pearson_r"
    """probe: pearson_r, r2, mse, mae (regression); balanced_accuracy, accuracy, f1, auroc.
    fingerprint: identification (accuracy) or i_diff (differential identifiability)."""
    mode: Literal["max", "min"] = "max"
    task: Literal["auto", "classification", "regression"] = "auto"
    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)
    """Subject-level train/validation/test shares; the objective is scored on validation only."""
    seed: int = 0
    batch_size: int = 32
    """Windows per encoder forward pass when embedding the dataset."""
    features: Literal["pooled", "token_fc"] = "pooled"
    """fingerprint only: ``pooled`` (the mean-pooled embeddings) or ``token_fc`` (each scan's ROI x ROI
    correlation of its time-centred tokens: the read-out that pretraining moves in docs/learning.md)."""
    centring: Literal["none", "train"] = "none"
    """fingerprint only: ``train`` subtracts the train subjects' mean feature vector before matching (what
    every subject shares; inductive: nothing of the scored scans is used)."""

    def __post_init__(self) -> None:
        if self.features not in ("pooled", "token_fc") or self.centring not in ("none", "train"):
            raise ConfigError(
                f"objective.features={self.features!r}, objective.centring={self.centring!r}: expected features "
                "pooled or token_fc, centring none or train"
            )
        if self.kind == "probe" and (self.features, self.centring) != ("pooled", "none"):
            raise ConfigError(
                f"objective.features={self.features!r}, objective.centring={self.centring!r} apply to "
                "objective.kind=fingerprint; a probe uses the pooled embeddings (features: pooled, centring: none)"
            )
        if self.kind == "fingerprint":
            allowed = list(FINGERPRINT_METRICS)
        else:
            allowed = sorted(set(REGRESSION_METRICS) | set(CLASSIFICATION_METRICS))
        if self.metric not in allowed:
            raise ConfigError(
                f"objective.metric={self.metric!r} with objective.kind={self.kind}: expected one of {allowed}"
            )
        if self.kind == "fingerprint" and self.mode != "max":
            raise ConfigError(
                f"objective.mode={self.mode!r}: fingerprint metrics {list(FINGERPRINT_METRICS)} are higher-is-better; "
                "expected max"
            )


@dataclass
class SchedulerConfig:
    """Trial scheduler: ``fifo`` runs every trial to the end; ``asha`` stops weak trials early on a
    metric that the train loop reports at each checkpoint (``val_loss``)."""

    kind: Literal["fifo", "asha"] = "fifo"
    metric: str = "val_loss"
    mode: Literal["min", "max"] = "min"
    grace_period: int = 0
    """Steps a trial runs before it can be stopped; 0: one checkpoint interval."""
    reduction_factor: float = 2.0


@dataclass
class SweepConfig:
    """A Ray Tune sweep over pretraining settings, tracked in MLflow."""

    name: str = "brainjepa-sweep"
    """Sweep name: rerunning with the same name and storage resumes the sweep."""
    storage_path: str = "sweeps"
    """Tune state, trial runs and results: a path, file:// or s3:// URI (``<storage_path>/<name>``)."""
    pretrain_config: str = ""
    """Base PretrainConfig YAML of every trial (empty: the built-in defaults)."""
    pretrain: dict[str, Any] = field(default_factory=dict)
    """The base config, merged: the file above overlaid with this section of the sweep file."""
    space: dict[str, Any] = field(default_factory=dict)
    """Dotted PretrainConfig key -> ParamSpec (``values`` or ``low``/``high``)."""
    search: SearchKind = "grid"
    """grid: every combination of values; random: sample; bayes: Tune's Optuna integration (needs optuna)."""
    num_samples: int = 1
    """grid: repeats of the grid; random/bayes: number of trials."""
    max_concurrent_trials: int = 1
    trial_resources: dict[str, float] = field(default_factory=lambda: {"CPU": 0.01})
    """Resources of the trial process itself (it only drives a TorchTrainer, whose workers take
    train.cpus_per_worker each); Tune needs a non-zero request."""
    seed: int = 0
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    best_alias: str = "best-sweep"
    """Alias of the registered model version holding the best trial's encoder."""
    register_best: bool = True
    verbose: int = 1
    """Tune's console output (0: silent, 1: status, 2: every result)."""

    def __post_init__(self) -> None:
        if not self.space:
            raise ConfigError("space is empty: give at least one dotted key, e.g. optim.lr: {values: [1e-3, 3e-3]}")
        self.space = {str(k): v if isinstance(v, ParamSpec) else _spec(str(k), v) for k, v in self.space.items()}
        if self.search == "grid":
            ranged = sorted(k for k, v in self.space.items() if v.is_range)
            if ranged:
                raise ConfigError(f"search=grid needs values for every key; {ranged} give a range (use search=random)")
        if self.num_samples < 1 or self.max_concurrent_trials < 0:
            raise ConfigError("num_samples must be >= 1 and max_concurrent_trials >= 0")
        if not any(float(v) > 0 for v in self.trial_resources.values()):
            raise ConfigError(f"trial_resources={self.trial_resources}: Tune needs some resource, e.g. CPU: 0.01")

    def base_pretrain(self) -> PretrainConfig:
        """The resolved base config of every trial."""
        return pretrain_from(self.pretrain, {})

    def expected_trials(self) -> int:
        """How many trials the search makes in all."""
        if self.search != "grid":
            return self.num_samples
        total = self.num_samples
        for spec in self.space.values():
            total *= len(spec.values or [])
        return total


def _number(value: Any) -> Any:
    """YAML reads ``1e-3`` (no dot) as text: such values become numbers."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _spec(key: str, raw: Any) -> ParamSpec:
    if isinstance(raw, list):  # shorthand: a plain list of values
        raw = {"values": raw}
    if not isinstance(raw, dict):
        raise ConfigError(f"space.{key}: expected values: [...] or low/high, got {raw!r}")
    try:
        return from_dict(ParamSpec, raw, f"space.{key}")
    except ConfigError as exc:
        raise ConfigError(f"space.{key}: {exc}") from None


def tune_value(value: Any) -> Any:
    """How a value travels through Tune: lists (mask ranges) as their JSON text, which the config
    loader parses back (Optuna only takes scalars as choices)."""
    return json.dumps(value) if isinstance(value, (list, tuple)) else value


def pretrain_from(base: dict[str, Any], params: dict[str, Any]) -> PretrainConfig:
    """``base`` (a PretrainConfig mapping) with the dotted ``params`` set, resolved and validated."""
    data = copy.deepcopy(base)
    for key, value in params.items():
        set_dotted(data, key, value)
    try:
        return from_dict(PretrainConfig, data)
    except (ConfigError, ValueError) as exc:
        shown = ", ".join(f"{k}={v}" for k, v in params.items())
        raise ConfigError(f"pretrain config{' with ' + shown if shown else ''}: {exc}") from None


def check_space(cfg: SweepConfig) -> None:
    """Every swept key must be a PretrainConfig key and every candidate value valid on its own."""
    known = set(flatten(to_dict(cfg.base_pretrain())))
    for key, spec in cfg.space.items():
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=3)
            hint = f"; did you mean {close}?" if close else ""
            raise ConfigError(f"space.{key} is not a PretrainConfig key{hint}")
        for value in spec.candidates():
            pretrain_from(cfg.pretrain, {key: tune_value(value)})


def _base_file(ref: str, sweep_file: Path | None, from_cli: bool) -> Path:
    path = Path(ref).expanduser()
    if not path.is_absolute() and sweep_file is not None and not from_cli:
        path = sweep_file.parent / path
    if not path.is_file():
        raise ConfigError(f"pretrain_config {ref}: no such file ({path})")
    return path


def pretrain_override(item: str) -> str:
    """``data.dataset=URI`` (a PretrainConfig key) -> ``pretrain.data.dataset=URI``; sweep keys unchanged."""
    head = item.split("=", 1)[0].strip().split(".", 1)[0]
    return f"pretrain.{item.strip()}" if head in PRETRAIN_SECTIONS and "=" in item else item


def load_sweep_config(path: str | Path | None, overrides: list[str] | None = None) -> SweepConfig:
    """Sweep YAML (``extends`` allowed) + ``key=value`` overrides; the base pretraining file merged in."""
    overrides = [pretrain_override(o) for o in overrides or []]
    sweep_file = Path(path) if path is not None else None
    data = read_yaml_with_extends(sweep_file) if sweep_file is not None else {}
    for item in overrides:  # one at a time, so that malformed YAML is reported with its key
        try:
            data = apply_overrides(data, [item])
        except yaml.YAMLError as exc:
            key = item.split("=", 1)[0].strip().removeprefix("pretrain.")
            raise ConfigError(f"{key}=...: {user_error_message(exc)}") from None
    ref = str(data.get("pretrain_config") or "")
    if ref:
        from_cli = any(o.split("=", 1)[0].strip() == "pretrain_config" for o in overrides)
        base = read_yaml_with_extends(_base_file(ref, sweep_file, from_cli))
        data["pretrain"] = deep_merge(base, data.get("pretrain") or {})
    try:
        cfg = from_dict(SweepConfig, data)
    except ConfigError as exc:
        raise ConfigError(f"{sweep_file or 'sweep config'}: {exc}") from None
    check_space(cfg)
    return cfg
