"""Import/export of the authors' checkpoint format against outputs of their own code (tests/data/authors)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from brainjepa.authors_format import (
    CheckpointFormatError,
    read_authors_checkpoint,
    read_gradient_table,
    strip_ddp,
    write_authors_checkpoint,
)
from brainjepa.jepa import jepa_loss
from brainjepa.model import BrainEncoder, Predictor

DATA = Path(__file__).parent / "data" / "authors"


@pytest.fixture(scope="module")
def checkpoint() -> dict:
    return torch.load(DATA / "authors_checkpoint.pt", map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def gradients() -> torch.Tensor:
    return read_gradient_table((DATA / "gradient_mapping_20.csv").read_text())


@pytest.fixture(scope="module")
def outputs() -> dict[str, np.ndarray]:
    return dict(np.load(DATA / "authors_outputs.npz"))


def modules(checkpoint: dict, gradients: torch.Tensor, which: str = "target") -> tuple:
    weights = read_authors_checkpoint(checkpoint, gradients, which=which)
    encoder, predictor = BrainEncoder(weights.config, gradients), Predictor(weights.config, gradients)
    encoder.load_state_dict(weights.encoder)
    predictor.load_state_dict(weights.predictor)
    context = BrainEncoder(weights.config, gradients)
    context.load_state_dict(weights.context_encoder)
    return weights, encoder.eval(), context.eval(), predictor.eval()


def test_the_architecture_is_read_off_the_tensors(checkpoint, gradients) -> None:
    cfg = read_authors_checkpoint(checkpoint, gradients).config
    assert (cfg.n_rois, cfg.frames, cfg.patch, cfg.n_gradients) == (20, 160, 16, 3)
    assert (cfg.dim, cfg.depth, cfg.heads, cfg.predictor_dim, cfg.predictor_depth) == (64, 2, 4, 32, 1)


@torch.no_grad()
def test_imported_encoder_predictor_and_loss_equal_the_authors(checkpoint, gradients, outputs) -> None:
    weights, target, context, predictor = modules(checkpoint, gradients)
    series = torch.from_numpy(outputs["series"])
    tokens = target(series)
    np.testing.assert_allclose(tokens.numpy(), outputs["target_tokens"], atol=1e-5, rtol=0)
    masks_enc = torch.from_numpy(outputs["masks_enc"]).long()
    ctx = context(series, masks_enc)
    np.testing.assert_allclose(ctx.numpy(), outputs["context_tokens"], atol=1e-5, rtol=0)
    # their predictor output stacks one block of the batch per target mask
    predictions = torch.cat([predictor(ctx, masks_enc, m.long()) for m in torch.from_numpy(outputs["masks_pred"])])
    np.testing.assert_allclose(predictions.numpy(), outputs["predictions"], atol=1e-5, rtol=0)
    targets = torch.from_numpy(outputs["targets"])
    assert jepa_loss(predictions, targets).item() == pytest.approx(float(outputs["loss"]), abs=1e-6)
    assert weights.epoch == 1


def test_export_then_import_is_the_identity(checkpoint, gradients) -> None:
    weights = read_authors_checkpoint(checkpoint, gradients)
    exported = write_authors_checkpoint(
        weights.config, weights.encoder, weights.context_encoder, weights.predictor, epoch=weights.epoch
    )
    for part in ("encoder", "predictor", "target_encoder"):  # their layout, key for key and shape for shape
        assert {k: v.shape for k, v in exported[part].items()} == {k: v.shape for k, v in checkpoint[part].items()}
        for key, value in checkpoint[part].items():
            torch.testing.assert_close(exported[part][key], value, atol=1e-6, rtol=0)
    again = read_authors_checkpoint(exported, gradients)
    for ours, back in ((weights.encoder, again.encoder), (weights.predictor, again.predictor)):
        assert ours.keys() == back.keys()
        assert all(torch.equal(ours[k], back[k]) for k in ours)


@pytest.mark.parametrize("edit", ["missing", "extra", "shape"])
def test_a_key_that_does_not_fit_is_named(checkpoint, gradients, edit) -> None:
    broken = {k: (dict(v) if isinstance(v, dict) else v) for k, v in checkpoint.items()}
    target = broken["target_encoder"]
    if edit == "missing":
        del target["module.blocks.1.mlp.fc2.bias"]
        message = "target_encoder: missing blocks.1.mlp.fc2.bias"
    elif edit == "extra":
        target["module.head.weight"] = torch.zeros(2, 64)
        message = "head.weight"
    else:
        target["module.blocks.0.attn.qkv.weight"] = torch.zeros(10, 64)
        message = "blocks.0.attn.qkv.weight has shape"
    with pytest.raises(CheckpointFormatError, match=message.replace(".", r"\.")):
        read_authors_checkpoint(broken, gradients)


def test_the_wrong_gradient_table_is_refused(checkpoint, gradients) -> None:
    with pytest.raises(CheckpointFormatError, match="gradient"):
        read_authors_checkpoint(checkpoint, gradients[:, :2])
    with pytest.raises(CheckpointFormatError, match="ROIs"):
        read_authors_checkpoint(checkpoint, gradients[:7])
    assert set(strip_ddp({"module.a": torch.zeros(1), "b": torch.zeros(1)})) == {"a", "b"}
