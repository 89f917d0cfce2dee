"""Learning monitors, attention options and the copy objective (docs/learning.md)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from brainjepa.config import load_config
from brainjepa.fingerprint import differential_identifiability, identifiability_parts
from brainjepa.jepa import BrainJEPA, PretrainEngine, parameter_groups
from brainjepa.learnability import attention_graph, scan_windows, token_correlation, twin_cohort
from brainjepa.local import LocalPretrainConfig, local_pretraining, run_local_pretraining
from brainjepa.masks import MaskCollator, MaskConfig
from brainjepa.model import BrainEncoder, ModelConfig
from brainjepa.monitors import LEARNING_MONITORS, PositionFloor
from brainjepa.pretext import PretextConfig, regularized_rows, regularizer_loss, roi_centred_tokens
from brainjepa.schedules import OptimConfig


def test_position_floor_is_out_of_sample_and_reaches_the_noise_level() -> None:
    g = torch.Generator().manual_seed(0)
    n_tokens, dim = 40, 8
    position_part = torch.randn(n_tokens, dim, generator=g) * 3
    floor = PositionFloor(n_tokens, decay=0.99)
    index = torch.randint(0, n_tokens, (16, 12), generator=g)
    assert floor.prediction(index) is None  # nothing seen yet: no in-sample floor
    for _ in range(200):
        index = torch.randint(0, n_tokens, (16, 12), generator=g)
        targets = position_part[index] + 0.5 * torch.randn(16, 12, dim, generator=g)
        floor.update(targets, index)
    index = torch.randint(0, n_tokens, (16, 12), generator=g)
    fresh = position_part[index] + 0.5 * torch.randn(16, 12, dim, generator=g)
    mse = F.mse_loss(floor.prediction(index), fresh).item()
    assert mse == pytest.approx(0.25, rel=0.15)  # the noise variance: the position part is learned
    # a position never seen gets the mean over all positions
    unseen = PositionFloor(4)
    unseen.update(torch.ones(1, 2, 3), torch.tensor([[0, 1]]))
    torch.testing.assert_close(unseen.prediction(torch.tensor([[3]])), torch.ones(1, 1, 3))


def test_qk_norm_temperature_is_learned_and_not_weight_decayed(tiny_cfg, tiny_gradients) -> None:
    tiny_cfg.qk_norm, tiny_cfg.qk_temperature = True, 12.0
    model = BrainJEPA(tiny_cfg, tiny_gradients)
    temperatures = [p for n, p in model.student.named_parameters() if n.endswith("attn.temperature")]
    assert len(temperatures) == tiny_cfg.depth + tiny_cfg.predictor_depth
    assert all(torch.equal(t, torch.full((t.numel(),), 12.0)) for t in temperatures)
    no_decay = {id(p) for p in parameter_groups(model.student)[1]["params"]}
    assert all(id(t) in no_decay for t in temperatures)
    masks = MaskCollator(MaskConfig(), tiny_cfg.n_rois, tiny_cfg.n_time_patches, seed=0).next_masks(2).to_torch()
    series = torch.randn(2, tiny_cfg.n_rois, tiny_cfg.frames)
    _, prediction = model.student(series, masks["context_index"], masks["target_index"])
    prediction.square().mean().backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in temperatures)


def test_qk_norm_logits_are_cosines_times_temperature(tiny_cfg, tiny_gradients) -> None:
    """Attention can be sharp from the start: logit spread is set by the temperature, not the width."""
    spreads = {}
    for qk_norm in (False, True):
        torch.manual_seed(0)
        tiny_cfg.qk_norm = qk_norm
        encoder = BrainEncoder(tiny_cfg, tiny_gradients).eval()
        maps = encoder.attention_maps(torch.randn(2, tiny_cfg.n_rois, tiny_cfg.frames))
        spreads[qk_norm] = float(maps[0].max(dim=-1).values.mean() * tiny_cfg.n_tokens)
    assert spreads[False] < 2.0  # near uniform: the largest weight is < 2x chance
    assert spreads[True] > 5.0 * spreads[False]


def test_fan_in_init_scales_with_width() -> None:
    for dim in (64, 256):
        cfg = ModelConfig(size="tiny", dim=dim, heads=4, n_rois=6, frames=16, patch=8, n_gradients=2, init="fan_in")
        encoder = BrainEncoder(cfg, torch.randn(6, 2))
        assert encoder.blocks[0].attn.qkv.weight.std().item() == pytest.approx(dim**-0.5, rel=0.1)
        # residual projections keep the depth rescale
        assert encoder.blocks[1].mlp.fc2.weight.std().item() == pytest.approx((4 * dim) ** -0.5 / 2, rel=0.1)
    with pytest.raises(ValueError, match="model.init"):
        ModelConfig(size="tiny", init="xavier")


def test_copy_objective_targets_the_normalised_patch_and_skips_the_ema() -> None:
    cfg = ModelConfig(size="tiny", n_rois=6, frames=16, patch=8, n_gradients=2)
    model = BrainJEPA(cfg, torch.randn(6, 2), PretextConfig(target="copy"))
    series = torch.randn(3, 6, 16)
    index = torch.tensor([[0, 5, 11]] * 3)
    raw, targets = model.targets(series, index)
    patches = series.reshape(3, 12, 8)
    torch.testing.assert_close(raw[:, 1], patches[:, 5])
    torch.testing.assert_close(targets, F.layer_norm(raw, (8,)))
    masks = MaskCollator(MaskConfig(), 6, 2, seed=0).next_masks(3).to_torch()
    before = [p.clone() for p in model.target_encoder.parameters()]
    engine = PretrainEngine(model, OptimConfig(), total_steps=2)
    metrics = engine.train_step([{"series": series, **masks}])
    assert all(torch.equal(a, b) for a, b in zip(before, model.target_encoder.parameters()))
    assert math.isfinite(metrics["loss"])


def test_token_correlation_is_the_fc_of_the_tokens() -> None:
    rng = np.random.default_rng(0)
    tokens = rng.normal(size=(5, 7, 3))  # (ROIs, time, dim)
    rows, cols = np.triu_indices(5, k=1)
    centred = (tokens - tokens.mean(axis=1, keepdims=True)).reshape(5, -1)
    np.testing.assert_allclose(token_correlation(tokens), np.corrcoef(centred)[rows, cols], atol=1e-12)
    np.testing.assert_allclose(
        token_correlation(tokens, over_time=False), np.corrcoef(tokens.mean(axis=1))[rows, cols], atol=1e-12
    )
    # one feature per token: exactly the FC of the series; a constant ROI correlates 0
    series = rng.normal(size=(4, 50))
    series[3] = 2.0
    full = np.zeros((4, 4))
    full[np.triu_indices(4, k=1)] = token_correlation(series[:, :, None])
    upper3 = np.triu_indices(3, k=1)
    np.testing.assert_allclose(full[:3, :3][upper3], np.corrcoef(series[:3])[upper3], atol=1e-12)
    np.testing.assert_array_equal(full[:3, 3], 0.0)


def test_attention_graph_is_each_rois_share_of_attention_over_the_scan() -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(size="tiny", n_rois=5, frames=16, patch=4, n_gradients=2, qk_norm=True, init="fan_in")
    encoder = BrainEncoder(cfg, torch.randn(5, 2))
    scan = np.random.default_rng(0).standard_normal((5, 48))  # three 16-frame windows at TR 2
    (graph,) = attention_graph(encoder, [scan], [2.0], 2.0, batch_size=2)
    np.testing.assert_allclose(graph.sum(axis=1), 1.0, atol=1e-9)
    # brute force: token n is ROI n // P at patch n % P
    windows = scan_windows(scan, 2.0, 2.0, cfg.frames)
    maps = encoder.attention_maps(windows)
    p = cfg.n_time_patches
    expected = np.zeros((5, 5))
    for layer in maps:
        w = layer.double().mean(dim=(0, 1)).numpy()  # over windows and heads
        for n in range(5 * p):
            for m in range(5 * p):
                expected[n // p, m // p] += w[n, m] / p
    np.testing.assert_allclose(graph, expected / len(maps), atol=1e-9)


def test_differential_identifiability_on_a_hand_case() -> None:
    features = np.array([[1.0, 0, 0], [0, 1, 0], [1, 0.1, 0], [0, 1, 0.1]])  # subjects 0, 1; sessions 0, 0, 1, 1
    subject, session = np.array([0, 1, 0, 1]), np.array([0, 0, 1, 1])
    f = features - features.mean(axis=1, keepdims=True)
    c = np.corrcoef(f)
    expected = (c[0, 2] + c[1, 3]) / 2 - (c[0, 3] + c[1, 2]) / 2
    assert differential_identifiability(features, subject, session) == pytest.approx(expected)
    assert expected > 1.0  # same subject correlates ~1, the other ~-0.5
    same_subject, other_subjects = identifiability_parts(features, subject, session)
    assert same_subject == pytest.approx((c[0, 2] + c[1, 3]) / 2)
    assert other_subjects == pytest.approx((c[0, 3] + c[1, 2]) / 2)


def test_pretext_config_is_checked() -> None:
    with pytest.raises(ValueError, match="reg_weight"):
        PretextConfig(regularizer="sigreg")
    with pytest.raises(ValueError, match="reg_weight"):
        PretextConfig(reg_weight=-1.0)


def test_learning_monitors_on_monitored_steps_only() -> None:
    cfg = LocalPretrainConfig(steps=6, subjects=8, batch_size=4, monitor_every=3)
    _, history = run_local_pretraining(cfg)
    monitored = [int(m["step"]) for m in history if "context_reliance" in m]
    assert monitored == [1, 3, 6]
    later = history[-1]
    assert set(LEARNING_MONITORS) <= set(later)
    assert later["loss_over_floor"] == pytest.approx(later["loss"] / later["floor"])
    assert all(math.isfinite(later[k]) for k in LEARNING_MONITORS)


@pytest.mark.parametrize(
    ("regularizer", "reg_on", "logged"),
    [
        ("sigreg", "tokens", {"sigreg"}),
        ("vicreg", "tokens", {"vicreg_variance", "vicreg_covariance"}),
        ("vicreg", "roi_centred", {"vicreg_variance", "vicreg_covariance"}),
    ],
)
def test_regularizer_enters_the_step(regularizer: str, reg_on: str, logged: set[str]) -> None:
    """The weighted regulariser changes the student's update and is logged."""
    cfg = ModelConfig(size="tiny", n_rois=8, frames=16, patch=8, n_gradients=2)
    masks = MaskCollator(MaskConfig(), 8, 2, seed=0).next_masks(6).to_torch()
    batch = {"series": torch.randn(6, 8, 16, generator=torch.Generator().manual_seed(0)), **masks}
    updated = {}
    for weight in (0.0, 1.0):
        torch.manual_seed(0)
        pretext = PretextConfig(regularizer=regularizer if weight else "none", reg_weight=weight, reg_on=reg_on)
        engine = PretrainEngine(BrainJEPA(cfg, torch.randn(8, 2), pretext), OptimConfig(), total_steps=2)
        metrics = engine.train_step([batch])
        assert logged <= set(metrics) if weight else not logged & set(metrics)
        updated[weight] = engine.model.student.encoder.blocks[0].attn.qkv.weight.clone()
    assert not torch.allclose(updated[0.0], updated[1.0])


def test_roi_centred_rows_remove_what_the_rois_share_at_each_time() -> None:
    """Each token minus its sample's mean context token at the same time patch (brute force), and only that.

    Tokens that are the same for every ROI at a time (an encoder passing only the global signal) keep their
    variance across the batch, so VICReg on ``tokens`` sees nothing wrong; on ``roi_centred`` rows they are
    zero and the variance hinge is at its maximum.
    """
    gen = torch.Generator().manual_seed(0)
    n_time_patches, batch, dim = 4, 3, 5
    index = torch.stack([torch.randperm(6 * n_time_patches, generator=gen)[:10] for _ in range(batch)])
    context = torch.randn(batch, 10, dim, generator=gen)
    centred = roi_centred_tokens(context, index, n_time_patches)
    for b in range(batch):
        for n in range(10):
            same_time = index[b] % n_time_patches == index[b, n] % n_time_patches
            assert torch.allclose(centred[b, n], context[b, n] - context[b, same_time].mean(0), atol=1e-6)
    per_time = torch.randn(batch, n_time_patches, dim, generator=gen)
    shared = per_time[torch.arange(batch)[:, None], index % n_time_patches]  # every ROI's token = its time's
    as_tokens = PretextConfig(regularizer="vicreg", reg_weight=1.0)
    as_centred = PretextConfig(regularizer="vicreg", reg_weight=1.0, reg_on="roi_centred")
    assert regularizer_loss(shared, as_tokens)[1]["vicreg_variance"] < 0.5
    rows = regularized_rows(shared, as_centred, index, n_time_patches)
    assert rows.shape == (batch * 10, dim) and rows.abs().max() < 1e-6
    assert regularizer_loss(shared, as_centred, None, index, n_time_patches)[1]["vicreg_variance"] > 0.98
    with pytest.raises(ValueError, match="roi_centred needs"):
        regularized_rows(shared, as_centred)


@pytest.mark.slow
def test_copy_task_is_learned_with_qk_norm_and_fan_in_init() -> None:
    """The architecture can route information from its context (docs/learning.md, copy table).

    Twin cohort, tiny model, seed 0: with QK-normalisation and fan-in init the student gets well below the
    position-only floor and relies on its context. Half the benchmark's frames (32) at twice its learning
    rate: 0.63 of the time, and it passes at seeds 0, 1 and 2 (steps 650, 600, 475; the benchmark's
    settings pass seeds 0 and 2 only), while the authors' recipe stays on the floor (docs/learning.md).
    Stops at the first monitored step past the thresholds.
    """
    cohort = twin_cohort(64, 32, n_frames=(64, 96), tr=(1.0, 1.6), seed=0)
    cfg = load_config(
        LocalPretrainConfig,
        None,
        [
            "model.size=tiny",
            "model.n_rois=32",
            "model.frames=32",
            "model.patch=8",
            "model.n_gradients=8",
            "model.qk_norm=true",
            "model.init=fan_in",
            "optim.lr=2e-3",
            "optim.start_lr=2e-4",
            "optim.loss=l2",
            "pretext.target=copy",
            "steps=1000",
            "monitor_every=25",
            "seed=0",
        ],
    )
    learned = None
    for _, metrics in local_pretraining(cfg, cohort):
        if metrics.get("loss_over_floor", 1.0) < 0.85 and metrics["context_reliance"] > 0.1:
            learned = metrics
            break
    assert learned is not None, "the copy task was not learned in 1,000 steps"
