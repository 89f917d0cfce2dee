"""Ray Data input pipeline for pretraining: Parquet shards -> windows -> robust scaling -> masked batches.

Scans are split into training and validation by subject (a hash of the subject id, so no subject is
in both). Shards are read from the manifest's list (``shard_stream``), as many passes as the run
needs in one streaming execution; ``windows.sample_windows`` (a Ray Data map over shards) cuts
random windows per scan at the model's TR and applies the dataset's robust scaling; the collate function
turns windows into tensors in Ray Data's prefetch threads, and ``MaskingCollate.masked`` attaches masks
drawn ahead in a background thread, keyed by the batch's training step, never in the training loop.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from ray.data.collate_fn import NumpyBatchCollateFn

from brainjepa.masks import MaskCollator, MaskConfig, MaskStream
from brainjepa.model import ModelConfig
from brainjepa_platform.cluster.connect import no_ray_data_progress_bars
from brainjepa_platform.data.manifest import Manifest, read_manifest
from brainjepa_platform.data.reader import shard_dataset
from brainjepa_platform.data.windows import StreamSpec, long_enough, sample_windows
from brainjepa_platform.train.config import DataConfig

READ_COLUMNS = ["subject", "tr", "n_rois", "n_frames", "series"]


MAX_SHARD_READS = 20_000
"""Cap on (pass, shard) rows in one dataset; a longer run starts a new execution when it runs out."""
_log = logging.getLogger(__name__)


def passes_needed(manifest: Manifest, data: DataConfig, samples_needed: int) -> int:
    """Passes over the cohort that cover ``samples_needed`` training windows in one execution (+1 spare
    for the validation split and uneven shards), capped at ``MAX_SHARD_READS`` shard reads."""
    train_scans = max(1.0, manifest.counts.scans * (1.0 - data.val_fraction))
    passes = math.ceil(samples_needed / (train_scans * data.windows_per_scan)) + 1
    return max(1, min(passes, MAX_SHARD_READS // max(1, len(manifest.shards))))


@dataclass
class WindowFit:
    """How many of a dataset's scans span the model's window (``usable`` None: not known, older manifest)."""

    scans: int
    usable: int | None
    window_seconds: float
    longest_seconds: float


def window_fit(manifest: Manifest, frames: int, target_tr: float) -> WindowFit:
    """Count the scans long enough for a window of ``frames`` x ``target_tr`` from the manifest's per-scan
    lengths; a manifest without them (ingested before they were recorded) gives bounds only."""
    window, scans = (frames - 1) * target_tr, manifest.counts.scans
    lengths = manifest.scan_lengths
    if lengths is not None:
        usable = sum(e.scans for e in lengths if long_enough(e.n_frames, e.tr, frames, target_tr))
        longest = max(((e.n_frames - 1) * e.tr for e in lengths), default=0.0)
        return WindowFit(scans, usable, window, longest)
    n, tr = manifest.n_frames, manifest.tr_seconds
    if n is None or tr is None:  # no scans
        return WindowFit(scans, 0, window, 0.0)
    longest = (n.max - 1) * tr.max  # no scan is longer; every scan is at least (min - 1) x min
    usable = 0 if window > longest + 1e-9 else scans if long_enough(int(n.min), tr.min, frames, target_tr) else None
    return WindowFit(scans, usable, window, longest)


def check_dataset(uri: str, manifest: Manifest, model: ModelConfig, data: DataConfig) -> WindowFit:
    """Clear errors when the dataset cannot feed this model; a logged warning when some scans are too short
    for its window (the window sampler skips them)."""
    atlas = manifest.atlas
    if atlas.n_rois != model.n_rois:
        raise ValueError(
            f"dataset {uri} has {atlas.n_rois} ROIs (atlas {atlas.name}) "
            f"but model.n_rois={model.n_rois}; set model.n_rois={atlas.n_rois}"
        )
    if manifest.robust_stats is None:
        raise ValueError(f"dataset {uri} has no scans (see its quarantine.json)")
    fit = window_fit(manifest, model.frames, data.target_tr)
    window = f"the model's window of {model.frames} frames x {data.target_tr}s ({fit.window_seconds:.0f}s)"
    if fit.usable == 0:
        raise ValueError(
            f"dataset {uri}: none of its {fit.scans} scans spans {window}; the longest spans "
            f"{fit.longest_seconds:.0f}s; lower model.frames or data.target_tr"
        )
    if fit.usable is None:
        _log.warning(
            "some scans of dataset %s may be shorter than %s: they are skipped (re-ingest the dataset to "
            "have them counted)",
            uri,
            window,
        )
    elif fit.usable < fit.scans:
        _log.warning(
            "%d of the %d scans of dataset %s are shorter than %s: they are skipped",
            fit.scans - fit.usable,
            fit.scans,
            uri,
            window,
        )
    return fit


def build_datasets(
    dataset_uri: str, model: ModelConfig, data: DataConfig, samples_needed: int = 0, seed: int = 0
) -> tuple[Any, Any, Manifest]:
    """(train, validation) Ray Datasets of windows and the dataset manifest (no Ray Data progress bars).

    The training dataset holds enough passes over the cohort for ``samples_needed`` windows, so a
    run is one streaming execution rather than one per epoch; validation is one pass.
    """
    manifest = read_manifest(dataset_uri)
    check_dataset(dataset_uri, manifest, model, data)
    stats = manifest.stats()
    splits = []
    with no_ray_data_progress_bars():  # the datasets keep it: metrics go to MLflow instead
        for validation in (False, True):
            passes = 1 if validation else passes_needed(manifest, data, samples_needed)
            spec = StreamSpec(
                model.n_rois,
                model.frames,
                data.target_tr,
                stats,
                validation,
                data.val_fraction,
                data.split_seed,
                1 if validation else data.windows_per_scan,
            )
            rows = shard_dataset(dataset_uri, READ_COLUMNS, passes=passes, seed=seed, num_cpus=data.task_cpus)
            # read + cut windows fuse into one task per shard (same num_cpus); tasks, not an actor pool,
            # so nothing idles between passes
            splits.append(
                rows.map_batches(
                    sample_windows,
                    fn_kwargs={"spec": spec},
                    batch_format="numpy",
                    batch_size=None,
                    num_cpus=data.task_cpus,
                )
            )
    return splits[0], splits[1], manifest


class MaskingCollate(NumpyBatchCollateFn):
    """Masked training batches from ``iter_torch_batches``.

    ``__call__`` is the collate function (numpy windows -> float32 tensor, copied: Ray Data's arrays may be
    read-only views of Arrow memory, which torch must not wrap); it runs in Ray Data's format
    threads, which finish out of order, so it draws no masks. ``masked`` attaches them in batch order,
    keyed by each batch's position (``MaskCollator.masks_for``) and drawn ahead in a background thread:
    the masks do not depend on thread timing, and a resumed run draws the same masks at the same step.
    """

    def __init__(self, masks: MaskConfig, model: ModelConfig, seed: int, stream: int) -> None:
        self.collator = MaskCollator(masks, model.n_rois, model.n_time_patches, seed=seed, stream=stream)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:  # type: ignore[override]  # Ray: a free TypeVar
        return {"series": torch.from_numpy(np.array(batch["series"], dtype=np.float32))}

    def masked(
        self, batches: Iterable[dict[str, Any]], keys: Iterable[Sequence[int]], batch_size: int, ahead: int = 2
    ) -> Iterator[dict[str, Any]]:
        """``batches`` (collated) with the masks of ``keys``, one key per batch in order."""
        with MaskStream(self.collator, batch_size, keys, ahead) as stream:
            for batch, (key, masks) in zip(batches, stream):
                if masks.context.shape[0] != batch["series"].shape[0]:  # a last, smaller batch
                    masks = self.collator.masks_for(key, batch["series"].shape[0])
                yield {**batch, **masks.to_torch(), "region_sizes": masks.region_sizes}
