"""Spatiotemporal masks: invariants over many seeds and shapes, reproducibility, statistics."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest

from brainjepa.config import load_config, save_config
from brainjepa.local import LocalPretrainConfig, local_pretraining
from brainjepa.masks import (
    MASK_PRESETS,
    REGIONS,
    MaskBatch,
    MaskCollator,
    MaskConfig,
    SpatiotemporalMaskSampler,
    classify_targets,
    mask_statistics,
)

SHAPES = [(450, 10), (23, 6), (7, 2), (101, 3), (200, 13), (2, 2)]


@pytest.mark.parametrize("preset", ["paper", "authors"])
@pytest.mark.parametrize(("n_rois", "n_patches"), SHAPES)
def test_invariants_over_seeds(n_rois: int, n_patches: int, preset: str) -> None:
    sampler = SpatiotemporalMaskSampler(MaskConfig(min_context=1, preset=preset), n_rois, n_patches)
    last_patch_seen = 0
    for seed in range(40):
        masks = sampler.sample(5, np.random.default_rng(seed))
        ctx, tgt = masks.context, masks.target
        assert ctx.shape[0] == tgt.shape[0] == 5
        assert ctx.min() >= 0 and tgt.max() < n_rois * n_patches
        assert sum(masks.region_sizes) == tgt.shape[1]
        codes = classify_targets(ctx, tgt, n_patches)
        start = 0
        assert masks.region_sizes[3] == 0, "in-block targets are off by default"
        for region, size in enumerate(masks.region_sizes):
            assert size > 0 or region == 3, "every classic target region must be non-empty"
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


RATIO_FIELDS = [f.name for f in dataclasses.fields(MaskConfig) if f.name.endswith("_scale")]

# Effective per-sample token counts of the authors' collator (Eric-LRL/Brain-JEPA @ b1dfa93,
# src/masks/spatialtemporal_multiblock.py, MaskCollator_fmri) at 450 ROIs x 10 patches with
# configs/ukb_vitb_ep300.yaml (enc (0.84, 1), R (0.45, 0.6), T_roi (0.2, 0.6), R_roi (0.15, 0.3),
# T (0.0, 0.4), batch 16): run unmodified outside this repo for 2 x 2000 batches of 16 (batch seeds
# 0..1999 and 100000..101999, two global torch seeds), every returned (batch-min truncated) target
# token classified by position against the returned context as classify_targets does. Duplicate
# target tokens (~2.3 per sample, double-cross) are counted, as their loss does.
AUTHORS_EFFECTIVE = {"context": 826.5, "cross_roi": 677.2, "cross_time": 13.65, "double_cross": 167.0}


def test_paper_preset_is_the_defaults() -> None:
    defaults = MaskConfig()
    assert set(MASK_PRESETS["paper"]) == set(RATIO_FIELDS)
    assert dataclasses.replace(MaskConfig(preset="paper"), preset="") == defaults
    assert all(getattr(defaults, k) == v for k, v in MASK_PRESETS["paper"].items())
    assert set(MASK_PRESETS["authors"]) <= set(RATIO_FIELDS)


def test_authors_preset_matches_authors_effective_counts() -> None:
    stats = mask_statistics(MaskConfig(preset="authors"), 450, 10, batch_size=16, n_samples=800, seed=0)
    got = {"context": stats["context_tokens_mean"]}
    got |= {k: stats[f"{k}_tokens_mean"] for k in ("cross_roi", "cross_time", "double_cross")}
    for key, ref in AUTHORS_EFFECTIVE.items():
        assert got[key] == pytest.approx(ref, rel=0.1), key
    # unlike the authors' truncated masks, ours stay disjoint and never lose a region
    assert stats["overlap_tokens"] == stats["duplicate_target_tokens"] == stats["samples_missing_region"] == 0
    paper = mask_statistics(MaskConfig(), 450, 10, batch_size=16, n_samples=160, seed=0)
    assert paper["context_tokens_mean"] > 1.5 * got["context"]  # the presets really differ


def test_preset_explicit_fields_win() -> None:
    cfg = MaskConfig(cross_roi_scale=(0.3, 0.4), preset="authors")
    assert cfg.cross_roi_scale == (0.3, 0.4)
    assert cfg.observed_time_scale == MASK_PRESETS["authors"]["observed_time_scale"]
    assert MaskConfig((0.3, 0.4), preset="authors") == cfg  # positional fields count as given
    assert MaskConfig.from_preset("authors", cross_roi_scale=(0.3, 0.4)) == cfg
    # even a value equal to the default wins over the preset
    assert MaskConfig(preset="authors", observed_time_scale=(0.84, 1.0)).observed_time_scale == (0.84, 1.0)
    assert copy.deepcopy(cfg) == cfg
    assert dataclasses.replace(cfg, min_context=2).cross_roi_scale == (0.3, 0.4)


def test_preset_from_yaml_and_overrides(tmp_path: Path) -> None:
    cfg = load_config(LocalPretrainConfig, None, ["masks.preset=authors"])
    assert cfg.masks == MaskConfig(preset="authors")
    assert cfg.masks.observed_roi_scale == MASK_PRESETS["authors"]["observed_roi_scale"]

    path = tmp_path / "run.yaml"
    path.write_text("masks:\n  preset: authors\n  double_cross_roi_scale: [0.2, 0.3]\n")
    cfg = load_config(LocalPretrainConfig, path, ["masks.cross_time_roi_scale=[0.1, 0.2]"])
    assert cfg.masks.preset == "authors"
    assert cfg.masks.double_cross_roi_scale == (0.2, 0.3)  # from the file
    assert cfg.masks.cross_time_roi_scale == (0.1, 0.2)  # from the command line
    assert cfg.masks.observed_time_scale == MASK_PRESETS["authors"]["observed_time_scale"]

    # an override may also switch the file's preset; its fields still win
    switched = load_config(LocalPretrainConfig, path, ["masks.preset=paper"])
    assert switched.masks.observed_time_scale == MaskConfig().observed_time_scale
    assert switched.masks.double_cross_roi_scale == (0.2, 0.3)

    save_config(cfg, tmp_path / "resolved.yaml")
    assert load_config(LocalPretrainConfig, tmp_path / "resolved.yaml") == cfg


def test_unknown_preset_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"masks\.preset='bogus'.*'authors'.*'paper'"):
        MaskConfig(preset="bogus")
    with pytest.raises(ValueError, match="authors"):
        load_config(LocalPretrainConfig, None, ["masks.preset=bogus"])


def test_keyed_masks_do_not_depend_on_thread_or_order() -> None:
    """The same key gives the same masks whichever thread draws them and in whatever order; keys differ."""
    from concurrent.futures import ThreadPoolExecutor

    collator = MaskCollator(MaskConfig(), 60, 8, seed=3, stream=1)
    keys = [(step, micro) for step in range(1, 9) for micro in range(2)]
    serial = {k: collator.masks_for(k, 4) for k in keys}
    with ThreadPoolExecutor(4) as pool:
        threaded = dict(zip(keys[::-1], pool.map(lambda k: collator.masks_for(k, 4), keys[::-1])))
    for k in keys:
        assert np.array_equal(serial[k].context, threaded[k].context)
        assert np.array_equal(serial[k].target, threaded[k].target)
    assert len({serial[k].context.tobytes() + serial[k].target.tobytes() for k in keys}) == len(keys)
    other = MaskCollator(MaskConfig(), 60, 8, seed=3, stream=2).masks_for((1, 0), 4)
    assert not np.array_equal(other.target, serial[(1, 0)].target)


def test_next_masks_never_repeat_across_threads() -> None:
    """next_masks numbers its calls under a lock: concurrent callers never get the same masks."""
    from concurrent.futures import ThreadPoolExecutor

    collator = MaskCollator(MaskConfig(), 60, 8, seed=0)
    with ThreadPoolExecutor(8) as pool:
        drawn = list(pool.map(lambda _: collator.next_masks(4), range(64)))
    assert collator.calls == 64
    assert len({m.context.tobytes() + m.target.tobytes() for m in drawn}) == 64
    expected = {collator.masks_for((i,), 4).target.tobytes() for i in range(64)}
    assert {m.target.tobytes() for m in drawn} == expected


def test_resumed_stream_draws_the_uninterrupted_runs_masks() -> None:
    """The training stream keys masks by (step, micro-batch): resuming at step 5 gives steps 6.. the masks
    the uninterrupted run used there, although the collate threads run out of order."""
    import torch

    from brainjepa.model import ModelConfig
    from brainjepa_platform.train.loop import step_keys
    from brainjepa_platform.train.streaming import MaskingCollate

    model = ModelConfig(size="tiny", n_rois=12, frames=32, patch=8)
    collate = MaskingCollate(MaskConfig(), model, seed=7, stream=1)

    def run(after_step: int, n: int) -> list[dict]:
        collated = (collate({"series": np.zeros((3, 12, 32), np.float32)}) for _ in range(n))
        return list(collate.masked(collated, step_keys(after_step, 2), batch_size=3, ahead=4))

    full, resumed = run(0, 16), run(5, 6)  # 2 micro-batches per step: steps 1-8 vs 6-8
    for a, b in zip(full[10:], resumed):
        assert torch.equal(a["context_index"], b["context_index"]) and torch.equal(a["target_index"], b["target_index"])
        assert a["region_sizes"] == b["region_sizes"] and a["series"].shape == (3, 12, 32)
    assert not torch.equal(full[0]["target_index"], full[2]["target_index"])


def test_collate_copies_read_only_arrow_views() -> None:
    """Ray Data hands the collate function read-only numpy views of Arrow memory: the float32 tensor it makes is
    a writable copy (torch must not wrap a read-only buffer), for Ray Data's class-based collate interface."""
    import torch
    from ray.data.collate_fn import NumpyBatchCollateFn

    from brainjepa.model import ModelConfig
    from brainjepa_platform.train.streaming import MaskingCollate

    collate = MaskingCollate(MaskConfig(), ModelConfig(size="tiny", n_rois=12, frames=32, patch=8), seed=0, stream=0)
    series = np.arange(2 * 12 * 32, dtype=np.float32).reshape(2, 12, 32)
    series.flags.writeable = False
    out = collate({"series": series})["series"]
    out[0, 0, 0] = -1.0
    assert series[0, 0, 0] == 0.0 and out.dtype == torch.float32 and isinstance(collate, NumpyBatchCollateFn)


# -- in-block targets (masks.in_block_scale) ------------------------------------------------------------

IN_BLOCK = (0.2, 0.3)
DEFAULT_MASKS = Path(__file__).parent / "data" / "masks" / "default_masks.json"


def _regions(masks: MaskBatch) -> list[np.ndarray]:
    """The target split into its regions, in REGIONS order."""
    return np.split(masks.target, np.cumsum(masks.region_sizes)[:-1], axis=1)


def test_default_masks_are_those_drawn_before_in_block_targets() -> None:
    """Off by default, bit for bit: the recorded pre-in-block masks come back, also with (0, 0) given explicitly."""
    cases = json.loads(DEFAULT_MASKS.read_text())["cases"]
    for case in cases:
        grid = (case["n_rois"], case["n_time_patches"])
        for cfg in (MaskConfig(preset=case["preset"]), MaskConfig(preset=case["preset"], in_block_scale=(0.0, 0.0))):
            masks = MaskCollator(cfg, *grid, seed=case["seed"], stream=case["stream"]).masks_for(
                case["key"], case["batch_size"]
            )
            assert np.array_equal(masks.context, case["context"])
            assert np.array_equal(masks.target, case["target"])
            assert masks.region_sizes == (*case["region_sizes"], 0)


@pytest.mark.parametrize(("n_rois", "n_patches"), [(450, 10), (23, 6), (40, 3), (7, 2)])
def test_in_block_targets_are_taken_from_the_observation_block(n_rois: int, n_patches: int) -> None:
    off = SpatiotemporalMaskSampler(MaskConfig(min_context=1), n_rois, n_patches)
    on = SpatiotemporalMaskSampler(MaskConfig(min_context=1, in_block_scale=IN_BLOCK), n_rois, n_patches)
    drawn = 0
    for seed in range(15):
        plain, masks = off.sample(4, np.random.default_rng(seed)), on.sample(4, np.random.default_rng(seed))
        *classic, in_block = _regions(masks)
        for got, want in zip(classic, _regions(plain)[:3]):  # in-block draws come last: the rest is unchanged
            assert np.array_equal(got, want)
        k = masks.region_sizes[3]
        drawn += k
        assert masks.context.shape[1] == plain.context.shape[1] - k
        codes = classify_targets(masks.context, masks.target, n_patches)
        assert np.all(codes[:, masks.target.shape[1] - k :] == 3) and np.all(codes[:, : masks.target.shape[1] - k] < 3)
        for i in range(4):
            block = plain.context[i]  # the whole observation block: observed ROIs x window
            assert np.all(np.isin(in_block[i], block)) and np.array_equal(
                np.union1d(masks.context[i], in_block[i]), block
            )
            assert np.unique(masks.target[i]).size == masks.target.shape[1]
            assert np.intersect1d(masks.context[i], masks.target[i]).size == 0
            # every observed ROI and window patch keeps a context token
            assert np.array_equal(np.unique(masks.context[i] // n_patches), np.unique(block // n_patches))
            assert np.array_equal(np.unique(masks.context[i] % n_patches), np.unique(block % n_patches))
        n_block = plain.context.shape[1]
        rows, cols = np.unique(plain.context[0] // n_patches).size, np.unique(plain.context[0] % n_patches).size
        cap = max(n_block - max(rows, cols, 1), 0)
        assert k <= cap
        assert k == cap or IN_BLOCK[0] * n_block - 0.5 <= k <= IN_BLOCK[1] * n_block + 0.5
    # with 2 patches the window is 1 patch wide: a token taken out would leave its ROI unobserved
    assert (drawn > 0) == (n_patches > 2)


def test_in_block_keeps_min_context_on_a_tiny_grid() -> None:
    for min_context, grid in ((1, (4, 3)), (4, (6, 4)), (20, (10, 6))):
        cfg = MaskConfig(min_context=min_context, in_block_scale=(0.9, 0.95))
        sampler = SpatiotemporalMaskSampler(cfg, *grid)
        taken = 0
        for seed in range(20):
            masks = sampler.sample(3, np.random.default_rng(seed))
            taken += masks.region_sizes[3]
            assert masks.context.shape[1] >= min_context
            assert np.all(classify_targets(masks.context, masks.target, grid[1]) >= 0)
        assert taken > 0, grid


@pytest.mark.parametrize("scale", [(-0.1, 0.2), (0.3, 0.2), (0.5, 1.0)])
def test_in_block_scale_is_checked(scale: tuple[float, float]) -> None:
    with pytest.raises(ValueError, match=r"masks\.in_block_scale=.*expected 0 <= low <= high < 1"):
        MaskConfig(in_block_scale=scale)


def test_in_block_scale_from_overrides_and_presets() -> None:
    cfg = load_config(LocalPretrainConfig, None, ["masks.preset=authors", "masks.in_block_scale=[0.2,0.3]"])
    assert (
        cfg.masks.in_block_scale == IN_BLOCK and cfg.masks.cross_roi_scale == MASK_PRESETS["authors"]["cross_roi_scale"]
    )
    assert MaskConfig(preset="paper").in_block_scale == MaskConfig(preset="authors").in_block_scale == (0.0, 0.0)
    MaskConfig(in_block_scale=(0.0, 0.5))  # a range starting at 0 is allowed


def test_statistics_report_in_block_targets() -> None:
    on = mask_statistics(MaskConfig(in_block_scale=IN_BLOCK), 60, 8, batch_size=8, n_samples=32, seed=0)
    off = mask_statistics(MaskConfig(), 60, 8, batch_size=8, n_samples=32, seed=0)
    assert set(on) == set(off) >= {f"{name}_tokens_mean" for name in REGIONS}
    assert on["overlap_tokens"] == on["duplicate_target_tokens"] == on["samples_missing_region"] == 0
    assert off["in_block_tokens_mean"] == 0 < on["in_block_tokens_mean"]
    assert on["context_tokens_mean"] == pytest.approx(off["context_tokens_mean"] - on["in_block_tokens_mean"])
    for name in REGIONS[:3]:
        assert on[f"{name}_tokens_mean"] == off[f"{name}_tokens_mean"]


@pytest.mark.parametrize("in_block", [IN_BLOCK, (0.0, 0.0)])
def test_jepa_step_with_in_block_targets(in_block: tuple[float, float]) -> None:
    cfg = LocalPretrainConfig(steps=2, subjects=6, batch_size=2, masks=MaskConfig(in_block_scale=in_block))
    for _, metrics in local_pretraining(cfg):
        assert math.isfinite(metrics["loss"]) and not any(math.isnan(v) for v in metrics.values())
        assert {"l1_cross_roi", "l1_cross_time", "l1_double_cross"} <= set(metrics)
        assert ("l1_in_block" in metrics) == (in_block != (0.0, 0.0))


def test_mask_plot_shows_in_block_targets(tmp_path: Path) -> None:
    from brainjepa_platform.plots import MASK_COLOURS, mask_grid, plot_masks

    masks = MaskCollator(MaskConfig(in_block_scale=IN_BLOCK), 30, 6, seed=0).next_masks(3)
    grid = mask_grid(masks, 1, 30, 6)
    assert np.array_equal(np.sort(np.flatnonzero(grid == 5)), _regions(masks)[3][1])
    assert len(MASK_COLOURS) == 6
    path = plot_masks(masks, 30, 6, tmp_path / "masks.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
