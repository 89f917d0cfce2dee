"""The authors' checkpoint format (Eric-LRL/Brain-JEPA ``save_checkpoint``), both ways.

Their file is a dict with ``encoder``, ``predictor``, ``target_encoder`` state dicts (saved from
DistributedDataParallel, so every key starts with ``module.``), ``opt``, ``scaler``, ``epoch``, ``loss``
and a few run facts. Their modules map onto ours one to one:

======================================================  =====================================
theirs (encoder / target_encoder)                       ours (``BrainEncoder``)
======================================================  =====================================
``patch_embed.proj.weight`` (D, 1, 1, patch) Conv2d     ``patch_embed.weight`` (D, patch) Linear
``pos_embed_proj.predictor_pos_embed_proj.*``           ``pos_embed.proj.*`` (gradients -> D/2)
``pos_embed_proj.emb_h`` (R*P, D/2), fixed              the time code, recomputed (checked)
``blocks.i.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}.*``  the same names
``norm.*``                                              ``norm.*``
======================================================  =====================================

and for the predictor ``predictor_embed`` -> ``embed``, ``mask_token`` (1, 1, d) -> (d,),
``predictor_2dpe_proj`` -> ``pos_embed``, ``predictor_blocks`` -> ``blocks``, ``predictor_norm`` ->
``norm``, ``predictor_proj`` -> ``proj``. The gradient matrix is not in their file (their model holds
it as a plain attribute); it comes from their ``gradient_mapping_*.csv``. The architecture is read off
the tensors: width from the patch embedding, depth from the block indices, ROIs from the gradients,
time patches from the fixed time code. Heads are not stored anywhere, so they are given (default: the
ViT preset of that width; their predictor uses the encoder's head count).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from brainjepa.model import PRESETS, BrainEncoder, ModelConfig, Predictor, state_mismatch
from brainjepa.positional import sincos_1d

STATE_KEYS = ("encoder", "predictor", "target_encoder")
"""The state dicts a checkpoint of theirs must hold."""

_ENCODER_RENAMES = (
    ("pos_embed_proj.predictor_pos_embed_proj.", "pos_embed.proj."),
    ("blocks.", "blocks."),
    ("norm.", "norm."),
)
_PREDICTOR_RENAMES = (
    ("predictor_2dpe_proj.predictor_pos_embed_proj.", "pos_embed.proj."),
    ("predictor_embed.", "embed."),
    ("predictor_blocks.", "blocks."),
    ("predictor_norm.", "norm."),
    ("predictor_proj.", "proj."),
)
_TIME_CODES = {"encoder": "pos_embed_proj.emb_h", "predictor": "predictor_2dpe_proj.emb_h"}
HEADS_BY_WIDTH = {dim: heads for dim, _, heads, _, _ in PRESETS.values()}


class CheckpointFormatError(ValueError):
    """A checkpoint does not match the authors' layout; the message names every offending key."""


@dataclass
class ImportedWeights:
    """An authors' checkpoint in this project's terms."""

    config: ModelConfig
    encoder: dict[str, torch.Tensor]
    """Their ``target_encoder`` (or ``encoder`` with ``which="context"``) as a ``BrainEncoder`` state dict."""
    context_encoder: dict[str, torch.Tensor]
    predictor: dict[str, torch.Tensor]
    epoch: int
    loss: float | None


def strip_ddp(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop DistributedDataParallel's ``module.`` prefix (present or not)."""
    return {k.removeprefix("module."): v for k, v in state.items()}


def _rename(
    state: Mapping[str, torch.Tensor], renames: tuple[tuple[str, str], ...], part: str, skip: str
) -> dict[str, torch.Tensor]:
    out, unmapped = {}, []
    for key, value in state.items():
        if key == skip:
            continue
        new = next((ours + key[len(theirs) :] for theirs, ours in renames if key.startswith(theirs)), None)
        if new is None:
            unmapped.append(key)
        else:
            out[new] = value
    if unmapped:
        raise CheckpointFormatError(f"{part}: keys with no counterpart in this model: {sorted(unmapped)}")
    return out


def _depth(state: Mapping[str, torch.Tensor], prefix: str) -> int:
    indices = {int(m.group(1)) for k in state if (m := re.match(rf"{re.escape(prefix)}(\d+)\.", k))}
    return max(indices) + 1 if indices else 0


def _require(state: Mapping[str, torch.Tensor], key: str, part: str) -> torch.Tensor:
    if key not in state:
        raise CheckpointFormatError(f"{part}: missing key {key!r}")
    return state[key]


def infer_config(
    encoder: Mapping[str, torch.Tensor], predictor: Mapping[str, torch.Tensor], gradients: torch.Tensor, heads: int = 0
) -> ModelConfig:
    """The architecture of their (DDP-stripped) encoder and predictor state dicts."""
    patch_weight = _require(encoder, "patch_embed.proj.weight", "encoder")
    if patch_weight.ndim != 4 or patch_weight.shape[1:3] != (1, 1):
        raise CheckpointFormatError(
            f"encoder: patch_embed.proj.weight has shape {tuple(patch_weight.shape)}; expected (D, 1, 1, patch)"
        )
    dim, patch = patch_weight.shape[0], patch_weight.shape[3]
    n_rois, n_gradients = gradients.shape
    time_code = _require(encoder, _TIME_CODES["encoder"], "encoder")
    if time_code.shape[0] % n_rois:
        raise CheckpointFormatError(
            f"encoder: {_TIME_CODES['encoder']} has {time_code.shape[0]} rows, not a multiple of the gradients' "
            f"{n_rois} ROIs; is --gradients the table this model was trained with?"
        )
    proj = _require(encoder, "pos_embed_proj.predictor_pos_embed_proj.weight", "encoder")
    if proj.shape[1] != n_gradients:
        raise CheckpointFormatError(
            f"encoder: the gradient projection takes {proj.shape[1]} gradient components but the gradients table "
            f"has {n_gradients} columns"
        )
    heads = heads or HEADS_BY_WIDTH.get(dim, 0)
    if not heads:
        raise CheckpointFormatError(f"encoder width {dim} is not a ViT preset; give the number of heads")
    pred_dim = _require(predictor, "predictor_embed.weight", "predictor").shape[0]
    size = next((name for name, preset in PRESETS.items() if preset[0] == dim), "small")
    return ModelConfig(
        size=size,
        n_rois=n_rois,
        frames=time_code.shape[0] // n_rois * patch,
        patch=patch,
        positional="gradient",
        n_gradients=n_gradients,
        dim=dim,
        depth=_depth(encoder, "blocks."),
        heads=heads,
        predictor_dim=pred_dim,
        predictor_depth=_depth(predictor, "predictor_blocks."),
        predictor_heads=heads,
    )


def _check_time_code(state: Mapping[str, torch.Tensor], part: str, cfg: ModelConfig, width: int) -> None:
    """Their fixed time code must be ours for the inferred grid (a check that frames/patch are right)."""
    ours = _time_code(cfg, width)
    theirs = state[_TIME_CODES[part]].float()
    if theirs.shape != ours.shape or not torch.allclose(theirs, ours, atol=1e-5):
        raise CheckpointFormatError(
            f"{part}: {_TIME_CODES[part]} is not the sin-cos time code of a "
            f"{cfg.n_rois} ROI x {cfg.n_time_patches} time-patch grid"
        )


def _time_code(cfg: ModelConfig, width: int) -> torch.Tensor:
    return sincos_1d(width // 2, torch.arange(cfg.n_time_patches).repeat(cfg.n_rois))


def encoder_from_authors(
    state: Mapping[str, torch.Tensor], cfg: ModelConfig, gradients: torch.Tensor, part: str = "encoder"
) -> dict[str, torch.Tensor]:
    """Their encoder state dict (DDP-stripped) -> a ``BrainEncoder`` state dict."""
    _check_time_code(state, "encoder", cfg, cfg.dim)
    out = _rename(
        {k: v for k, v in state.items() if not k.startswith("patch_embed.")},
        _ENCODER_RENAMES,
        part,
        skip=_TIME_CODES["encoder"],
    )
    out["patch_embed.weight"] = state["patch_embed.proj.weight"].reshape(cfg.dim, cfg.patch)
    out["patch_embed.bias"] = _require(state, "patch_embed.proj.bias", part)
    out["pos_embed.gradients"] = gradients.float()
    return out


def predictor_from_authors(
    state: Mapping[str, torch.Tensor], cfg: ModelConfig, gradients: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Their predictor state dict (DDP-stripped) -> a ``Predictor`` state dict."""
    _check_time_code(state, "predictor", cfg, cfg.predictor_dim)
    out = _rename(
        {k: v for k, v in state.items() if k != "mask_token"},
        _PREDICTOR_RENAMES,
        "predictor",
        skip=_TIME_CODES["predictor"],
    )
    out["mask_token"] = _require(state, "mask_token", "predictor").reshape(cfg.predictor_dim)
    out["pos_embed.gradients"] = gradients.float()
    return out


def read_authors_checkpoint(
    checkpoint: Mapping[str, Any], gradients: torch.Tensor, which: str = "target", heads: int = 0
) -> ImportedWeights:
    """Map a loaded authors' checkpoint onto this project's modules, checking every key and shape."""
    missing = [k for k in STATE_KEYS if k not in checkpoint]
    if missing:
        raise CheckpointFormatError(
            f"not a Brain-JEPA checkpoint of the authors' code: no {missing} (found {sorted(checkpoint)})"
        )
    if which not in ("target", "context"):
        raise ValueError(f"which={which!r}: expected 'target' or 'context'")
    states = {k: strip_ddp(checkpoint[k]) for k in STATE_KEYS}
    cfg = infer_config(states["encoder"], states["predictor"], gradients, heads)
    target = encoder_from_authors(states["target_encoder"], cfg, gradients, "target_encoder")
    context = encoder_from_authors(states["encoder"], cfg, gradients, "encoder")
    predictor = predictor_from_authors(states["predictor"], cfg, gradients)
    _check_loadable(cfg, gradients, target, context, predictor)
    loss = checkpoint.get("loss")
    return ImportedWeights(
        cfg,
        target if which == "target" else context,
        context,
        predictor,
        int(checkpoint.get("epoch") or 0),
        None if loss is None else float(loss),
    )


def _check_loadable(
    cfg: ModelConfig,
    gradients: torch.Tensor,
    target: dict[str, torch.Tensor],
    context: dict[str, torch.Tensor],
    predictor: dict[str, torch.Tensor],
) -> None:
    """Strict key and shape check against the modules (built on the meta device: no memory, no
    initialisation), one error naming every problem."""
    with torch.device("meta"):
        encoder, predictor_module = BrainEncoder(cfg, gradients).state_dict(), Predictor(cfg, gradients).state_dict()
    problems = []
    for part, state, expected in (
        ("target_encoder", target, encoder),
        ("encoder", context, encoder),
        ("predictor", predictor, predictor_module),
    ):
        mismatch = state_mismatch(expected, state)
        problems += [f"{part}: missing {k}" for k in mismatch.missing]
        problems += [f"{part}: unexpected {k}" for k in mismatch.unexpected]
        problems += [
            f"{part}: {k} has shape {tuple(state[k].shape)}, expected {tuple(expected[k].shape)}"
            for k in mismatch.wrong_shape
        ]
    if problems:
        raise CheckpointFormatError("checkpoint does not fit the inferred model: " + "; ".join(problems))


def _invert(renames: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    return tuple((ours, theirs) for theirs, ours in renames)


def encoder_to_authors(state: Mapping[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """A ``BrainEncoder`` state dict -> their encoder layout (without the DDP prefix)."""
    body = {k: v for k, v in state.items() if not k.startswith(("patch_embed.", "pos_embed.gradients"))}
    out = _rename(body, _invert(_ENCODER_RENAMES), "encoder", skip="")
    out["patch_embed.proj.weight"] = state["patch_embed.weight"].reshape(cfg.dim, 1, 1, cfg.patch)
    out["patch_embed.proj.bias"] = state["patch_embed.bias"]
    out[_TIME_CODES["encoder"]] = _time_code(cfg, cfg.dim)
    return out


def predictor_to_authors(state: Mapping[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """A ``Predictor`` state dict -> their predictor layout (without the DDP prefix)."""
    body = {k: v for k, v in state.items() if k not in ("mask_token", "pos_embed.gradients")}
    out = _rename(body, _invert(_PREDICTOR_RENAMES), "predictor", skip="")
    out["mask_token"] = state["mask_token"].reshape(1, 1, cfg.predictor_dim)
    out[_TIME_CODES["predictor"]] = _time_code(cfg, cfg.predictor_dim)
    return out


def write_authors_checkpoint(
    cfg: ModelConfig,
    target: Mapping[str, torch.Tensor],
    context: Mapping[str, torch.Tensor] | None = None,
    predictor: Mapping[str, torch.Tensor] | None = None,
    epoch: int = 0,
    loss: float | None = None,
) -> dict[str, Any]:
    """Their ``save_checkpoint`` dict, as their DDP training writes it (``module.`` prefixes), so their
    downstream scripts (which read ``target_encoder``) and ``load_checkpoint`` read it.

    Without ``context`` the target encoder's weights stand in for it; without ``predictor`` the key is
    left out (a registered model holds the target encoder only), so their training resume cannot use
    the file. There is never optimizer state (``opt`` is None)."""
    if cfg.positional != "gradient":
        raise ValueError(
            f"the authors' format has gradient positioning only; this model uses positional={cfg.positional!r}"
        )

    def ddp(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {f"module.{k}": v.detach().clone().contiguous() for k, v in state.items()}

    out: dict[str, Any] = {"encoder": ddp(encoder_to_authors(target if context is None else context, cfg))}
    if predictor is not None:
        out["predictor"] = ddp(predictor_to_authors(predictor, cfg))
    out["target_encoder"] = ddp(encoder_to_authors(target, cfg))
    return {**out, "opt": None, "scaler": None, "epoch": epoch, "loss": loss}


def read_gradient_table(text: str) -> torch.Tensor:
    """Their ``gradient_mapping_*.csv``: R rows x m columns of numbers, no header."""
    import io

    import numpy as np

    try:
        table = np.loadtxt(io.StringIO(text), delimiter=",", ndmin=2)
    except ValueError as exc:
        raise CheckpointFormatError(
            f"gradient table: expected R rows x m comma-separated numbers, no header ({exc})"
        ) from exc
    return torch.from_numpy(table).float()
