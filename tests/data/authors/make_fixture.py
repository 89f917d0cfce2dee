"""Make the authors'-format parity fixture by running the authors' own code (outside this repo).

Usage (see README.md next to this file):

    git clone https://github.com/Eric-LRL/Brain-JEPA /tmp/Brain-JEPA   # commit b1dfa93
    PYTHONPATH=/tmp/Brain-JEPA python tests/data/authors/make_fixture.py --out tests/data/authors

Nothing of their code is copied here: this script imports their ``src`` package from the clone.
Their module imports ``flash_attn`` at the top; on CPU we register an empty stand-in module and use
their ``attn_mode='normal'`` path, which never calls it.
"""

from __future__ import annotations

import argparse
import copy
import sys
import types
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.modules.setdefault("flash_attn", types.SimpleNamespace(flash_attn_qkvpacked_func=None))

from src.masks.utils import apply_masks  # noqa: E402  (the authors' package, from PYTHONPATH)
from src.models.vision_transformer import VisionTransformer, vit_predictor  # noqa: E402
from src.utils.tensors import repeat_interleave_batch  # noqa: E402

FRAMES, PATCH = 160, 16  # their time code repeats each ROI's gradient code over exactly 10 time patches
SIZES = {  # rois, gradients, dim, depth, heads, predictor dim, predictor depth
    "test": (20, 3, 64, 2, 4, 32, 1),  # the fixture in tests/data/authors
    "vit_small": (450, 30, 384, 12, 6, 384, 6),  # the ViT-S check of the import command (kept outside the repo)
}


def ddp(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """State dict as a DistributedDataParallel-wrapped module saves it."""
    return {f"module.{k}": v for k, v in state.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--size", choices=sorted(SIZES), default="test")
    args = parser.parse_args()
    out, (ROIS, GRADIENTS, DIM, DEPTH, HEADS, PRED_DIM, PRED_DEPTH) = args.out, SIZES[args.size]
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    gradients = rng.standard_normal((ROIS, GRADIENTS)).astype(np.float32)
    np.savetxt(out / f"gradient_mapping_{ROIS}.csv", gradients, delimiter=",", fmt="%.8f")  # their layout: no header
    gradient = torch.from_numpy(np.loadtxt(out / f"gradient_mapping_{ROIS}.csv", delimiter=",")).float()[None]
    encoder = VisionTransformer(
        img_size=(ROIS, FRAMES),
        patch_size=PATCH,
        in_chans=1,
        embed_dim=DIM,
        depth=DEPTH,
        num_heads=HEADS,
        mlp_ratio=4,
        qkv_bias=True,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
        gradient_pos_embed=gradient,
        attn_mode="normal",
        add_w="mapping",
    )
    predictor = vit_predictor(
        num_patches=encoder.patch_embed.num_patches,
        num_patches_2d=encoder.patch_embed.num_patches_2d,
        embed_dim=DIM,
        predictor_embed_dim=PRED_DIM,
        depth=PRED_DEPTH,
        num_heads=HEADS,
        gradient_pos_embed=gradient,
        attn_mode="normal",
        add_w="mapping",
    )
    with torch.no_grad():  # move every parameter off its init (zero biases, unit norms) so a mis-mapping shows
        for p in [*encoder.parameters(), *predictor.parameters()]:
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    target_encoder = copy.deepcopy(encoder)
    with torch.no_grad():
        for p in target_encoder.parameters():
            if p.requires_grad:
                p.add_(0.02 * torch.randn_like(p))  # the EMA target differs from the context encoder
    opt = torch.optim.AdamW([*encoder.parameters(), *predictor.parameters()], lr=1e-4)

    batch = 2 if args.size == "test" else 1  # ViT-S on 4,500 tokens: one sample keeps the backward in memory
    series = torch.randn(batch, 1, ROIS, FRAMES)
    n_tokens = ROIS * FRAMES // PATCH
    order = torch.stack([torch.randperm(n_tokens) for _ in range(batch)])
    n_context, n_target = int(0.6 * n_tokens), int(0.125 * n_tokens)
    cut = [n_context, n_context + n_target, n_context + 2 * n_target]
    masks_enc = [order[:, : cut[0]].sort(dim=1).values]
    masks_pred = [order[:, cut[0] : cut[1]].sort(dim=1).values, order[:, cut[1] : cut[2]].sort(dim=1).values]

    def forward() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Their train step's forward: target tokens, targets, predictions, loss."""
        with torch.no_grad():
            tokens = target_encoder(series)
            h = F.layer_norm(tokens, (tokens.size(-1),))
            h = repeat_interleave_batch(apply_masks(h, masks_pred), len(h), repeat=len(masks_enc))
        z = predictor(encoder(series, masks_enc), masks_enc, masks_pred)
        return tokens, h, z, F.smooth_l1_loss(z, h)

    _, _, _, loss = forward()  # one optimizer step, so the checkpoint carries real optimizer state
    loss.backward()
    opt.step()
    opt.zero_grad()
    encoder.eval(), predictor.eval(), target_encoder.eval()
    tokens, h, z, loss = forward()
    context = encoder(series, masks_enc)
    checkpoint = {  # the keys of their save_checkpoint, under DDP
        "encoder": ddp(encoder.state_dict()),
        "predictor": ddp(predictor.state_dict()),
        "target_encoder": ddp(target_encoder.state_dict()),
        "opt": opt.state_dict(),
        "scaler": None,
        "epoch": 1,
        "loss": loss.item(),
        "batch_size": batch,
        "world_size": 1,
        "lr": 1e-4,
    }
    torch.save(checkpoint, out / "authors_checkpoint.pt")
    np.savez_compressed(
        out / "authors_outputs.npz",
        series=series[:, 0].numpy(),
        masks_enc=masks_enc[0].numpy(),
        masks_pred=torch.stack(masks_pred).numpy(),
        target_tokens=tokens.detach().numpy(),
        context_tokens=context.detach().numpy(),
        predictions=z.detach().numpy(),
        targets=h.numpy(),
        loss=np.float64(loss.item()),
    )
    print(f"wrote {out}/authors_checkpoint.pt and authors_outputs.npz (loss {loss.item():.6f})")


if __name__ == "__main__":
    main()
