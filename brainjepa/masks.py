"""Spatiotemporal masking on the ROI x time-patch grid (docs/method.md, "Spatiotemporal masking").

Per sample, an observation block (a random subset of ROIs over a contiguous window of time patches,
placed anywhere, the last patch included) is the encoder's context. Three target regions, all
disjoint from it, are predicted:

* cross-ROI (alpha): ROIs outside the observed set, over a time window inside the observation window;
* cross-time (beta): observed ROIs at time patches outside the observation window;
* double-cross (gamma): unobserved ROIs at time patches outside the observation window.

Optionally (``in_block_scale``, off by default) a fourth region, in-block, takes scattered tokens of the
observation block itself out of the context: each keeps its ROI observed at other times and its time
observed in other ROIs, so predicting it can use the subject's own ROI-to-ROI relations seen in context.

Named ratio sets (``MASK_PRESETS``: ``paper``, the defaults, and ``authors``, the authors' code's
effective geometry) are selected with ``masks.preset=<name>``.

Region sizes are drawn once per batch (as I-JEPA does), so every sample of a batch has the same
token counts and nothing is truncated; positions are drawn per sample. Every draw comes from a
``numpy.random.Generator`` seeded from (seed, stream, key), the key naming the batch (e.g. its training
step and micro-batch): masks are reproducible whichever thread draws them and in whatever order, and a
resumed run draws the same masks at the same step as an uninterrupted one.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, fields
from typing import Any, Self

import numpy as np
import torch

REGIONS = ("cross_roi", "cross_time", "double_cross", "in_block")
"""Target regions, in the order of ``MaskBatch.target``; the first three are always non-empty."""
CLASSIC_REGIONS = REGIONS[:3]

MASK_PRESETS: dict[str, dict[str, Any]] = {
    # "paper" (the paper's ranges, i.e. the MaskConfig field defaults: docs/method.md) is added below the class.
    # What the authors' code (Eric-LRL/Brain-JEPA, src/masks/spatialtemporal_multiblock.py with
    # configs/ukb_vitb_ep300.yaml, batch 16) effectively trains on at 450 x 10, after it truncates every
    # sample's context and target to the batch minimum, with regions classified by position: per sample
    # ~826 context tokens (~137 ROIs x ~6.3 time patches), targets ~677 cross-ROI / ~14 cross-time /
    # ~167 double-cross. Our sampler never truncates and keeps every region non-empty; these ranges
    # give the same means within ~2% at 450 x 10 (other grids scale by fraction, not by token count).
    "authors": {
        "cross_roi_scale": (0.45, 0.6),
        "observed_roi_scale": (0.52, 0.7),
        "observed_time_scale": (0.55, 0.7),
        "cross_roi_time_scale": (0.2, 0.38),
        "cross_time_roi_scale": (0.02, 0.037),
        "double_cross_roi_scale": (0.1, 0.185),
    },
}
"""Named ``MaskConfig`` ratio sets, selected with ``masks.preset=<name>``; explicitly given fields win."""


@dataclass
class MaskConfig:
    """Mask ratios (all swept by Ray Tune). Each ``*_scale`` is a (low, high) uniform range.

    ``preset`` names an entry of :data:`MASK_PRESETS` whose ratios replace the defaults of every field
    not passed explicitly to the constructor (so ``masks.preset=authors masks.cross_roi_scale=[0.3,0.4]``
    keeps the override). ``""`` (the default) applies no preset: the defaults are the ``paper`` preset.
    """

    cross_roi_scale: tuple[float, float] = (0.45, 0.6)
    """Fraction of all ROIs in the cross-ROI target; they are left out of the observation."""
    observed_roi_scale: tuple[float, float] = (0.84, 1.0)
    """Fraction of the remaining ROIs that the observation block covers."""
    observed_time_scale: tuple[float, float] = (0.84, 1.0)
    """Fraction of time patches in the observation window (at most all but one patch)."""
    cross_roi_time_scale: tuple[float, float] = (0.2, 0.6)
    """Length of the cross-ROI target's window, as a fraction of all time patches (inside the observation window)."""
    cross_time_roi_scale: tuple[float, float] = (0.15, 0.3)
    """Fraction of observed ROIs in the cross-time target."""
    double_cross_roi_scale: tuple[float, float] = (0.15, 0.3)
    """Fraction of unobserved ROIs in the double-cross target."""
    in_block_scale: tuple[float, float] = (0.0, 0.0)
    """Fraction of the observation block's tokens moved from the context to the in-block target; (0, 0): none."""
    min_context: int = 4
    """Minimum number of context tokens per sample."""
    preset: str = ""
    """Name of a :data:`MASK_PRESETS` entry filling the fields not given explicitly; ``""``: none."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Self:
        # Record which fields the caller gave (not a dataclass field: not saved, not compared), so a
        # preset fills only the others. dataclasses.replace passes every field, so it keeps the values.
        self = super().__new__(cls)
        names = [f.name for f in fields(cls) if f.init]
        vars(self)["_explicit"] = frozenset(names[: len(args)]) | frozenset(kwargs)
        return self

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> Self:
        """The ``name`` preset; ``overrides`` (field=value) win over its ratios."""
        return cls(preset=name, **overrides)

    def __post_init__(self) -> None:
        if self.preset:
            if self.preset not in MASK_PRESETS:
                raise ValueError(f"masks.preset={self.preset!r}: expected one of {sorted(MASK_PRESETS)}")
            explicit = vars(self).get("_explicit", frozenset())
            for name, value in MASK_PRESETS[self.preset].items():
                if name not in explicit:
                    setattr(self, name, value)
        for name in RATIO_FIELDS:
            lo, hi = getattr(self, name)
            if name == "in_block_scale":
                if not 0.0 <= lo <= hi < 1.0:
                    raise ValueError(f"masks.{name}={(lo, hi)}: expected 0 <= low <= high < 1")
            elif not 0.0 < lo <= hi <= 1.0:
                raise ValueError(f"masks.{name}={(lo, hi)}: expected 0 < low <= high <= 1")
        if self.min_context < 1:
            raise ValueError(f"masks.min_context={self.min_context}: expected >= 1")


RATIO_FIELDS = tuple(f.name for f in fields(MaskConfig) if f.name.endswith("_scale"))
"""The (low, high) ratio ranges of ``MaskConfig``: what a preset sets."""
MASK_PRESETS["paper"] = {f.name: f.default for f in fields(MaskConfig) if f.name in RATIO_FIELDS}


@dataclass
class MaskBatch:
    """Token indices for a batch: ``context`` (B, Nc) and ``target`` (B, Nt), both int64.

    ``target`` holds the cross-ROI, cross-time, double-cross and in-block tokens in that order (the
    :data:`REGIONS` order); ``region_sizes`` gives how many of each (the same for every sample of the
    batch; the in-block size is 0 when ``in_block_scale`` is off).
    """

    context: np.ndarray
    target: np.ndarray
    region_sizes: tuple[int, int, int, int]

    def to_torch(self) -> dict[str, torch.Tensor]:
        return {"context_index": torch.from_numpy(self.context), "target_index": torch.from_numpy(self.target)}


@dataclass(frozen=True)
class _BatchSizes:
    n_cross_roi: int
    n_observed: int
    observed_t: int
    cross_roi_t: int
    n_cross_time: int
    n_double_cross: int


class SpatiotemporalMaskSampler:
    """Draws :class:`MaskBatch` es for an ``n_rois`` x ``n_time_patches`` token grid."""

    def __init__(self, cfg: MaskConfig, n_rois: int, n_time_patches: int) -> None:
        if n_rois < 2 or n_time_patches < 2:
            raise ValueError(
                f"spatiotemporal masking needs at least 2 ROIs and 2 time patches, got {n_rois} x {n_time_patches}"
            )
        self.cfg = cfg
        self.n_rois = n_rois
        self.n_time_patches = n_time_patches
        max_context = (n_rois - 1) * (n_time_patches - 1)
        if cfg.min_context > max_context:
            raise ValueError(
                f"masks.min_context={cfg.min_context} exceeds the largest possible context "
                f"({max_context} tokens on a {n_rois} x {n_time_patches} grid)"
            )

    def _draw_sizes(self, rng: np.random.Generator) -> _BatchSizes:
        cfg, r, p = self.cfg, self.n_rois, self.n_time_patches

        def frac(scale: tuple[float, float]) -> float:
            return float(rng.uniform(scale[0], scale[1]))

        n_cross_roi = int(np.clip(round(r * frac(cfg.cross_roi_scale)), 1, r - 1))
        n_observed = int(np.clip(round((r - n_cross_roi) * frac(cfg.observed_roi_scale)), 1, r - n_cross_roi))
        observed_t = int(np.clip(round(p * frac(cfg.observed_time_scale)), 1, p - 1))
        # enforce the minimum context: widen the observation block (ROIs first, then time)
        while n_observed * observed_t < cfg.min_context:
            if n_observed < r - n_cross_roi:
                n_observed += 1
            elif observed_t < p - 1:
                observed_t += 1
            else:  # only reachable when cross-ROI took too many ROIs: give one back
                n_cross_roi -= 1
        cross_roi_t = int(np.clip(round(p * frac(cfg.cross_roi_time_scale)), 1, observed_t))
        n_cross_time = int(np.clip(round(n_observed * frac(cfg.cross_time_roi_scale)), 1, n_observed))
        n_unobserved = r - n_observed
        n_double_cross = int(np.clip(round(n_unobserved * frac(cfg.double_cross_roi_scale)), 1, n_unobserved))
        return _BatchSizes(n_cross_roi, n_observed, observed_t, cross_roi_t, n_cross_time, n_double_cross)

    def _in_block_count(self, s: _BatchSizes, rng: np.random.Generator) -> int:
        """Tokens of the observation block moved to the in-block target; draws nothing when off.

        Capped so that the context keeps ``min_context`` tokens and one token in every observed ROI and
        every window patch (see :func:`_split_block`).
        """
        lo, hi = self.cfg.in_block_scale
        if hi <= 0.0:
            return 0  # no draw: the masks (and the RNG stream) are those of a sampler without in-block targets
        n_block = s.n_observed * s.observed_t
        cap = n_block - max(s.n_observed, s.observed_t, self.cfg.min_context)
        return int(np.clip(round(n_block * float(rng.uniform(lo, hi))), 0, max(cap, 0)))

    def sample(self, batch_size: int, rng: np.random.Generator) -> MaskBatch:
        """Draw one batch of masks."""
        s = self._draw_sizes(rng)
        r, p, b = self.n_rois, self.n_time_patches, batch_size
        rois = rng.permuted(np.tile(np.arange(r), (b, 1)), axis=1)
        cross_rois = rois[:, : s.n_cross_roi]
        observed = rois[:, s.n_cross_roi : s.n_cross_roi + s.n_observed]
        unobserved = np.concatenate([cross_rois, rois[:, s.n_cross_roi + s.n_observed :]], axis=1)
        unobserved = rng.permuted(unobserved, axis=1)

        start = rng.integers(0, p - s.observed_t + 1, size=b)
        window = start[:, None] + np.arange(s.observed_t)
        cross_start = start + rng.integers(0, s.observed_t - s.cross_roi_t + 1, size=b)
        cross_window = cross_start[:, None] + np.arange(s.cross_roi_t)
        inside = np.zeros((b, p), dtype=bool)
        np.put_along_axis(inside, window, True, axis=1)
        outside = np.nonzero(~inside)[1].reshape(b, p - s.observed_t)

        context = _tokens(observed, window, p)
        cross_roi = _tokens(cross_rois, cross_window, p)
        cross_time = _tokens(observed[:, : s.n_cross_time], outside, p)  # observed order is random
        double_cross = _tokens(unobserved[:, : s.n_double_cross], outside, p)
        # in-block draws come last: the three classic regions are the same with or without them
        n_in_block = self._in_block_count(s, rng)
        in_block = np.empty((b, 0), dtype=np.int64)
        if n_in_block:
            context, in_block = _split_block(observed, window, p, n_in_block, rng)
        parts = (cross_roi, cross_time, double_cross, in_block)
        sizes = (cross_roi.shape[1], cross_time.shape[1], double_cross.shape[1], in_block.shape[1])
        return MaskBatch(context=context, target=np.concatenate(parts, axis=1), region_sizes=sizes)


def _tokens(rois: np.ndarray, times: np.ndarray, n_time_patches: int) -> np.ndarray:
    """Sorted token indices of the (ROIs x times) rectangle of each sample: (B, |rois| * |times|)."""
    idx = rois[:, :, None] * n_time_patches + times[:, None, :]
    return np.sort(idx.reshape(idx.shape[0], -1), axis=1).astype(np.int64)


def _split_block(
    rois: np.ndarray, times: np.ndarray, n_time_patches: int, n_out: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Split each sample's (ROIs x times) block into (kept, taken out) sorted tokens, ``n_out`` taken out.

    ``max(|rois|, |times|)`` kept cells, one per row and per column in random pairs, are never taken out,
    so every ROI and every time patch of the block stays in the kept part; the other cells are taken
    out uniformly at random. Needs ``n_out <= |rois| * |times| - max(|rois|, |times|)``.
    """
    b, n_rows, n_cols = rois.shape[0], rois.shape[1], times.shape[1]
    cells = (rois[:, :, None] * n_time_patches + times[:, None, :]).reshape(b, n_rows * n_cols).astype(np.int64)
    i = np.arange(max(n_rows, n_cols))
    rows = rng.permuted(np.tile(np.arange(n_rows), (b, 1)), axis=1)[:, i % n_rows]
    cols = rng.permuted(np.tile(np.arange(n_cols), (b, 1)), axis=1)[:, i % n_cols]
    priority = rng.random((b, n_rows * n_cols))
    np.put_along_axis(priority, rows * n_cols + cols, 2.0, axis=1)  # above any draw: never taken out
    order = np.argsort(priority, axis=1)
    taken = np.take_along_axis(cells, order[:, :n_out], axis=1)
    kept = np.take_along_axis(cells, order[:, n_out:], axis=1)
    return np.sort(kept, axis=1), np.sort(taken, axis=1)


class MaskCollator:
    """Stacks a batch of (R, T) series and draws its masks from a seeded stream.

    ``masks_for(key, batch_size)`` is a pure function of (seed, stream, key): the same key gives the same
    masks in any thread and any order. ``stream`` separates independent mask streams (e.g. one per
    training worker). ``next_masks`` numbers its calls (thread-safely) and uses the call number as the key.
    """

    def __init__(self, cfg: MaskConfig, n_rois: int, n_time_patches: int, seed: int = 0, stream: int = 0):
        self.sampler = SpatiotemporalMaskSampler(cfg, n_rois, n_time_patches)
        self.seed = seed
        self.stream = stream
        self.calls = 0
        self._lock = threading.Lock()

    def masks_for(self, key: Sequence[int], batch_size: int) -> MaskBatch:
        """The masks of the batch named by ``key`` (non-negative ints, e.g. (step, micro-batch))."""
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, self.stream, *key]))
        return self.sampler.sample(batch_size, rng)

    def next_masks(self, batch_size: int) -> MaskBatch:
        with self._lock:
            call = self.calls
            self.calls += 1
        return self.masks_for((call,), batch_size)

    def __call__(self, series: list[np.ndarray] | np.ndarray | torch.Tensor) -> dict[str, torch.Tensor]:
        x = torch.as_tensor(np.stack(series) if isinstance(series, list) else series, dtype=torch.float32)
        out = self.next_masks(x.shape[0]).to_torch()
        out["series"] = x
        return out


class MaskStream:
    """``masks_for`` over a sequence of keys, drawn ``ahead`` keys in advance in one background thread,
    so that whoever consumes the masks in order (the training loop) never waits for them.

    Iterating yields ``(key, masks)`` in key order; ``close`` (or the end of a ``with`` block) stops it.
    """

    def __init__(self, collator: MaskCollator, batch_size: int, keys: Iterable[Sequence[int]], ahead: int = 2):
        self.collator, self.batch_size = collator, batch_size
        self._keys = iter(keys)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="brainjepa-masks")
        self._pending: deque[tuple[Sequence[int], Future[MaskBatch]]] = deque()
        for _ in range(max(1, ahead)):
            self._submit()

    def _submit(self) -> None:
        key = next(self._keys, None)
        if key is not None:
            self._pending.append((key, self._pool.submit(self.collator.masks_for, key, self.batch_size)))

    def __iter__(self) -> Iterator[tuple[Sequence[int], MaskBatch]]:
        return self

    def __next__(self) -> tuple[Sequence[int], MaskBatch]:
        if not self._pending:
            raise StopIteration
        key, future = self._pending.popleft()
        self._submit()
        return key, future.result()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> MaskStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def classify_targets(context: np.ndarray, target: np.ndarray, n_time_patches: int) -> np.ndarray:
    """Region of each target token, derived from the context alone.

    Returns (B, Nt) codes, the :data:`REGIONS` index: 0 cross-ROI, 1 cross-time, 2 double-cross,
    3 in-block (an observed ROI at a window patch, not in the context); -1 if the token is in the
    context itself (an overlap, which must never happen).
    """
    codes = np.empty(target.shape, dtype=np.int64)
    for i in range(context.shape[0]):
        observed_rois = np.unique(context[i] // n_time_patches)
        window = np.unique(context[i] % n_time_patches)
        roi_seen = np.isin(target[i] // n_time_patches, observed_rois)
        time_seen = np.isin(target[i] % n_time_patches, window)
        in_context = np.isin(target[i], context[i])
        codes[i] = np.select(
            [in_context, ~roi_seen & time_seen, roi_seen & ~time_seen, ~roi_seen & ~time_seen], [-1, 0, 1, 2], default=3
        )
    return codes


def mask_statistics(
    cfg: MaskConfig, n_rois: int, n_time_patches: int, batch_size: int, n_samples: int, seed: int = 0
) -> dict[str, float | int]:
    """Check the masks of ``n_samples`` samples independently of the sampler and summarise them.

    ``samples_missing_region`` counts samples lacking one of the three classic regions (the in-block
    region is optional); ``<region>_tokens_mean`` is reported for every region of :data:`REGIONS`.
    """
    collator = MaskCollator(cfg, n_rois, n_time_patches, seed=seed)
    ctx_counts, tgt_counts, region_counts = [], [], []
    overlap = missing = last_patch_seen = duplicate = 0
    drawn = 0
    while drawn < n_samples:
        b = min(batch_size, n_samples - drawn)
        masks = collator.next_masks(b)
        codes = classify_targets(masks.context, masks.target, n_time_patches)
        for i in range(b):
            ctx, tgt = masks.context[i], masks.target[i]
            overlap += int(np.intersect1d(ctx, tgt).size)
            duplicate += int(tgt.size - np.unique(tgt).size)
            per_region = [int((codes[i] == k).sum()) for k in range(len(REGIONS))]
            missing += int(min(per_region[: len(CLASSIC_REGIONS)]) == 0)  # in-block may be off
            last_patch_seen += int(np.any(ctx % n_time_patches == n_time_patches - 1))
            ctx_counts.append(ctx.size)
            tgt_counts.append(tgt.size)
            region_counts.append(per_region)
        drawn += b
    regions = np.asarray(region_counts, dtype=float)
    stats: dict[str, float | int] = {
        "samples": n_samples,
        "grid_tokens": n_rois * n_time_patches,
        "context_tokens_mean": float(np.mean(ctx_counts)),
        "context_tokens_min": int(np.min(ctx_counts)),
        "target_tokens_mean": float(np.mean(tgt_counts)),
        "overlap_tokens": overlap,
        "duplicate_target_tokens": duplicate,
        "samples_missing_region": missing,
        "last_patch_observed_fraction": last_patch_seen / n_samples,
    }
    for k, name in enumerate(REGIONS):
        stats[f"{name}_tokens_mean"] = float(regions[:, k].mean())
    return stats
