"""Encoder, predictor and positional embeddings."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from brainjepa.flops import encoder_flops, predictor_flops
from brainjepa.jepa import BrainJEPA, jepa_loss
from brainjepa.masks import MaskCollator, MaskConfig
from brainjepa.model import BrainEncoder, ModelConfig, Predictor, count_parameters
from brainjepa.monitors import attention_share
from brainjepa.positional import GradientPositionalEmbedding, sincos_1d


@pytest.mark.parametrize(("size", "expected"), [("small", 21.3e6), ("base", 85.1e6), ("large", 302e6)])
def test_encoder_parameter_counts_match_paper(size: str, expected: float) -> None:
    cfg = ModelConfig(size=size, n_rois=450, frames=160, patch=16, n_gradients=30)
    with torch.device("meta"):
        encoder = BrainEncoder(cfg, torch.zeros(450, 30))
    assert abs(count_parameters(encoder) - expected) / expected < 0.02


def test_presets_and_predictor_defaults() -> None:
    cfg = ModelConfig(size="base")
    assert (cfg.dim, cfg.depth, cfg.heads) == (768, 12, 12)
    assert (cfg.predictor_dim, cfg.predictor_depth) == (384, 6)
    with pytest.raises(ValueError, match="multiple"):
        ModelConfig(frames=100, patch=16)


def test_gradient_positional_embedding_layout() -> None:
    grads = torch.randn(7, 4)
    pe = GradientPositionalEmbedding(grads, n_time_patches=5, dim=16)
    table = pe()
    assert table.shape == (35, 16)
    # first half: sin-cos of the time patch, identical for every ROI; token = roi * P + t
    time_code = sincos_1d(8, torch.arange(5).float())
    for roi in range(7):
        torch.testing.assert_close(table[roi * 5 : roi * 5 + 5, :8], time_code)
    # second half: one code per ROI, global min-max scaled to [-1, 1]
    roi_part = table[:, 8:]
    assert roi_part.min().item() == pytest.approx(-1.0) and roi_part.max().item() == pytest.approx(1.0)
    assert torch.equal(roi_part[0], roi_part[4])
    assert not torch.equal(roi_part[0], roi_part[5])


def test_encoder_encodes_only_given_tokens(tiny_cfg, tiny_gradients) -> None:
    torch.manual_seed(0)
    enc = BrainEncoder(tiny_cfg, tiny_gradients).eval()
    x = torch.randn(3, tiny_cfg.n_rois, tiny_cfg.frames)
    full = enc(x)
    assert full.shape == (3, tiny_cfg.n_tokens, tiny_cfg.dim)
    every = torch.arange(tiny_cfg.n_tokens).expand(3, -1)
    torch.testing.assert_close(enc(x, every), full)
    some = torch.tensor([[0, 5, 9], [1, 2, 3], [40, 41, 100]])
    assert enc(x, some).shape == (3, 3, tiny_cfg.dim)


def test_data_is_not_drowned_by_the_positional_code_at_init(tiny_cfg, tiny_gradients) -> None:
    """Robust-scaled input (unit scale) must move the tokens about as much as the position does."""
    torch.manual_seed(0)
    encoder = BrainEncoder(tiny_cfg, tiny_gradients)
    series = torch.randn(16, tiny_cfg.n_rois, tiny_cfg.frames)
    data_part = encoder.patch_embed(series.reshape(16, tiny_cfg.n_tokens, tiny_cfg.patch))
    assert data_part.std() > 0.3 * encoder.pos_embed().std()
    with torch.no_grad():
        tokens = encoder(series)
    across_samples = tokens.var(dim=0).mean()
    across_positions = tokens.mean(dim=0).var(dim=0).mean()
    assert across_samples > 0.5 * across_positions


@pytest.mark.parametrize("qk_norm", [False, True])
def test_attention_maps_are_the_weights_the_encoder_uses(tiny_cfg, tiny_gradients, qk_norm: bool) -> None:
    torch.manual_seed(0)
    tiny_cfg.qk_norm = qk_norm
    encoder = BrainEncoder(tiny_cfg, tiny_gradients).eval()
    series = torch.randn(2, tiny_cfg.n_rois, tiny_cfg.frames)
    maps = encoder.attention_maps(series)
    n = tiny_cfg.n_tokens
    assert [m.shape for m in maps] == [(2, tiny_cfg.heads, n, n)] * tiny_cfg.depth
    torch.testing.assert_close(maps[1].sum(-1), torch.ones(2, tiny_cfg.heads, n))
    # block 0's probabilities times its values, through its projection, are its attention output
    attn = encoder.blocks[0].attn
    with torch.no_grad():
        x = encoder.blocks[0].norm1(encoder.patch_embed(series.reshape(2, n, tiny_cfg.patch)) + encoder.pos_embed())
        _, _, v = attn._qkv(x)
        mixed = (maps[0] @ v).transpose(1, 2).reshape(2, n, tiny_cfg.dim)
        torch.testing.assert_close(attn.proj(mixed), attn(x), rtol=1e-4, atol=1e-5)


def test_attention_share_is_chance_for_uniform_attention_and_one_when_focused() -> None:
    related = torch.eye(6, dtype=torch.bool) | torch.eye(6, dtype=torch.bool).roll(1, dims=1)
    uniform = torch.full((2, 3, 6, 6), 1 / 6)
    focused = related.float().expand(2, 3, 6, 6) / 2
    shares = attention_share([uniform, focused], related)
    assert shares == pytest.approx([float(related.float().mean()), 1.0])


def test_encoder_rejects_wrong_shape(tiny_cfg, tiny_gradients) -> None:
    enc = BrainEncoder(tiny_cfg, tiny_gradients)
    with pytest.raises(ValueError, match=r"23 ROIs, 48 frames"):
        enc(torch.randn(2, 22, 48))


def test_gradients_must_cover_n_gradients(tiny_cfg) -> None:
    with pytest.raises(ValueError, match="n_gradients"):
        BrainEncoder(tiny_cfg, torch.randn(tiny_cfg.n_rois, 2))
    with pytest.raises(ValueError, match="rows"):
        BrainEncoder(tiny_cfg, torch.randn(tiny_cfg.n_rois + 1, 8))


def test_sincos_alternative_has_no_gradient_projection(tiny_cfg) -> None:
    cfg = ModelConfig(size="tiny", n_rois=23, frames=48, patch=8, positional="sincos")
    enc = BrainEncoder(cfg)
    names = [n for n, _ in enc.named_parameters()]
    assert not any(n.startswith("pos_embed") for n in names)
    assert enc(torch.randn(1, 23, 48)).shape == (1, cfg.n_tokens, cfg.dim)


def test_gradients_reach_gradient_projection(tiny_cfg, tiny_gradients) -> None:
    torch.manual_seed(0)
    model = BrainJEPA(tiny_cfg, tiny_gradients)
    masks = MaskCollator(MaskConfig(), tiny_cfg.n_rois, tiny_cfg.n_time_patches, seed=0).next_masks(2)
    b = masks.to_torch()
    x = torch.randn(2, tiny_cfg.n_rois, tiny_cfg.frames)
    _, target = model.targets(x, b["target_index"])
    loss = jepa_loss(model.student(x, b["context_index"], b["target_index"])[1], target)
    loss.backward()
    for module in (model.student.encoder, model.student.predictor):
        grad = module.pos_embed.proj.weight.grad
        assert grad is not None and grad.abs().sum() > 0
    assert all(p.grad is None for p in model.target_encoder.parameters())


def test_predictor_output_shape(tiny_cfg, tiny_gradients) -> None:
    pred = Predictor(tiny_cfg, tiny_gradients)
    ctx = torch.randn(2, 10, tiny_cfg.dim)
    out = pred(ctx, torch.randint(0, tiny_cfg.n_tokens, (2, 10)), torch.randint(0, tiny_cfg.n_tokens, (2, 7)))
    assert out.shape == (2, 7, tiny_cfg.dim)


def _counted_linear_flops(fn) -> int:
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    counts = counter.get_flop_counts()["Global"]
    return sum(v for op, v in counts.items() if "attention" not in str(op))


def test_analytic_linear_flops_match_torch_counter(tiny_cfg, tiny_gradients) -> None:
    enc, pred = BrainEncoder(tiny_cfg, tiny_gradients), Predictor(tiny_cfg, tiny_gradients)
    x = torch.randn(2, tiny_cfg.n_rois, tiny_cfg.frames)
    idx = torch.from_numpy(np.sort(np.random.default_rng(0).permutation(tiny_cfg.n_tokens)[:30])).expand(2, -1)
    tgt = idx[:, :11] + 1
    with torch.no_grad():
        assert _counted_linear_flops(lambda: enc(x)) == encoder_flops(tiny_cfg, 2, tiny_cfg.n_tokens).linear
        assert _counted_linear_flops(lambda: enc(x, idx)) == encoder_flops(tiny_cfg, 2, 30).linear
        ctx = enc(x, idx)
        assert _counted_linear_flops(lambda: pred(ctx, idx, tgt)) == predictor_flops(tiny_cfg, 2, 30, 11).linear
    # attention: QK^T and AV over N tokens of width D are 2 * N^2 * D each, per layer
    assert encoder_flops(tiny_cfg, 1, 30).attention == tiny_cfg.depth * 4 * 30**2 * tiny_cfg.dim
