"""Training windows from scans, the map that Ray Data runs over shards (no torch, no pandas).

Ray Data starts a worker process per concurrent task; each imports the module of the function it
runs. This module needs only numpy, so a fresh worker is ready in well under a second instead of
the ~3 s that importing torch costs (which, on a small machine, delayed a run's first batch by tens
of seconds; ``benchmarks/pretrain_input.py``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from brainjepa.preprocess import RobustStats, sample_window


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


def long_enough(n_frames: np.ndarray | int, tr: np.ndarray | float, frames: int, target_tr: float) -> np.ndarray:
    """Whether scans of ``n_frames`` at ``tr`` span a window of ``frames`` frames every ``target_tr`` seconds
    (the test ``brainjepa.preprocess.sample_window`` applies; elementwise over arrays)."""
    return (frames - 1) * target_tr <= (np.asarray(n_frames) - 1) * np.asarray(tr, dtype=np.float64) + 1e-9


def sample_windows(batch: dict[str, np.ndarray], spec: StreamSpec) -> dict[str, np.ndarray]:
    """Ray Data UDF: a block of scans -> (k, R, frames) float32 windows of one split.

    Each scan of the split gives ``windows_per_scan`` windows at random starts, fresh every epoch
    (the random start is the augmentation); masks, drawn later, are reproducible from the seed.
    The windows come out in a random order (the block's local shuffle: a shard holds tens of scans,
    and each pass visits the shards in its own order), which costs nothing here, where Ray Data's
    ``local_shuffle_buffer_size`` copies every batch through a buffer in the training process.
    Scans shorter than the window give none (``streaming.check_dataset`` counts them from the manifest).
    """
    s = spec
    subjects = [str(x) for x in batch["subject"]]
    fits = long_enough(batch["n_frames"], batch["tr"], s.frames, s.target_tr)
    keep = [
        i
        for i, sub in enumerate(subjects)
        if fits[i] and is_validation(sub, s.val_fraction, s.split_seed) == s.validation
    ]
    rng = np.random.default_rng()
    windows = np.empty((len(keep) * s.windows_per_scan, s.n_rois, s.frames), dtype=np.float32)
    slots = rng.permutation(len(windows))
    for j, i in enumerate(keep):
        n_rois, n_frames = int(batch["n_rois"][i]), int(batch["n_frames"][i])
        series = np.asarray(batch["series"][i], dtype=np.float32).reshape(n_rois, n_frames)
        for k in range(s.windows_per_scan):
            window = sample_window(series, float(batch["tr"][i]), s.target_tr, s.frames, rng)
            windows[slots[j * s.windows_per_scan + k]] = s.stats.scale(window)
    return {"series": windows}
