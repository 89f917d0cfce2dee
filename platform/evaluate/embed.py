"""``brainjepa embed``: batch inference of a registered encoder over an ingested dataset with Ray Data.

Each scan is resampled to the model's TR and cut into consecutive windows covering it; the frozen
target encoder embeds every window and the scan's embedding is the mean over windows and tokens
(optionally also per ROI: the mean over windows and time patches of each ROI's tokens, and token-FC: the
ROI x ROI correlation of each ROI's time-centred tokens, the read-out of docs/learning.md). Inputs are
robust-scaled with the evaluated dataset's own statistics (as pretraining scaled its cohort), or with
the statistics shipped with the model (``scaling="model"``). Ray Data runs the encoder in an actor
pool (one GPU per actor when the cluster has GPUs).
"""

from __future__ import annotations

import dataclasses
import io
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from brainjepa.learnability import token_correlation
from brainjepa.model import BrainEncoder, ModelConfig
from brainjepa.preprocess import tiling_windows
from brainjepa_platform.data.manifest import Manifest, read_manifest
from brainjepa_platform.data.reader import shard_dataset
from brainjepa_platform.storage import read_bytes, resolve, write_bytes, write_json
from brainjepa_platform.tracking.bundle import EncoderBundle, target_encoder_state
from brainjepa_platform.tracking.names import DEFAULT_ALIAS, encoder_model_name

SERIES_COLUMNS = ["tr", "n_rois", "n_frames", "series"]


@dataclass
class Embeddings:
    """One row per embedded scan (in the dataset's scan order)."""

    scan_ids: list[str]
    subjects: list[str]
    features: np.ndarray
    """(n_scans, D) mean-pooled embeddings."""
    phenotypes: pd.DataFrame
    """The dataset's phenotype columns, one row per scan."""
    per_roi: np.ndarray | None = None
    """(n_scans, R, D) per-ROI embeddings when asked for."""
    skipped: list[dict[str, str]] = field(default_factory=list)
    """Scans that could not be embedded, with the reason (e.g. shorter than the model's window)."""
    sessions: list[str] = field(default_factory=list)
    """Each scan's BIDS session label (the dataset's ``session`` column; "" when it has none)."""
    token_fc: np.ndarray | None = None
    """(n_scans, R * (R - 1) / 2) token-FC (upper triangle, row-major) when asked for."""

    def require_token_fc(self, needed_by: str) -> np.ndarray:
        """``token_fc``, or a ValueError saying that ``needed_by`` needs the dataset embedded with it."""
        if self.token_fc is None:
            raise ValueError(f"{needed_by}: embed the dataset with embed_dataset(..., token_fc=True)")
        return self.token_fc


def default_model_uri(dataset_uri: str, alias: str = DEFAULT_ALIAS) -> str:
    """The encoder registered for a dataset's atlas: ``models:/brainjepa-encoder-<atlas>-<n_rois>@<alias>``."""
    if not dataset_uri:
        raise ValueError("no model URI and no dataset to take the atlas from: pass --model or --data")
    atlas = read_manifest(dataset_uri).atlas
    return f"models:/{encoder_model_name(atlas.name, atlas.n_rois)}@{alias}"


def check_compatible(bundle: EncoderBundle, manifest: Manifest, uri: str) -> None:
    """The dataset must use the model's atlas: same ROI count and labels, in the same order."""
    atlas = manifest.atlas
    if atlas.n_rois != bundle.config.n_rois:
        raise ValueError(
            f"dataset {uri} has {atlas.n_rois} ROIs (atlas {atlas.name}) but the model was trained on "
            f"{bundle.config.n_rois} ROIs (atlas {bundle.atlas}); ingest the cohort with the model's atlas"
        )
    if list(atlas.roi_labels) != list(bundle.roi_labels):
        diff = next(i for i, (a, b) in enumerate(zip(atlas.roi_labels, bundle.roi_labels)) if a != b)
        raise ValueError(
            f"dataset {uri} (atlas {atlas.name}) orders or names its ROIs differently from the model (atlas "
            f"{bundle.atlas}): ROI {diff} is {atlas.roi_labels[diff]!r} vs {bundle.roi_labels[diff]!r}"
        )


def bundle_from_engine_state(
    state: dict[str, Any],
    model_cfg: ModelConfig,
    gradients: np.ndarray | None,
    manifest: Manifest,
    target_tr: float | None = None,
) -> EncoderBundle:
    """The frozen target encoder of a pretraining checkpoint, with the dataset's scaling and ROI labels."""
    grads = None if gradients is None or model_cfg.positional != "gradient" else np.asarray(gradients, np.float32)
    encoder = BrainEncoder(model_cfg, None if grads is None else torch.from_numpy(grads))
    encoder.load_state_dict(target_encoder_state(state))
    encoder.eval().requires_grad_(False)
    return EncoderBundle(
        encoder,
        model_cfg,
        manifest.stats(),
        list(manifest.atlas.roi_labels),
        manifest.atlas.name,
        np.zeros((model_cfg.n_rois, 0)) if grads is None else grads,
        target_tr,
    )


def random_encoder_bundle(bundle: EncoderBundle, seed: int = 0) -> EncoderBundle:
    """A randomly initialised encoder of the same architecture, gradients and scaling (a baseline)."""
    torch.manual_seed(seed)
    grads = None if bundle.config.positional != "gradient" else torch.from_numpy(bundle.gradients).float()
    encoder = BrainEncoder(bundle.config, grads).eval().requires_grad_(False)
    return dataclasses.replace(bundle, encoder=encoder)


class ScanEmbedding(NamedTuple):
    """One scan's read-outs: the (D,) mean-pooled embedding, and when asked (R, D) per-ROI embeddings and the
    (R * (R - 1) / 2,) token-FC."""

    pooled: np.ndarray
    per_roi: np.ndarray | None = None
    token_fc: np.ndarray | None = None


def embed_scan(
    bundle: EncoderBundle,
    series: np.ndarray,
    tr: float,
    target_tr: float,
    per_roi: bool,
    batch_size: int,
    window_stride: float | None = None,
    token_fc: bool = False,
) -> ScanEmbedding:
    """One scan (R, T) -> its mean-pooled embedding and optionally per-ROI embeddings and token-FC
    (``brainjepa.learnability.token_correlation`` of each ROI's tokens over every window's time patches);
    windows every ``window_stride`` seconds (default: consecutive windows)."""
    cfg = bundle.config
    windows = tiling_windows(series, tr, target_tr, cfg.frames, window_stride)
    tokens = bundle.embed(windows, pooling="none", batch_size=batch_size)  # (k, R*P, D), ROI-major
    by_roi = tokens.reshape(tokens.shape[0], cfg.n_rois, cfg.n_time_patches, -1)
    rois = by_roi.mean(axis=(0, 2)).astype(np.float32) if per_roi else None
    tfc = None
    if token_fc:  # (R, k * P, D): every ROI's tokens over the windows' time patches
        tfc = token_correlation(by_roi.transpose(1, 0, 2, 3).reshape(cfg.n_rois, -1, by_roi.shape[-1]))
    return ScanEmbedding(
        tokens.mean(axis=(0, 1)).astype(np.float32), rois, None if tfc is None else tfc.astype(np.float32)
    )


class ScanEmbedder:
    """Ray Data actor: a block of scans -> their embeddings (encoder loaded once per actor)."""

    def __init__(
        self, bundle: EncoderBundle, target_tr: float, per_roi: bool, batch_size: int, token_fc: bool = False
    ) -> None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
        bundle.encoder.to(device)
        self.bundle, self.target_tr, self.per_roi, self.batch_size = bundle, target_tr, per_roi, batch_size
        self.token_fc = token_fc

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n, dim, r = len(batch["scan_id"]), self.bundle.config.dim, self.bundle.config.n_rois
        pooled = np.zeros((n, dim), np.float32)
        rois = np.zeros((n, r * dim if self.per_roi else 0), np.float32)
        tfc = np.zeros((n, r * (r - 1) // 2 if self.token_fc else 0), np.float32)
        errors = [""] * n
        for i in range(n):
            series = np.asarray(batch["series"][i], dtype=np.float32).reshape(int(batch["n_rois"][i]), -1)
            try:
                emb = embed_scan(
                    self.bundle,
                    series,
                    float(batch["tr"][i]),
                    self.target_tr,
                    self.per_roi,
                    self.batch_size,
                    token_fc=self.token_fc,
                )
            except ValueError as exc:
                errors[i] = str(exc)
                continue
            pooled[i] = emb.pooled
            if emb.per_roi is not None:
                rois[i] = emb.per_roi.ravel()
            if emb.token_fc is not None:
                tfc[i] = emb.token_fc
        out = {k: v for k, v in batch.items() if k not in SERIES_COLUMNS}
        out.update(embedding=pooled, per_roi=rois, token_fc=tfc, error=np.array(errors, dtype=object))
        return out


def scaled_for(bundle: EncoderBundle, manifest: Manifest, scaling: str) -> EncoderBundle:
    """The bundle with the robust scaling to apply: the dataset's own statistics, or the model's."""
    if scaling not in ("dataset", "model"):
        raise ValueError(f"scaling must be 'dataset' or 'model', got {scaling!r}")
    if scaling == "model":
        if bundle.stats is None:
            raise ValueError(
                f"--scaling model: this model ({bundle.atlas}) was imported without robust-scaling "
                "statistics; use --scaling dataset"
            )
        return bundle
    return dataclasses.replace(bundle, stats=manifest.stats())


def embed_dataset(
    bundle: EncoderBundle,
    dataset_uri: str,
    *,
    target_tr: float | None = None,
    scaling: str = "dataset",
    per_roi: bool = False,
    batch_size: int = 32,
    workers: int = 1,
    token_fc: bool = False,
) -> Embeddings:
    """Embed every scan of an ingested dataset; ``target_tr`` defaults to the model's pretraining TR.
    ``token_fc``: also each scan's token-FC (R * (R - 1) / 2 values a scan: 101,025 at 450 ROIs)."""
    import ray

    manifest = read_manifest(dataset_uri)
    check_compatible(bundle, manifest, dataset_uri)
    bundle = scaled_for(bundle, manifest, scaling)
    target_tr = target_tr or bundle_target_tr(bundle)
    phenotype_columns = sorted(manifest.phenotypes)
    rows = shard_dataset(dataset_uri, ["scan_id", "subject", "session", *phenotype_columns, *SERIES_COLUMNS])
    use_gpu = ray.cluster_resources().get("GPU", 0) > 0
    embedded = rows.map_batches(
        ScanEmbedder,
        fn_constructor_kwargs={
            "bundle": bundle,
            "target_tr": target_tr,
            "per_roi": per_roi,
            "batch_size": batch_size,
            "token_fc": token_fc,
        },
        batch_size=8,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=max(1, workers)),
        num_gpus=1 if use_gpu else 0,
        num_cpus=0 if use_gpu else 1,
    )
    table = pa.concat_tables(
        [
            pa.Table.from_pandas(df, preserve_index=False)
            for df in embedded.iter_batches(batch_size=None, batch_format="pandas")
        ]
    )
    return to_embeddings(table.to_pandas(), bundle, phenotype_columns, per_roi, token_fc)


def bundle_target_tr(bundle: EncoderBundle) -> float:
    """The TR the model was pretrained at (stored with the model config when known)."""
    tr = bundle.target_tr
    if not tr:
        raise ValueError("the model does not record its pretraining TR: pass target_tr (seconds between frames)")
    return float(tr)


def to_embeddings(
    frame: pd.DataFrame, bundle: EncoderBundle, phenotype_columns: list[str], per_roi: bool, token_fc: bool = False
) -> Embeddings:
    frame = frame.sort_values("scan_id", kind="stable").reset_index(drop=True)
    bad = frame["error"].astype(str) != ""
    skipped = [{"scan_id": s, "reason": e} for s, e in zip(frame.loc[bad, "scan_id"], frame.loc[bad, "error"])]
    frame = frame.loc[~bad].reset_index(drop=True)
    features = np.stack(frame["embedding"].to_numpy()) if len(frame) else np.zeros((0, bundle.config.dim))
    rois = None
    if per_roi and len(frame):
        rois = np.stack(frame["per_roi"].to_numpy()).reshape(len(frame), bundle.config.n_rois, bundle.config.dim)
    tfc = None
    if token_fc:
        r = bundle.config.n_rois
        tfc = np.stack(frame["token_fc"].to_numpy()) if len(frame) else np.zeros((0, r * (r - 1) // 2), np.float32)
    return Embeddings(
        scan_ids=frame["scan_id"].astype(str).tolist(),
        subjects=frame["subject"].astype(str).tolist(),
        features=features.astype(np.float32),
        phenotypes=frame[phenotype_columns].copy(),
        per_roi=rois,
        token_fc=tfc,
        skipped=skipped,
        sessions=frame["session"].fillna("").astype(str).tolist() if "session" in frame else [""] * len(frame),
    )


def write_embeddings(emb: Embeddings, out_uri: str, provenance: dict[str, Any]) -> str:
    """``OUT/embeddings.parquet`` (scan ids, subjects, phenotypes, embedding[, per_roi][, token_fc]) and
    ``OUT/embeddings.json`` (provenance, sizes, skipped scans), each written atomically."""
    columns: dict[str, Any] = {"scan_id": emb.scan_ids, "subject": emb.subjects}
    columns.update({c: emb.phenotypes[c].tolist() for c in emb.phenotypes.columns})
    columns["embedding"] = pa.FixedSizeListArray.from_arrays(pa.array(emb.features.ravel()), emb.features.shape[1])
    if emb.per_roi is not None:
        flat = emb.per_roi.reshape(len(emb.scan_ids), -1)
        columns["per_roi"] = pa.FixedSizeListArray.from_arrays(pa.array(flat.ravel()), flat.shape[1])
    if emb.token_fc is not None:
        columns["token_fc"] = pa.FixedSizeListArray.from_arrays(pa.array(emb.token_fc.ravel()), emb.token_fc.shape[1])
    buf = io.BytesIO()
    pq.write_table(pa.table(columns), buf)
    out = resolve(out_uri)
    write_bytes(out.child("embeddings.parquet"), buf.getvalue())
    write_json(
        out.child("embeddings.json"),
        {
            **provenance,
            "scans": len(emb.scan_ids),
            "dim": int(emb.features.shape[1]),
            "per_roi": emb.per_roi is not None,
            "token_fc": emb.token_fc is not None,
            "skipped": emb.skipped,
        },
    )
    return out.child("embeddings.parquet").uri


def read_embeddings(uri: str) -> pd.DataFrame:
    """The table written by :func:`write_embeddings`."""
    return pq.read_table(io.BytesIO(read_bytes(resolve(uri).child("embeddings.parquet")))).to_pandas()
