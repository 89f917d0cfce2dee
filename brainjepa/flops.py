"""Analytic matmul FLOP counts of Brain-JEPA passes, attention included.

``torch.utils.flop_counter`` counts zero FLOPs for ``scaled_dot_product_attention`` on CPU, and at
thousands of tokens attention is most of a step's work, so FLOPs are counted here from the shapes:
a linear map of K -> M features over N tokens is 2*N*K*M; attention's QK^T and AV are 2*N^2*D each.
"""

from __future__ import annotations

from dataclasses import dataclass

from brainjepa.model import ModelConfig


@dataclass
class Flops:
    """Forward FLOPs split into linear layers and attention matmuls."""

    linear: float = 0.0
    attention: float = 0.0

    @property
    def total(self) -> float:
        return self.linear + self.attention

    def __add__(self, other: Flops) -> Flops:
        return Flops(self.linear + other.linear, self.attention + other.attention)

    def __mul__(self, k: float) -> Flops:
        return Flops(self.linear * k, self.attention * k)

    __rmul__ = __mul__


def transformer_flops(n_tokens: int, dim: int, depth: int, mlp_ratio: float) -> Flops:
    """One sample through ``depth`` pre-norm blocks: qkv, proj, two MLP layers, QK^T and AV."""
    hidden = int(dim * mlp_ratio)
    linear = 2 * n_tokens * (3 * dim * dim + dim * dim + 2 * dim * hidden)
    attention = 4 * n_tokens * n_tokens * dim
    return Flops(depth * linear, depth * attention)


def positional_flops(cfg: ModelConfig, width: int) -> Flops:
    """The gradient projection (R x m -> R x width/2), evaluated once per forward."""
    if cfg.positional != "gradient":
        return Flops()
    return Flops(linear=2 * cfg.n_rois * cfg.n_gradients * (width // 2))


def encoder_flops(cfg: ModelConfig, batch: int, n_tokens: int) -> Flops:
    """Encoder forward over ``n_tokens`` tokens per sample."""
    per_sample = Flops(linear=2 * n_tokens * cfg.patch * cfg.dim)
    per_sample = per_sample + transformer_flops(n_tokens, cfg.dim, cfg.depth, cfg.mlp_ratio)
    return per_sample * batch + positional_flops(cfg, cfg.dim)


def predictor_flops(cfg: ModelConfig, batch: int, n_context: int, n_target: int) -> Flops:
    """Predictor forward: embed context, blocks over context + mask tokens, project targets."""
    width = cfg.predictor_dim
    per_sample = Flops(linear=2 * n_context * cfg.dim * width + 2 * n_target * width * cfg.dim)
    per_sample = per_sample + transformer_flops(n_context + n_target, width, cfg.predictor_depth, cfg.mlp_ratio)
    return per_sample * batch + positional_flops(cfg, width)


def pretrain_step_flops(cfg: ModelConfig, batch: int, n_context: int, n_target: int) -> Flops:
    """One JEPA step as masked: target encoder forward on the full grid, then context encoder and
    predictor forward plus backward (counted as 2x forward)."""
    target = encoder_flops(cfg, batch, cfg.n_tokens)
    student = encoder_flops(cfg, batch, n_context) + predictor_flops(cfg, batch, n_context, n_target)
    return target + student * 3
