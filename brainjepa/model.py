"""Brain-JEPA networks: the ViT encoder over ROI x time-patch tokens and the narrow predictor."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from brainjepa.positional import build_positional
from brainjepa.transformer import LAYER_NORM_EPS, init_weights, make_blocks

# name: (dim, depth, heads, predictor_dim, predictor_depth)
PRESETS: dict[str, tuple[int, int, int, int, int]] = {
    "tiny": (64, 2, 4, 32, 2),
    "small": (384, 12, 6, 384, 6),
    "base": (768, 12, 12, 384, 6),
    "large": (1024, 24, 16, 384, 6),
}


@dataclass
class ModelConfig:
    """Encoder + predictor architecture. ``0`` in a size field means: take it from ``size``'s preset."""

    size: str = "small"
    n_rois: int = 450
    frames: int = 160
    patch: int = 16
    positional: Literal["gradient", "sincos"] = "gradient"
    n_gradients: int = 30
    dim: int = 0
    depth: int = 0
    heads: int = 0
    predictor_dim: int = 0
    predictor_depth: int = 0
    predictor_heads: int = 0
    mlp_ratio: float = 4.0
    drop: float = 0.0
    attn_drop: float = 0.0
    drop_path: float = 0.0
    init_std: float = 0.02
    init: Literal["trunc_normal", "fan_in"] = "trunc_normal"
    """Linear-layer init: truncated normal of ``init_std`` (authors') or 1/sqrt(fan_in)."""
    qk_norm: bool = False
    """Cosine attention logits (layer-normed unit q, k) times a learnable per-head temperature."""
    qk_temperature: float = 10.0
    """Initial attention temperature under ``qk_norm``."""

    def __post_init__(self) -> None:
        if self.size not in PRESETS:
            raise ValueError(f"model.size {self.size!r} is not one of {sorted(PRESETS)}")
        dim, depth, heads, pdim, pdepth = PRESETS[self.size]
        self.dim = self.dim or dim
        self.depth = self.depth or depth
        self.heads = self.heads or heads
        self.predictor_dim = self.predictor_dim or pdim
        self.predictor_depth = self.predictor_depth or pdepth
        self.predictor_heads = self.predictor_heads or heads
        if self.init not in ("trunc_normal", "fan_in"):
            raise ValueError(f"model.init {self.init!r} is not one of ['fan_in', 'trunc_normal']")
        if self.qk_temperature <= 0:
            raise ValueError(f"model.qk_temperature={self.qk_temperature}: expected > 0")
        if self.frames % self.patch:
            raise ValueError(f"model.frames={self.frames} is not a multiple of model.patch={self.patch}")

    @property
    def n_time_patches(self) -> int:
        return self.frames // self.patch

    @property
    def n_tokens(self) -> int:
        return self.n_rois * self.n_time_patches


def gather_tokens(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Select tokens: ``x`` (B, N, D) or a shared table (N, D), ``index`` (B, K) -> (B, K, D)."""
    if x.ndim == 2:
        return x[index]
    return torch.gather(x, 1, index[..., None].expand(-1, -1, x.shape[-1]))


class BrainEncoder(nn.Module):
    """Pre-norm ViT over the ROI x time-patch grid; encodes only the tokens it is given."""

    def __init__(self, cfg: ModelConfig, gradients: torch.Tensor | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        if gradients is not None and cfg.positional == "gradient":
            gradients = _select_gradients(gradients, cfg.n_gradients)
        self.patch_embed = nn.Linear(cfg.patch, cfg.dim)
        self.pos_embed = build_positional(cfg.positional, cfg.n_rois, cfg.n_time_patches, cfg.dim, gradients)
        self.blocks = make_blocks(
            cfg.dim,
            cfg.depth,
            cfg.heads,
            cfg.mlp_ratio,
            cfg.drop,
            cfg.attn_drop,
            cfg.drop_path,
            cfg.qk_norm,
            cfg.qk_temperature,
        )
        self.norm = nn.LayerNorm(cfg.dim, eps=LAYER_NORM_EPS)
        init_weights(self, self.blocks, cfg.init_std, cfg.init)
        # A patch has only `patch` values (16 frames, not a 768-value image patch): with the ViT's
        # 0.02 init the data would be ~2% of each token's variance next to the positional code, a
        # near data-blind start that collapses to position-only targets. Xavier, as MAE does.
        nn.init.xavier_uniform_(self.patch_embed.weight)

    def check_input(self, series: torch.Tensor) -> None:
        """Raise a clear error when ``series`` is not (B, n_rois, frames)."""
        cfg = self.cfg
        if series.ndim != 3 or series.shape[1:] != (cfg.n_rois, cfg.frames):
            raise ValueError(
                f"encoder expects ROI time series of shape (batch, {cfg.n_rois} ROIs, {cfg.frames} frames), "
                f"got {tuple(series.shape)}"
            )

    def forward(self, series: torch.Tensor, token_index: torch.Tensor | None = None) -> torch.Tensor:
        """``series`` (B, R, T) -> encoded tokens (B, N, D); N = all R*P tokens or ``token_index``'s."""
        x = self._embed(series, token_index)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def _embed(self, series: torch.Tensor, token_index: torch.Tensor | None) -> torch.Tensor:
        """Patch embedding + positional code of the tokens to encode: (B, N, D)."""
        self.check_input(series)
        patches = series.reshape(series.shape[0], self.cfg.n_tokens, self.cfg.patch)
        pos = self.pos_embed()
        if token_index is not None:
            patches = gather_tokens(patches, token_index)
            pos = gather_tokens(pos, token_index)
        return self.patch_embed(patches) + pos

    @torch.no_grad()
    def attention_maps(self, series: torch.Tensor) -> list[torch.Tensor]:
        """Each block's attention probabilities over the full grid: (B, heads, N, N) per block.

        Token n is ROI ``n // n_time_patches`` at time patch ``n % n_time_patches``. A diagnostic
        (call it in eval mode; memory grows as N^2): an encoder whose attention stays uniform cannot
        carry relations between ROIs into its tokens.
        """
        x = self._embed(series, None)
        maps = []
        for block in self.blocks:
            maps.append(block.attn.weights(block.norm1(x)))
            x = block(x)
        return maps


class Predictor(nn.Module):
    """Narrow ViT: context embeddings + mask tokens at target positions -> target predictions."""

    def __init__(self, cfg: ModelConfig, gradients: torch.Tensor | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        if gradients is not None and cfg.positional == "gradient":
            gradients = _select_gradients(gradients, cfg.n_gradients)
        width = cfg.predictor_dim
        self.embed = nn.Linear(cfg.dim, width)
        self.mask_token = nn.Parameter(torch.zeros(width))
        self.pos_embed = build_positional(cfg.positional, cfg.n_rois, cfg.n_time_patches, width, gradients)
        self.blocks = make_blocks(
            width,
            cfg.predictor_depth,
            cfg.predictor_heads,
            cfg.mlp_ratio,
            cfg.drop,
            cfg.attn_drop,
            cfg.drop_path,
            cfg.qk_norm,
            cfg.qk_temperature,
        )
        self.norm = nn.LayerNorm(width, eps=LAYER_NORM_EPS)
        self.proj = nn.Linear(width, cfg.dim)
        init_weights(self, self.blocks, cfg.init_std, cfg.init)
        nn.init.trunc_normal_(self.mask_token, std=cfg.init_std)

    def forward(self, context: torch.Tensor, context_index: torch.Tensor, target_index: torch.Tensor) -> torch.Tensor:
        """``context`` (B, Nc, D) at ``context_index`` (B, Nc) -> predictions (B, Nt, D)."""
        pos = self.pos_embed()
        x = self.embed(context) + gather_tokens(pos, context_index)
        queries = self.mask_token + gather_tokens(pos, target_index)
        x = torch.cat([x, queries.to(x.dtype)], dim=1)
        for block in self.blocks:
            x = block(x)
        x = self.norm(x[:, context.shape[1] :])
        return self.proj(x)


def _select_gradients(gradients: torch.Tensor, n_gradients: int) -> torch.Tensor:
    if gradients.ndim != 2 or gradients.shape[1] < n_gradients:
        raise ValueError(
            f"model.n_gradients={n_gradients} but the gradients matrix has shape {tuple(gradients.shape)}; "
            "compute more components or lower model.n_gradients"
        )
    return gradients[:, :n_gradients]


@dataclass
class StateMismatch:
    """How a state dict differs from a module's: keys missing, unexpected, and of the wrong shape."""

    missing: list[str]
    unexpected: list[str]
    wrong_shape: list[str]

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.wrong_shape)


def state_mismatch(expected: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor]) -> StateMismatch:
    """Compare ``state`` with ``expected`` (a module's state dict; build it on the meta device, which costs
    neither memory nor initialisation) key by key and shape by shape."""
    got = {k: tuple(v.shape) for k, v in state.items()}
    want = {k: tuple(v.shape) for k, v in expected.items()}
    return StateMismatch(
        sorted(set(want) - set(got)),
        sorted(set(got) - set(want)),
        sorted(k for k in set(got) & set(want) if got[k] != want[k]),
    )


def count_parameters(module: nn.Module) -> int:
    """Trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
