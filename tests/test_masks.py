"""Spatiotemporal masks: invariants over many seeds and shapes, reproducibility, statistics."""

from __future__ import annotations

import numpy as np
import pytest

from brainjepa.masks import (
    MaskCollator,
    MaskConfig,
    SpatiotemporalMaskSampler,
    classify_targets,
    mask_statistics,
)

SHAPES = [(450, 10), (23, 6), (7, 2), (101, 3), (200, 13), (2, 2)]


@pytest.mark.parametrize(("n_rois", "n_patches"), SHAPES)
def test_invariants_over_seeds(n_rois: int, n_patches: int) -> None:
    sampler = SpatiotemporalMaskSampler(MaskConfig(min_context=1), n_rois, n_patches)
    last_patch_seen = 0
    for seed in range(40):
        masks = sampler.sample(5, np.random.default_rng(seed))
        ctx, tgt = masks.context, masks.target
        assert ctx.shape[0] == tgt.shape[0] == 5
        assert ctx.min() >= 0 and tgt.max() < n_rois * n_patches
        assert sum(masks.region_sizes) == tgt.shape[1]
        codes = classify_targets(ctx, tgt, n_patches)
        start = 0
        for region, size in enumerate(masks.region_sizes):
            assert size > 0, "every target region must be non-empty"
            # the region each token was generated for is the region its position implies
            assert np.all(codes[:, start : start + size] == region)
            start += size
        for i in range(5):
            assert np.intersect1d(ctx[i], tgt[i]).size == 0
            assert np.unique(tgt[i]).size == tgt.shape[1]
            assert np.unique(ctx[i]).size == ctx.shape[1]
            window = np.unique(ctx[i] % n_patches)
            assert np.all(np.diff(window) == 1), "observation window must be contiguous in time"
            last_patch_seen += int(window[-1] == n_patches - 1)
    assert last_patch_seen > 0


def test_min_context_enforced() -> None:
    cfg = MaskConfig(observed_roi_scale=(0.01, 0.02), observed_time_scale=(0.1, 0.1), min_context=60)
    sampler = SpatiotemporalMaskSampler(cfg, 50, 8)
    for seed in range(20):
        assert sampler.sample(3, np.random.default_rng(seed)).context.shape[1] >= 60
    with pytest.raises(ValueError, match="min_context"):
        SpatiotemporalMaskSampler(MaskConfig(min_context=100), 10, 4)


def test_reproducible_streams() -> None:
    a = MaskCollator(MaskConfig(), 60, 8, seed=3)
    b = MaskCollator(MaskConfig(), 60, 8, seed=3)
    c = MaskCollator(MaskConfig(), 60, 8, seed=3, stream=1)
    for _ in range(3):
        ma, mb, mc = a.next_masks(4), b.next_masks(4), c.next_masks(4)
        assert np.array_equal(ma.context, mb.context) and np.array_equal(ma.target, mb.target)
    assert not np.array_equal(ma.context, mc.context) or not np.array_equal(ma.target, mc.target)


def test_sizes_vary_between_batches_but_not_within() -> None:
    collator = MaskCollator(MaskConfig(), 450, 10, seed=0)
    shapes = {collator.next_masks(16).context.shape for _ in range(10)}
    assert len(shapes) > 1  # region sizes are drawn per batch
    assert all(s[0] == 16 for s in shapes)


def test_collator_stacks_series() -> None:
    collator = MaskCollator(MaskConfig(), 12, 4, seed=0)
    out = collator([np.zeros((12, 32), dtype=np.float32)] * 3)
    assert out["series"].shape == (3, 12, 32)
    assert out["context_index"].shape[0] == 3


def test_statistics_at_paper_shape() -> None:
    stats = mask_statistics(MaskConfig(), 450, 10, batch_size=16, n_samples=64, seed=0)
    assert stats["overlap_tokens"] == 0
    assert stats["samples_missing_region"] == 0
    assert stats["duplicate_target_tokens"] == 0
    assert 0 < stats["last_patch_observed_fraction"] < 1
    assert stats["context_tokens_min"] >= 4
    assert stats["context_tokens_mean"] + stats["target_tokens_mean"] < 4500


def test_bad_shapes_and_ratios() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        SpatiotemporalMaskSampler(MaskConfig(), 10, 1)
    with pytest.raises(ValueError, match="observed_time_scale"):
        MaskConfig(observed_time_scale=(0.0, 0.5))
