"""Per-scan sample preparation: temporal resampling to the model's TR, random windows, robust scaling."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class RobustStats:
    """Per-ROI median and inter-quartile range over a training cohort (shipped with every model)."""

    median: np.ndarray
    iqr: np.ndarray

    def scale(self, series: np.ndarray) -> np.ndarray:
        """(R, T) -> (series - median) / IQR, per ROI."""
        return ((series - self.median[:, None]) / self.iqr[:, None]).astype(np.float32)

    def to_dict(self) -> dict[str, list[float]]:
        return {"median": self.median.tolist(), "iqr": self.iqr.tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, list[float]]) -> RobustStats:
        return cls(np.asarray(data["median"], dtype=np.float64), np.asarray(data["iqr"], dtype=np.float64))


def robust_stats(scans: list[np.ndarray], min_iqr: float = 1e-6) -> RobustStats:
    """Per-ROI median and IQR over all frames of all ``scans`` (each (R, T))."""
    values = np.concatenate([np.asarray(s, dtype=np.float64) for s in scans], axis=1)
    q25, median, q75 = np.percentile(values, [25, 50, 75], axis=1)
    return RobustStats(median=median, iqr=np.maximum(q75 - q25, min_iqr))


def _check_long_enough(n: int, tr: float, target_tr: float, frames: int) -> float:
    """Seconds of slack between the scan's duration and the window's span (a ValueError when negative)."""
    span, duration = (frames - 1) * target_tr, (n - 1) * tr
    if span > duration + 1e-9:
        raise ValueError(
            f"scan of {n} frames at TR {tr}s lasts {duration:.1f}s, shorter than the "
            f"{frames} frames x {target_tr}s window the model needs"
        )
    return max(0.0, duration - span)


def window_at(series: np.ndarray, tr: float, target_tr: float, frames: int, start: float) -> np.ndarray:
    """``frames`` frames every ``target_tr`` seconds from ``start`` seconds, linearly interpolated from a
    scan sampled every ``tr`` seconds (the paper's keep-every-3rd-frame is the case target_tr = 3 tr)."""
    n = series.shape[1]
    times = np.minimum((start + np.arange(frames) * target_tr) / tr, n - 1)
    lo = np.floor(times).astype(np.int64)
    hi = np.minimum(lo + 1, n - 1)
    frac = (times - lo).astype(series.dtype)
    return series[:, lo] * (1 - frac) + series[:, hi] * frac


def sample_window(series: np.ndarray, tr: float, target_tr: float, frames: int, rng: np.random.Generator) -> np.ndarray:
    """A window at a uniformly random start (the pretraining augmentation)."""
    slack = _check_long_enough(series.shape[1], tr, target_tr, frames)
    return window_at(series, tr, target_tr, frames, rng.uniform(0.0, slack))


def tiling_windows(
    series: np.ndarray, tr: float, target_tr: float, frames: int, step: float | None = None
) -> np.ndarray:
    """(k, R, frames): windows covering the whole scan, starting every ``step`` seconds (default: the
    window's length, i.e. consecutive windows), the last one ending at its end (deterministic: used to embed a scan)."""
    slack = _check_long_enough(series.shape[1], tr, target_tr, frames)
    step = frames * target_tr if step is None else float(step)
    if step <= 0:
        raise ValueError(f"window step must be > 0 seconds, got {step}")
    starts = list(np.arange(0.0, slack + 1e-9, step))
    if slack - starts[-1] > 1e-9:
        starts.append(slack)
    return np.stack([window_at(series, tr, target_tr, frames, s) for s in starts])
