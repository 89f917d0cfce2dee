"""``brainjepa fingerprint``: does a registered encoder tell subjects apart across sessions better than a
randomly initialised one and than FC?

Every scan of an ingested cohort with several sessions per subject is embedded by the model and by
``random_draws`` randomly initialised encoders of the same architecture, gradients and scaling; each scan is
matched by Pearson correlation to the other sessions' scans (``brainjepa.fingerprint``) on two feature
sets per encoder (the mean-pooled embedding and token-FC, the ROI x ROI correlation of the tokens) and on
FC. Features are centred on the scored scans' mean first (``centring: cohort``, the default: what every
subject shares is removed; docs/learning.md finds token-FC identity there) or used as they are. One draw of
random weights is a noisy control (docs/learning.md), so the random encoder is reported as mean +- sd of
its draws and the model's distance from it in draws' sd.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from brainjepa.config import ConfigError, to_dict
from brainjepa_platform.evaluate.embed import Embeddings, embed_dataset, random_encoder_bundle
from brainjepa_platform.evaluate.run import FC, MODEL, RANDOM, fc_dataset
from brainjepa_platform.tracking.bundle import EncoderBundle
from brainjepa_platform.tracking.params import redact

POOLED, TOKEN_FC = "pooled", "token-FC"
METRICS = ("identification", "i_diff")


@dataclass
class FingerprintConfig:
    """Which encoder, on which multi-session cohort, against how many random draws."""

    model: str = ""
    """MLflow model URI; empty: ``models:/brainjepa-encoder-<atlas>-<n_rois>@current`` of the dataset's atlas."""
    data: str = ""
    """URI of an ingested dataset with several sessions per subject (its ``session`` column)."""
    centring: Literal["cohort", "none"] = "cohort"
    """cohort: every feature vector minus the mean of the scored scans (those of subjects with 2+ sessions);
    none: as they are."""
    random_draws: int = 5
    """Randomly initialised encoders (seeds 0 .. random_draws - 1) to compare with."""
    scaling: Literal["dataset", "model"] = "dataset"
    target_tr: float = 0.0
    """Seconds between model frames; 0: the TR the model was pretrained at."""
    batch_size: int = 32
    workers: int = 1
    """Ray Data embedding actors."""
    out: str = "fingerprint"
    """Local folder for table.txt, results.json and the plot."""
    tracking_uri: str = ""
    experiment: str = "brainjepa-evaluate"

    def __post_init__(self) -> None:
        if self.random_draws < 1:
            raise ConfigError(f"random_draws={self.random_draws}: expected >= 1 (2+ for a spread)")


@dataclass
class FingerprintResult:
    """Scores per feature set: ``scores[name][metric]`` is one value per encoder (one for the model and FC,
    one per draw for the random encoder)."""

    scores: dict[str, dict[str, list[float]]]
    n_scans: int
    n_subjects: int
    files: dict[str, str] = field(default_factory=dict)

    def summary(self) -> dict[str, dict[str, tuple[float, float]]]:
        """``name -> metric -> (mean, sd)``; sd is 0 for a single value (the model, FC, or one random draw)."""
        return {
            name: {m: (float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0) for m, v in per.items()}
            for name, per in self.scores.items()
        }

    def model_vs_random(self) -> dict[str, dict[str, float]]:
        """Per features and metric: model minus the random draws' mean, and that in draws' sd (NaN for one draw
        or draws that agree)."""
        out: dict[str, dict[str, float]] = {}
        summary = self.summary()
        for features in (POOLED, TOKEN_FC):
            for metric in METRICS:
                model = summary[f"{MODEL} {features}"][metric][0]
                mean, sd = summary[f"{RANDOM} {features}"][metric]
                lead = model - mean
                out[f"{features} {metric}"] = {"difference": lead, "in_sd": lead / sd if sd else math.nan}
        return out

    def format_table(self, digits: int = 3) -> str:
        """Rows: feature sets; columns: identification and I_diff as ``mean ± sd``; then the model's lead."""
        from brainjepa_platform.tables import format_table

        rows = [
            [name, *(f"{a:.{digits}f} ± {s:.{digits}f}" for a, s in (per[m] for m in METRICS))]
            for name, per in self.summary().items()
        ]
        draws = len(self.scores[f"{RANDOM} {POOLED}"]["i_diff"])
        spread = "one draw has no spread" if draws == 1 else "the draws do not vary"
        lead = [
            f"model - random draws, {key}: {v['difference']:+.{digits}f} ("
            + (f"{v['in_sd']:+.1f} sd of the draws)" if math.isfinite(v["in_sd"]) else f"{spread})")
            for key, v in self.model_vs_random().items()
        ]
        return "\n".join([format_table(["features", *METRICS], rows), *lead])

    def to_json(self) -> dict[str, Any]:
        """JSON-safe dict: sizes, every score, the summary and the model's lead (a NaN lead as null)."""
        return {
            "scans": self.n_scans,
            "subjects": self.n_subjects,
            "scores": self.scores,
            "summary": {n: {m: {"mean": a, "sd": s} for m, (a, s) in per.items()} for n, per in self.summary().items()},
            "model_vs_random": {
                k: {kk: (None if not math.isfinite(vv) else vv) for kk, vv in v.items()}
                for k, v in self.model_vs_random().items()
            },
        }


def multi_session_rows(subjects: list[str], sessions: list[str], rows: np.ndarray) -> np.ndarray:
    """The ``rows`` whose subject has, among ``rows``, scans from at least two distinct sessions."""
    seen: dict[str, set[str]] = {}
    for r in rows.tolist():
        seen.setdefault(subjects[r], set()).add(sessions[r])
    return np.asarray([r for r in rows.tolist() if len(seen[subjects[r]]) >= 2], dtype=np.int64)


def fingerprint_metrics(emb: Embeddings, features: np.ndarray, rows: np.ndarray) -> dict[str, float]:
    """Subject identification across sessions by ``features`` (one row per scan of ``emb``) among ``rows`` (those
    of subjects with 2+ sessions there): ``identification`` accuracy, ``i_diff``, ``chance`` (1 / subjects) and
    ``subjects``; NaN scores when fewer than two subjects qualify. Sessions are the scans' session labels, numbered."""
    from brainjepa.fingerprint import differential_identifiability, identification_accuracy

    keep = multi_session_rows(emb.subjects, emb.sessions, rows)
    subjects = np.asarray(emb.subjects, dtype=object)[keep]
    n = len(set(subjects.tolist()))
    if n < 2:
        return {"identification": math.nan, "i_diff": math.nan, "chance": math.nan, "subjects": float(n)}
    _, session = np.unique(np.asarray(emb.sessions, dtype=object)[keep].astype(str), return_inverse=True)
    x = features[keep]
    return {
        "identification": identification_accuracy(x, subjects, session),
        "i_diff": differential_identifiability(x, subjects, session),
        "chance": 1.0 / n,
        "subjects": float(n),
    }


def centred_on(features: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Every row of ``features`` minus the mean of the ``rows`` (what those scans share)."""
    return features - features[rows].mean(axis=0)


def score_features(
    emb: Embeddings, features: np.ndarray, rows: np.ndarray, centring: Literal["cohort", "none"]
) -> dict[str, float]:
    """:func:`fingerprint_metrics` of ``features`` among ``rows``, minus the mean of those rows with ``cohort``."""
    x = centred_on(features, rows) if centring == "cohort" else features
    scores = fingerprint_metrics(emb, x, rows)
    return {m: scores[m] for m in METRICS}


def embed_with_token_fc(cfg: FingerprintConfig, bundle: EncoderBundle) -> Embeddings:
    """``cfg.data`` embedded by ``bundle`` with token-FC, as ``cfg`` says (TR, scaling, batch size, actors)."""
    return embed_dataset(
        bundle,
        cfg.data,
        target_tr=cfg.target_tr or None,
        scaling=cfg.scaling,
        batch_size=cfg.batch_size,
        workers=cfg.workers,
        token_fc=True,
    )


def run_fingerprint(cfg: FingerprintConfig, bundle: EncoderBundle) -> FingerprintResult:
    """Embed with the model and the random draws, score every feature set; write table, JSON and plot."""
    from brainjepa_platform.plots import plot_fingerprint

    if not cfg.data:
        raise ValueError("fingerprint needs a dataset with several sessions per subject (--data URI)")
    emb = embed_with_token_fc(cfg, bundle)
    rows = multi_session_rows(emb.subjects, emb.sessions, np.arange(len(emb.scan_ids)))
    n_subjects = len({emb.subjects[r] for r in rows.tolist()})
    if n_subjects < 2:
        raise ValueError(
            f"dataset {cfg.data}: {n_subjects} subject(s) have scans from 2+ sessions, 2 are needed; ingest a "
            "cohort with sessions (BIDS ses-* labels) or write one with brainjepa synth --scans-per-subject 2"
        )
    scores: dict[str, dict[str, list[float]]] = {}

    def add(name: str, features: np.ndarray) -> None:
        for metric, value in score_features(emb, features, rows, cfg.centring).items():
            scores.setdefault(name, {}).setdefault(metric, []).append(value)

    add(f"{MODEL} {POOLED}", emb.features)
    add(f"{MODEL} {TOKEN_FC}", emb.require_token_fc("brainjepa fingerprint"))
    for draw in range(cfg.random_draws):
        random_emb = embed_with_token_fc(cfg, random_encoder_bundle(bundle, seed=draw))
        if random_emb.scan_ids != emb.scan_ids:
            raise RuntimeError("the random encoder embedded other scans than the model")  # same windows: a bug
        add(f"{RANDOM} {POOLED}", random_emb.features)
        add(f"{RANDOM} {TOKEN_FC}", random_emb.require_token_fc("brainjepa fingerprint"))
    add(FC, fc_dataset(cfg.data, emb.scan_ids))
    result = FingerprintResult(scores, len(rows), n_subjects)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    result.files = {
        "table": str(out / "table.txt"),
        "results": str(out / "results.json"),
        "plot": str(out / "fingerprint.png"),
    }
    Path(result.files["table"]).write_text(result.format_table() + "\n")
    body = {"config": redact(to_dict(cfg)), **result.to_json(), "skipped_scans": emb.skipped}
    Path(result.files["results"]).write_text(json.dumps(body, indent=2))
    plot_fingerprint(result.summary(), n_subjects, result.files["plot"])
    return result
