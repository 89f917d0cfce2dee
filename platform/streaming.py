"""Ray Data input pipeline for pretraining: Parquet shards -> windows -> robust scaling -> masked batches.

Scans are split into training and validation by subject (a hash of the subject id, so no subject is
in both). Shards are read from the manifest's list (``shard_stream``), as many passes as the run
needs in one streaming execution; ``windows.sample_windows`` (a Ray Data map over shards) cuts
random windows per scan at the model's TR and applies the dataset's robust scaling; the mask collator runs
in the iterator's collate function, i.e. in Ray Data's prefetch threads, never in the training loop.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from brainjepa.masks import MaskCollator, MaskConfig
from brainjepa.model import ModelConfig
from brainjepa.preprocess import RobustStats
from brainjepa_platform.ingest import read_manifest
from brainjepa_platform.pretrain_config import DataConfig
from brainjepa_platform.shard_stream import shard_dataset
from brainjepa_platform.windows import StreamSpec, sample_windows

READ_COLUMNS = ["subject", "tr", "n_rois", "n_frames", "series"]


MAX_SHARD_READS = 20_000
"""Cap on (pass, shard) rows in one dataset; a longer run starts a new execution when it runs out."""


def passes_needed(manifest: dict[str, Any], data: DataConfig, samples_needed: int) -> int:
    """Passes over the cohort that cover ``samples_needed`` training windows in one execution (+1 spare
    for the validation split and uneven shards), capped at ``MAX_SHARD_READS`` shard reads."""
    train_scans = max(1.0, manifest["counts"]["scans"] * (1.0 - data.val_fraction))
    passes = math.ceil(samples_needed / (train_scans * data.windows_per_scan)) + 1
    return max(1, min(passes, MAX_SHARD_READS // max(1, len(manifest["shards"]))))


def check_dataset(uri: str, manifest: dict[str, Any], model: ModelConfig, data: DataConfig) -> None:
    """Clear errors when the dataset cannot feed this model."""
    if manifest["atlas"]["n_rois"] != model.n_rois:
        raise ValueError(
            f"dataset {uri} has {manifest['atlas']['n_rois']} ROIs (atlas {manifest['atlas']['name']}) "
            f"but model.n_rois={model.n_rois}; set model.n_rois={manifest['atlas']['n_rois']}"
        )
    if manifest["robust_stats"] is None:
        raise ValueError(f"dataset {uri} has no scans (see its quarantine.json)")
    shortest = manifest["n_frames"]["min"] * manifest["tr_seconds"]["min"]
    if shortest < (model.frames - 1) * data.target_tr:
        raise ValueError(
            f"dataset {uri} has scans of {shortest:.0f}s, shorter than the model's window of "
            f"{model.frames} frames x {data.target_tr}s; lower model.frames or data.target_tr"
        )


def build_datasets(dataset_uri: str, model: ModelConfig, data: DataConfig,
                   samples_needed: int = 0, seed: int = 0) -> tuple[Any, Any, dict[str, Any]]:
    """(train, validation) Ray Datasets of windows and the dataset manifest.

    The training dataset holds enough passes over the cohort for ``samples_needed`` windows, so a
    run is one streaming execution rather than one per epoch; validation is one pass.
    """
    import ray

    manifest = read_manifest(dataset_uri)
    check_dataset(dataset_uri, manifest, model, data)
    ray.data.DataContext.get_current().enable_progress_bars = False  # metrics go to MLflow instead
    stats = RobustStats.from_dict(manifest["robust_stats"])
    splits = []
    for validation in (False, True):
        passes = 1 if validation else passes_needed(manifest, data, samples_needed)
        spec = StreamSpec(model.n_rois, model.frames, data.target_tr, stats, validation, data.val_fraction,
                          data.split_seed, 1 if validation else data.windows_per_scan)
        rows = shard_dataset(dataset_uri, READ_COLUMNS, passes=passes, seed=seed, num_cpus=data.task_cpus)
        # read + cut windows fuse into one task per shard (same num_cpus); tasks, not an actor pool,
        # so nothing idles between passes
        splits.append(rows.map_batches(sample_windows, fn_kwargs={"spec": spec}, batch_format="numpy",
                                       batch_size=None, num_cpus=data.task_cpus))
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
