"""Fine-tuning head and engine: LLRD groups and schedule, frozen encoder at decay 0, loss falling, DDP."""

from __future__ import annotations

import copy
from collections.abc import Iterator

import pytest
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from brainjepa.heads import FinetuneConfig, FinetuneEngine, FinetuneModel, layerwise_lr_groups
from brainjepa.model import BrainEncoder, ModelConfig


def _model(cfg: ModelConfig, gradients: torch.Tensor, n_outputs: int = 2, seed: int = 0) -> FinetuneModel:
    torch.manual_seed(seed)
    return FinetuneModel(BrainEncoder(cfg, gradients), n_outputs)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny matrices: one intra-op thread is faster, and far faster on a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _easy_task(cfg: ModelConfig, n: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Class 1 scans have the first 8 ROIs raised by two noise standard deviations; class 0 scans are noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = torch.randn(n, cfg.n_rois, cfg.frames, generator=g)
    x[y == 1, :8] += 2.0
    return x, y


def _expected_scale(name: str, depth: int, decay: float) -> float:
    if name.startswith("encoder.blocks."):
        return decay ** (depth - int(name.split(".")[2]))
    if name.startswith("encoder.norm."):
        return decay**1
    if name.startswith("encoder."):
        return decay ** (depth + 1)
    return 1.0


def test_forward_shape_and_step_count(tiny_cfg, tiny_gradients) -> None:
    model = _model(tiny_cfg, tiny_gradients, n_outputs=3)
    out = model(torch.randn(4, tiny_cfg.n_rois, tiny_cfg.frames))
    assert out.shape == (4, 3)
    assert FinetuneConfig(epochs=3, batch_size=8).total_steps(n_train=20, world_size=2) == 3 * 2


def test_llrd_groups_scale_by_depth_and_keep_ratios_under_the_schedule(tiny_cfg, tiny_gradients) -> None:
    model = _model(tiny_cfg, tiny_gradients)
    depth, decay, base = tiny_cfg.depth, 0.5, 1e-3
    groups = layerwise_lr_groups(model, base, decay, weight_decay=0.05)
    names = [n for g in groups for n in g["param_names"]]
    assert sorted(names) == sorted(n for n, _ in model.named_parameters())
    for g in groups:
        for name in g["param_names"]:
            assert g["lr_scale"] == pytest.approx(_expected_scale(name, depth, decay)), name
            assert g["lr"] == pytest.approx(base * g["lr_scale"])
            is_matrix = not name.endswith(".bias") and model.get_parameter(name).ndim > 1
            assert g["weight_decay"] == (0.05 if is_matrix else 0.0), name
    scales = {g["lr_scale"] for g in groups}
    assert sorted(scales) == pytest.approx([0.125, 0.25, 0.5, 1.0])  # embeddings, block 0, last block + norm, head

    cfg = FinetuneConfig(lr=base, layer_decay=decay, warmup_fraction=0.3, seed=0)
    engine = FinetuneEngine(model, cfg, total_steps=10, task="classification", n_outputs=2)
    x, y = _easy_task(tiny_cfg, n=8)
    for step in range(5):
        engine.train_step(x, y)
        for g in engine.optimizer.param_groups:  # the lr used at this step, for every group
            assert g["lr"] == pytest.approx(engine.lr(step) * g["lr_scale"])
            assert g["lr"] / g["lr_scale"] == pytest.approx(engine.optimizer.param_groups[-1]["lr"])
    assert len({round(engine.lr(s), 12) for s in range(5)}) == 5  # the schedule really moved


def test_layer_decay_zero_freezes_the_encoder(tiny_cfg, tiny_gradients) -> None:
    model = _model(tiny_cfg, tiny_gradients)
    encoder_before = copy.deepcopy(model.encoder.state_dict())
    head_before = model.head.weight.detach().clone()
    cfg = FinetuneConfig(lr=1e-2, layer_decay=0.0, warmup_fraction=0.0)
    engine = FinetuneEngine(model, cfg, total_steps=4, task="classification", n_outputs=2)
    x, y = _easy_task(tiny_cfg, n=8)
    for _ in range(3):
        engine.train_step(x, y)
    for name, value in model.encoder.state_dict().items():
        assert torch.equal(value, encoder_before[name]), name
    assert not torch.equal(model.head.weight, head_before)


def test_finetune_lowers_the_training_loss(tiny_cfg, tiny_gradients) -> None:
    model = _model(tiny_cfg, tiny_gradients)
    x, y = _easy_task(tiny_cfg, n=16)
    cfg = FinetuneConfig(lr=3e-3, layer_decay=0.75, warmup_fraction=0.1, batch_size=8)
    engine = FinetuneEngine(model, cfg, total_steps=30, task="classification", n_outputs=2)

    def full_loss() -> float:
        return torch.nn.functional.cross_entropy(torch.from_numpy(engine.predict(x)), y).item()

    before = full_loss()
    g = torch.Generator().manual_seed(0)
    for _ in range(15):  # 2 batches per epoch
        for idx in torch.randperm(len(y), generator=g).split(cfg.batch_size):
            engine.train_step(x[idx], y[idx])
    after = full_loss()
    assert after < 0.5 * before
    assert (engine.predict_proba(x).argmax(axis=1) == y.numpy()).mean() > 0.9


def test_regression_predicts_in_original_units_and_resumes(tiny_cfg, tiny_gradients) -> None:
    model = _model(tiny_cfg, tiny_gradients, n_outputs=1)
    engine = FinetuneEngine(model, FinetuneConfig(lr=1e-3), total_steps=5, task="regression", n_outputs=1)
    targets = torch.tensor([40.0, 60.0, 50.0, 70.0])
    engine.set_target_scaling(targets.numpy())
    x = torch.randn(4, tiny_cfg.n_rois, tiny_cfg.frames)
    engine.train_step(x, targets)
    with torch.no_grad():
        raw = model(x).squeeze(1)
    std = targets.std(unbiased=False)
    assert engine.predict(x) == pytest.approx((raw * std + 55.0).numpy(), rel=1e-5)
    other = FinetuneEngine(
        _model(tiny_cfg, tiny_gradients, n_outputs=1, seed=1),
        FinetuneConfig(lr=1e-3),
        total_steps=5,
        task="regression",
        n_outputs=1,
    )
    other.load_state_dict(engine.state_dict())
    assert other.step == 1 and other.predict(x) == pytest.approx(engine.predict(x), rel=1e-6)


def test_engine_under_ddp_matches_plain_training(tiny_cfg, tiny_gradients, tmp_path) -> None:
    x, y = _easy_task(tiny_cfg, n=8)
    cfg = FinetuneConfig(lr=1e-3, warmup_fraction=0.0)
    plain = _model(tiny_cfg, tiny_gradients)
    wrapped = _model(tiny_cfg, tiny_gradients)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        ddp = DistributedDataParallel(wrapped)
        engines = [
            FinetuneEngine(plain, cfg, total_steps=3, task="classification", n_outputs=2),
            FinetuneEngine(wrapped, cfg, total_steps=3, task="classification", n_outputs=2, train_module=ddp),
        ]
        losses = [[e.train_step(x, y) for _ in range(3)] for e in engines]
    finally:
        dist.destroy_process_group()
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    for (name, a), b in zip(plain.named_parameters(), wrapped.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
