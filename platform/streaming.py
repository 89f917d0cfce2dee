"""Ray Data input pipeline for pretraining: Parquet shards -> windows -> robust scaling -> masked batches.

Scans are split into training and validation by subject (a hash of the subject id, so no subject is
in both). ``WindowSampler`` (a Ray Data map over blocks) cuts one random window per scan at the
model's TR and applies the dataset's robust scaling; the mask collator runs in the iterator's
collate function, i.e. in Ray Data's prefetch threads, never in the training loop.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from brainjepa.masks import MaskCollator, MaskConfig
from brainjepa.model import ModelConfig
from brainjepa.preprocess import RobustStats, sample_window
from brainjepa_platform.ingest import read_manifest, shard_locations
from brainjepa_platform.pretrain_config import DataConfig

READ_COLUMNS = ["subject", "tr", "n_rois", "n_frames", "series"]


def is_validation(subject: str, fraction: float, seed: int) -> bool:
    """Deterministic subject-level split: the same subject always lands on the same side."""
    digest = hashlib.sha1(f"{seed}:{subject}".encode()).hexdigest()
    return int(digest[:8], 16) / 2**32 < fraction


@dataclass
class StreamSpec:
    """What the window sampler needs (picklable)."""

    n_rois: int
    frames: int
    target_tr: float
    stats: RobustStats
    validation: bool
    val_fraction: float
    split_seed: int
    windows_per_scan: int = 1


def sample_windows(batch: dict[str, np.ndarray], spec: StreamSpec) -> dict[str, np.ndarray]:
    """Ray Data UDF: a block of scans -> (k, R, frames) float32 windows of one split.

    Each scan of the split gives ``windows_per_scan`` windows at random starts, fresh every epoch
    (the random start is the augmentation); masks, drawn later, are reproducible from the seed.
    """
    s = spec
    subjects = [str(x) for x in batch["subject"]]
    keep = [i for i, sub in enumerate(subjects) if is_validation(sub, s.val_fraction, s.split_seed) == s.validation]
    rng = np.random.default_rng()
    windows = np.empty((len(keep) * s.windows_per_scan, s.n_rois, s.frames), dtype=np.float32)
    for j, i in enumerate(keep):
        n_rois, n_frames = int(batch["n_rois"][i]), int(batch["n_frames"][i])
        series = np.asarray(batch["series"][i], dtype=np.float32).reshape(n_rois, n_frames)
        for k in range(s.windows_per_scan):
            window = sample_window(series, float(batch["tr"][i]), s.target_tr, s.frames, rng)
            windows[j * s.windows_per_scan + k] = s.stats.scale(window)
    return {"series": windows}


def build_datasets(dataset_uri: str, model: ModelConfig, data: DataConfig) -> tuple[Any, Any, dict[str, Any]]:
    """(train, validation) Ray Datasets of windows and the dataset manifest."""
    import ray

    manifest = read_manifest(dataset_uri)
    if manifest["atlas"]["n_rois"] != model.n_rois:
        raise ValueError(
            f"dataset {dataset_uri} has {manifest['atlas']['n_rois']} ROIs (atlas {manifest['atlas']['name']}) "
            f"but model.n_rois={model.n_rois}; set model.n_rois={manifest['atlas']['n_rois']}"
        )
    if manifest["robust_stats"] is None:
        raise ValueError(f"dataset {dataset_uri} has no scans (see its quarantine.json)")
    shortest = manifest["n_frames"]["min"] * manifest["tr_seconds"]["min"]
    if shortest < (model.frames - 1) * data.target_tr:
        raise ValueError(
            f"dataset {dataset_uri} has scans of {shortest:.0f}s, shorter than the model's window of "
            f"{model.frames} frames x {data.target_tr}s; lower model.frames or data.target_tr"
        )
    ray.data.DataContext.get_current().enable_progress_bars = False  # metrics go to MLflow instead
    loc, paths = shard_locations(dataset_uri)
    stats = RobustStats.from_dict(manifest["robust_stats"])
    raw = ray.data.read_parquet(paths, filesystem=loc.fs, columns=READ_COLUMNS)
    splits = []
    for validation in (False, True):
        spec = StreamSpec(model.n_rois, model.frames, data.target_tr, stats, validation, data.val_fraction,
                          data.split_seed, 1 if validation else data.windows_per_scan)
        # tasks with fractional CPUs: the sampler is light, and whole CPUs (or actor pools started
        # every epoch) would starve the trainers on small machines
        splits.append(raw.map_batches(sample_windows, fn_kwargs={"spec": spec}, batch_format="numpy",
                                      batch_size=16, num_cpus=0.25))
    return splits[0], splits[1], manifest


class MaskingCollate:
    """Collate function for ``iter_torch_batches``: numpy windows -> torch batch with masks."""

    def __init__(self, masks: MaskConfig, model: ModelConfig, seed: int, stream: int) -> None:
        self.collator = MaskCollator(masks, model.n_rois, model.n_time_patches, seed=seed, stream=stream)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        series = torch.from_numpy(np.ascontiguousarray(batch["series"], dtype=np.float32))
        masks = self.collator.next_masks(series.shape[0])
        out: dict[str, Any] = masks.to_torch()
        out["series"] = series
        out["region_sizes"] = masks.region_sizes
        return out
