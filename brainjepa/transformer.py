"""Pre-norm transformer blocks shared by the encoder and the predictor."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LAYER_NORM_EPS = 1e-6


class DropPath(nn.Module):
    """Stochastic depth: drop the residual branch per sample with probability ``p`` in training."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


class Attention(nn.Module):
    """Multi-head self-attention through ``scaled_dot_product_attention``.

    Attention dropout and output-projection dropout are separate settings (the reference wired
    both to one value). With ``qk_norm`` each head's queries and keys are layer-normed and scaled
    to unit length, and the logits are their cosine times a learnable per-head temperature
    (initialised at ``qk_temperature``; 1-D, so never weight-decayed). Without it the logits are
    q.k / sqrt(head_dim), whose spread at a small width and 0.02 init is too small for attention
    to leave uniform (docs/learning.md).
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        qk_norm: bool = False,
        qk_temperature: float = 10.0,
    ) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)
        self.proj = nn.Linear(dim, dim)
        self.attn_drop = attn_drop
        self.proj_drop = nn.Dropout(proj_drop)
        head_dim = dim // heads
        if qk_norm:
            self.q_norm = nn.LayerNorm(head_dim, eps=LAYER_NORM_EPS)
            self.k_norm = nn.LayerNorm(head_dim, eps=LAYER_NORM_EPS)
            self.temperature = nn.Parameter(torch.full((heads,), float(qk_temperature)))
        self.qk_norm = qk_norm
        self.scale = 1.0 if qk_norm else 1.0 / math.sqrt(head_dim)

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries (already carrying the temperature under qk_norm), keys and values: (B, heads, N, hd)."""
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        if self.qk_norm:
            q = F.normalize(self.q_norm(q), dim=-1) * self.temperature.to(q.dtype)[:, None, None]
            k = F.normalize(self.k_norm(k), dim=-1)
        return q, k, v

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """Attention probabilities (B, heads, N, N) for input ``x`` (B, N, D), without dropout."""
        q, k, _ = self._qkv(x)
        return torch.softmax(q @ k.transpose(-2, -1) * self.scale, dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self._qkv(x)
        drop = self.attn_drop if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=drop, scale=self.scale)
        out = out.transpose(1, 2).reshape(b, n, d)
        return self.proj_drop(self.proj(out))


class MLP(nn.Module):
    """Two-layer GELU MLP."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(F.gelu(self.fc1(x)))))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)); x + mlp(norm(x))."""

    def __init__(
        self,
        dim: int,
        heads: int,
        mlp_ratio: float = 4.0,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        qk_norm: bool = False,
        qk_temperature: float = 10.0,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.attn = Attention(
            dim, heads, attn_drop=attn_drop, proj_drop=drop, qk_norm=qk_norm, qk_temperature=qk_temperature
        )
        self.norm2 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.mlp = MLP(dim, int(dim * mlp_ratio), drop=drop)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


def make_blocks(
    dim: int,
    depth: int,
    heads: int,
    mlp_ratio: float,
    drop: float,
    attn_drop: float,
    drop_path: float,
    qk_norm: bool = False,
    qk_temperature: float = 10.0,
) -> nn.ModuleList:
    """``depth`` blocks with stochastic depth rising linearly from 0 to ``drop_path``."""
    rates = [drop_path * i / (depth - 1) for i in range(depth)] if depth > 1 else [drop_path]
    return nn.ModuleList(
        Block(
            dim,
            heads,
            mlp_ratio,
            drop=drop,
            attn_drop=attn_drop,
            drop_path=r,
            qk_norm=qk_norm,
            qk_temperature=qk_temperature,
        )
        for r in rates
    )


def init_weights(module: nn.Module, blocks: nn.ModuleList, std: float = 0.02, scheme: str = "trunc_normal") -> None:
    """Linear weights, zero biases; residual projections scaled by 1/sqrt(2 * layer) (I-JEPA).

    ``scheme`` "trunc_normal": truncated normal of ``std`` (the ViT/I-JEPA default); "fan_in": normal
    of std 1/sqrt(fan_in) (LeCun), which keeps activations and attention logits at unit scale
    whatever the width.
    """
    if scheme not in ("trunc_normal", "fan_in"):
        raise ValueError(f"unknown init scheme {scheme!r}: expected trunc_normal or fan_in")
    for m in module.modules():
        if isinstance(m, nn.Linear):
            if scheme == "fan_in":
                nn.init.normal_(m.weight, std=1.0 / math.sqrt(m.in_features))
            else:
                nn.init.trunc_normal_(m.weight, std=std, a=-2 * std, b=2 * std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    with torch.no_grad():
        for layer_id, block in enumerate(blocks, start=1):
            block.attn.proj.weight.div_(math.sqrt(2.0 * layer_id))
            block.mlp.fc2.weight.div_(math.sqrt(2.0 * layer_id))
