"""The results of a sweep: one row per trial, the best one, the table (text, CSV), the plot of the objective
against the swept keys, the best trial's config, and all of it logged to the parent MLflow run."""

from __future__ import annotations

import copy
import io
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from brainjepa_platform.storage import Location, write_bytes
from brainjepa_platform.sweep.config import ObjectiveConfig, ParamSpec, SweepConfig
from brainjepa_platform.sweep.search import OBJECTIVE
from brainjepa_platform.tables import format_table as text_table
from brainjepa_platform.train.config import PretrainConfig

BEST_CONFIG = "best_config.yaml"


@dataclass
class TrialRow:
    """One trial in the results table."""

    trial_id: str
    params: dict[str, Any]
    objective: float
    val_loss: float
    status: str
    """done, stopped (early, by the scheduler, or with a non-finite objective) or error."""
    run_id: str = ""
    checkpoint: str = ""


@dataclass
class SweepResult:
    name: str
    path: str
    parent_run_id: str
    completed: bool
    """False when the sweep was interrupted: rerun the same command to resume it."""
    trials: list[TrialRow]
    best: TrialRow | None = None
    model_version: str | None = None
    table: str = ""
    files: dict[str, str] = field(default_factory=dict)


def collect_rows(grid: Any, keys: list[str]) -> list[TrialRow]:
    """Trials of a ResultGrid, in trial order."""
    rows = []
    for result in grid:
        m = result.metrics or {}
        objective = float(m.get(OBJECTIVE, math.nan))
        status = "error" if result.error else ("done" if math.isfinite(objective) else "stopped")
        rows.append(
            TrialRow(
                trial_id=str(m.get("trial_id") or Path(result.path).name),
                params={k: result.config.get(k) for k in keys},
                objective=objective,
                val_loss=float(m.get("val_loss", math.nan)),
                status=status,
                run_id=str(m.get("mlflow_run_id", "")),
                checkpoint=str(m.get("checkpoint_path", "")),
            )
        )
    return sorted(rows, key=lambda r: r.trial_id)


def pick_best(rows: list[TrialRow], mode: str) -> TrialRow | None:
    done = [r for r in rows if r.status == "done"]
    if not done:
        return None
    return max(done, key=lambda r: r.objective if mode == "max" else -r.objective)


def objective_label(objective: ObjectiveConfig) -> str:
    """The objective in tables and plots: ``val pearson_r (coupling)``, ``val identification (fingerprint)``,
    ``val i_diff (fingerprint, train-centred token_fc)``."""
    if objective.kind != "fingerprint":
        return f"val {objective.metric} ({objective.target})"
    features: str = "" if objective.features == "pooled" else objective.features
    if objective.centring == "train":
        features = f"train-centred {features or 'pooled'}"
    return f"val {objective.metric} (fingerprint{', ' + features if features else ''})"


def format_table(rows: list[TrialRow], keys: list[str], label: str, best: TrialRow | None = None) -> str:
    """Aligned text table: trial, swept values, objective, validation loss, status (best marked *)."""
    header = ["trial", *keys, label, "val_loss", "status"]
    body = [
        [
            ("* " if best is not None and r.trial_id == best.trial_id else "  ") + r.trial_id,
            *(r.params.get(k) for k in keys),
            f"{r.objective:.4f}",
            f"{r.val_loss:.4f}",
            r.status,
        ]
        for r in rows
    ]
    return text_table(header, body)


def rows_csv(rows: list[TrialRow], keys: list[str]) -> str:
    import pandas as pd

    frame = pd.DataFrame(
        [
            {
                "trial": r.trial_id,
                **{k: r.params.get(k) for k in keys},
                OBJECTIVE: r.objective,
                "val_loss": r.val_loss,
                "status": r.status,
                "mlflow_run_id": r.run_id,
            }
            for r in rows
        ]
    )
    return frame.to_csv(index=False)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def plot_objective(
    rows: list[TrialRow], space: dict[str, ParamSpec], label: str, path: str | Path, best: TrialRow | None = None
) -> Path:
    """The objective of every scored trial against each swept key (categorical keys as labelled positions)."""
    from matplotlib.ticker import NullFormatter

    from brainjepa_platform.plots import _figure, _save

    keys = list(space)
    scored = [r for r in rows if math.isfinite(r.objective)]
    fig = _figure(figsize=(4 * len(keys), 3.4))
    axes = fig.subplots(1, len(keys), squeeze=False)
    for ax, key in zip(axes[0], keys):
        values = [r.params.get(key) for r in scored]
        if all(_is_number(v) for v in values):
            xs = [float(v) for v in values]
            if space[key].log and xs:
                ax.set_xscale("log")
                ax.xaxis.set_minor_formatter(NullFormatter())
                ticks = sorted({min(xs), max(xs)})
                ax.set_xticks(ticks, [f"{t:.3g}" for t in ticks], fontsize=8)
        else:
            labels = list(dict.fromkeys(str(v) for v in values))
            xs = [float(labels.index(str(v))) for v in values]
            ax.set_xticks(range(len(labels)), labels, rotation=20, fontsize=8)
            ax.set_xlim(-0.5, len(labels) - 0.5)
        ax.scatter(xs, [r.objective for r in scored], color="#4c72b0", s=28)
        if best is not None and best in scored:
            i = scored.index(best)
            ax.scatter([xs[i]], [best.objective], marker="*", s=160, color="#c44e52", label="best", zorder=3)
            ax.legend(fontsize=8)
        ax.set_xlabel(key)
        ax.set_ylabel(label)
    fig.suptitle(f"{label} per trial ({len(scored)} scored of {len(rows)})")
    fig.tight_layout()
    return _save(fig, path)


def best_config_text(cfg: SweepConfig, best: TrialRow, best_cfg: PretrainConfig) -> str:
    """The best trial's config as YAML, ready for ``brainjepa pretrain --config`` (run name, storage and
    registration as in the sweep's base config)."""
    from brainjepa_platform.tracking.bundle import write_config

    base = cfg.base_pretrain()
    ready = copy.deepcopy(best_cfg)
    ready.train.name, ready.train.storage_path = f"{cfg.name}-best", base.train.storage_path
    ready.tracking.register, ready.tracking.tracking_uri = base.tracking.register, base.tracking.tracking_uri
    with tempfile.TemporaryDirectory() as tmp:
        body = write_config(ready, Path(tmp) / BEST_CONFIG).read_text()
    swept = ", ".join(f"{k}={v}" for k, v in best.params.items())
    return (
        f"# best trial {best.trial_id} of sweep {cfg.name}: {objective_label(cfg.objective)} = "
        f"{best.objective:.4f} (MLflow run {best.run_id})\n# swept: {swept}\n{body}"
    )


def write_results(
    cfg: SweepConfig,
    rows: list[TrialRow],
    best: TrialRow | None,
    best_text: str | None,
    sweep_dir: Location,
    parent_run_id: str,
    tracking_uri: str,
) -> tuple[str, dict[str, str]]:
    """Table (txt, csv), plot and best config: written to the sweep folder and logged to the parent run."""
    from mlflow.tracking import MlflowClient

    keys, label = list(cfg.space), objective_label(cfg.objective)
    table = format_table(rows, keys, label, best)
    files: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="brainjepa-sweep-") as tmp:
        local = {"results.txt": table + "\n", "results.csv": rows_csv(rows, keys)}
        if best_text is not None:
            local[BEST_CONFIG] = best_text
        for name, text in local.items():
            (Path(tmp) / name).write_text(text)
        plot_objective(rows, cfg.space, label, Path(tmp) / "objective_vs_params.png", best)
        client = MlflowClient(tracking_uri)
        for file in sorted(Path(tmp).iterdir()):
            write_bytes(sweep_dir.child(file.name), file.read_bytes())
            client.log_artifact(parent_run_id, str(file), artifact_path="sweep")
            files[file.stem] = sweep_dir.child(file.name).uri
    return table, files


def log_sweep_metrics(tracking_uri: str, parent_run_id: str, rows: list[TrialRow], best: TrialRow | None) -> None:
    """Per trial (step = trial index) the objective, and the best trial's objective and ids, on the parent run."""
    from mlflow.entities import Metric, RunTag
    from mlflow.tracking import MlflowClient

    now = int(time.time() * 1000)
    metrics = [Metric("trial_objective", r.objective, now, i) for i, r in enumerate(rows) if math.isfinite(r.objective)]
    tags = []
    if best is not None:
        metrics.append(Metric("best_objective", best.objective, now, 0))
        tags = [RunTag("brainjepa.best_trial", best.trial_id), RunTag("brainjepa.best_run_id", best.run_id)]
    MlflowClient(tracking_uri).log_batch(parent_run_id, metrics=metrics, tags=tags)


def describe(result: SweepResult, objective: ObjectiveConfig) -> str:
    """Human summary of a sweep result (the table, the best trial, where things are)."""
    out = io.StringIO()
    done = sum(r.status == "done" for r in result.trials)
    out.write(f"Sweep {result.name}: {len(result.trials)} trials ({done} scored), {result.path}\n")
    out.write(result.table + "\n")
    if not result.completed:
        out.write("The sweep was interrupted; run the same command again to resume it.\n")
        return out.getvalue()
    if result.best is None:
        out.write("No trial produced a finite objective.\n")
    else:
        out.write(
            f"Best: trial {result.best.trial_id}, {objective_label(objective)} = {result.best.objective:.4f}"
            f" (MLflow run {result.best.run_id})\n"
        )
    for name, uri in result.files.items():
        out.write(f"  {name}: {uri}\n")
    out.write(f"  MLflow parent run {result.parent_run_id}")
    if result.model_version:
        out.write(f"; best encoder registered as version {result.model_version}")
    return out.getvalue() + "\n"
