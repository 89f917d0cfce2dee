"""Schedules at known steps, gradient accumulation, save/resume, determinism, monitors on noise."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from brainjepa.jepa import BrainJEPA, PretrainEngine, parameter_groups
from brainjepa.local import LocalPretrainConfig, ScanSampler, local_pretraining, run_local_pretraining
from brainjepa.masks import MaskConfig
from brainjepa.model import ModelConfig
from brainjepa.monitors import collapse_monitors
from brainjepa.preprocess import robust_stats
from brainjepa.schedules import OptimConfig, Schedules
from brainjepa.synthetic import SyntheticCohort, synthetic_cohort


def test_schedules_at_known_steps() -> None:
    cfg = OptimConfig(
        lr=1e-3,
        start_lr=5e-5,
        final_lr=1e-6,
        warmup_fraction=0.1,
        weight_decay=0.04,
        final_weight_decay=0.4,
        ema_start=0.996,
        ema_end=1.0,
    )
    s = Schedules(cfg, total_steps=1000)
    assert s.warmup_steps == 100
    assert s.lr(0) == pytest.approx(5e-5)
    assert s.lr(50) == pytest.approx(5e-5 + 0.5 * (1e-3 - 5e-5))
    assert s.lr(100) == pytest.approx(1e-3)
    assert s.lr(550) == pytest.approx(1e-6 + 0.5 * (1e-3 - 1e-6))
    assert s.lr(1000) == pytest.approx(1e-6)
    assert s.weight_decay(0) == pytest.approx(0.04) and s.weight_decay(1000) == pytest.approx(0.4)
    assert s.weight_decay(500) == pytest.approx(0.22)
    # EMA momentum reaches 1.0 over the optimizer steps (the reference stalled near 0.9965)
    assert s.ema_momentum(0) == pytest.approx(0.996)
    assert s.ema_momentum(500) == pytest.approx(0.998)
    assert s.ema_momentum(1000) == pytest.approx(1.0)


def _setup(accumulation: int, total: int = 6, seed: int = 0, masks: MaskConfig | None = None):
    torch.manual_seed(seed)
    cfg = ModelConfig(size="tiny", n_rois=16, frames=32, patch=8, n_gradients=4)
    cohort = synthetic_cohort(12, 16, n_frames=60, tr=2.0, seed=seed)
    grads = torch.randn(16, 4, generator=torch.Generator().manual_seed(seed))
    optim = OptimConfig(accumulation_steps=accumulation, warmup_fraction=0.5)
    engine = PretrainEngine(BrainJEPA(cfg, grads), optim, total_steps=total)
    sampler = iter(
        ScanSampler(
            cohort.series,
            cohort.tr,
            robust_stats(cohort.series),
            cfg,
            masks or MaskConfig(),
            batch_size=4,
            target_tr=2.0,
            seed=seed,
        )
    )
    return engine, sampler


def _run(engine: PretrainEngine, sampler, n: int) -> list[dict]:
    return [engine.train_step([next(sampler) for _ in range(engine.optim_cfg.accumulation_steps)]) for _ in range(n)]


def test_accumulation_advances_schedules_per_optimizer_step() -> None:
    engine, sampler = _setup(accumulation=4, total=6)
    metrics = _run(engine, sampler, 3)
    assert engine.step == 3
    s = engine.schedules
    assert [m["lr"] for m in metrics] == pytest.approx([s.lr(0), s.lr(1), s.lr(2)])
    assert [m["ema_momentum"] for m in metrics] == pytest.approx([s.ema_momentum(k) for k in range(3)])
    assert engine.optimizer.param_groups[0]["lr"] == pytest.approx(s.lr(2))
    with pytest.raises(ValueError, match="micro-batches"):
        engine.train_step([next(sampler)])


def test_a_metric_of_any_micro_batch_is_averaged_over_those_that_report_it() -> None:
    """In-block targets may be empty in one micro-batch (sizes are drawn per micro-batch): its loss still
    reaches the step's metrics, whichever micro-batch comes first."""
    engine, plain = _setup(accumulation=2, total=4)
    _, in_block = _setup(accumulation=2, total=4, masks=MaskConfig(in_block_scale=(0.2, 0.3)))
    for first, second in ((plain, in_block), (in_block, plain)):
        metrics = engine.train_step([next(first), next(second)])
        assert np.isfinite(metrics["l1_in_block"]) and np.isfinite(metrics["l1_cross_roi"])


@pytest.mark.slow
def test_save_resume_matches_uninterrupted_run(tmp_path) -> None:
    straight, sampler = _setup(accumulation=2, total=6)
    straight_metrics = _run(straight, sampler, 6)

    first, sampler = _setup(accumulation=2, total=6)
    _run(first, sampler, 3)
    first.save(tmp_path / "ckpt.pt")
    resumed, _ = _setup(accumulation=2, total=6, seed=1)  # different init: everything must come from the file
    resumed.load(tmp_path / "ckpt.pt")
    assert resumed.step == 3
    resumed_metrics = _run(resumed, sampler, 3)

    assert [m["lr"] for m in resumed_metrics] == pytest.approx([m["lr"] for m in straight_metrics[3:]])
    assert [m["loss"] for m in resumed_metrics] == pytest.approx([m["loss"] for m in straight_metrics[3:]], rel=1e-5)
    for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_resume_refuses_a_different_schedule(tmp_path) -> None:
    engine, sampler = _setup(accumulation=1, total=6)
    _run(engine, sampler, 1)
    engine.save(tmp_path / "c.pt")
    other, _ = _setup(accumulation=1, total=7)
    with pytest.raises(ValueError, match="6 optimizer steps"):
        other.load(tmp_path / "c.pt")


def test_ema_moves_target_towards_student() -> None:
    engine, sampler = _setup(accumulation=1, total=4)
    before = [p.clone() for p in engine.model.target_encoder.parameters()]
    m = _run(engine, sampler, 1)[0]["ema_momentum"]
    for b, t, s in zip(before, engine.model.target_encoder.parameters(), engine.model.student.encoder.parameters()):
        torch.testing.assert_close(t, m * b + (1 - m) * s)


def test_weight_decay_only_on_matrices() -> None:
    model = BrainJEPA(ModelConfig(size="tiny", n_rois=8, frames=16, patch=8, n_gradients=2), torch.randn(8, 2))
    decay, no_decay = parameter_groups(model.student)
    assert all(p.ndim >= 2 for p in decay["params"])
    assert all(p.ndim == 1 for p in no_decay["params"])
    engine = PretrainEngine(model, OptimConfig(), total_steps=10)
    engine._apply_schedules()
    assert engine.optimizer.param_groups[1]["weight_decay"] == 0.0
    assert engine.optimizer.param_groups[0]["weight_decay"] == pytest.approx(0.04)


def test_same_seed_same_first_losses() -> None:
    cfg = LocalPretrainConfig(steps=3, subjects=8, batch_size=4)
    _, h1 = run_local_pretraining(cfg)
    _, h2 = run_local_pretraining(cfg)
    assert [m["loss"] for m in h1] == [m["loss"] for m in h2]
    _, h3 = run_local_pretraining(LocalPretrainConfig(steps=3, subjects=8, batch_size=4, seed=1))
    assert [m["loss"] for m in h3] != [m["loss"] for m in h1]


@pytest.mark.slow
def test_a_falling_loss_on_white_noise_is_not_learning() -> None:
    """The loss falls on white noise too (the positional part of the targets): the monitors say so."""
    rng = np.random.default_rng(0)
    noise = SyntheticCohort(
        series=[rng.standard_normal((32, 160)).astype(np.float32) for _ in range(16)],
        tr=np.full(16, 2.0),
        network=np.arange(32) * 7 // 32,
    )
    _, history = run_local_pretraining(
        LocalPretrainConfig(steps=60, batch_size=8, subjects=16, monitor_every=10), noise
    )
    first = sum(m["loss"] for m in history[:5]) / 5
    last = sum(m["loss"] for m in history[-5:]) / 5
    assert last < 0.7 * first and all(math.isfinite(m["loss"]) for m in history)
    monitored = [m for m in history if "loss_over_floor" in m][-3:]
    assert min(m["loss_over_floor"] for m in monitored) > 0.9  # no better than predicting from positions
    assert max(abs(m["context_reliance"]) for m in monitored) < 0.01  # the context carries nothing
    assert {"l1_cross_roi", "l1_cross_time", "l1_double_cross", "target_std", "target_rank"} <= set(history[-1])


def _steps_and_weights(dtype: str) -> list[tuple[dict, torch.Tensor]]:
    """Two local steps (same seed: same initial weights, batches and masks): metrics and flat weights after each."""
    cfg = LocalPretrainConfig(steps=2, subjects=6, batch_size=2, dtype=dtype)
    return [
        (metrics, torch.cat([p.detach().flatten().clone() for p in engine.model.student.parameters()]))
        for engine, metrics in local_pretraining(cfg)
    ]


def test_bf16_autocast_step_runs_on_cpu_and_follows_the_float32_step() -> None:
    bf16, fp32 = _steps_and_weights("bf16"), _steps_and_weights("float32")
    assert all(math.isfinite(m["loss"]) for m, _ in bf16)
    for (low, _), (full, _) in zip(bf16, fp32):  # same weights and batch: the loss within bf16 rounding
        assert low["loss"] == pytest.approx(full["loss"], rel=1e-2)
    assert [m["loss"] for m, _ in bf16] != [m["loss"] for m, _ in fp32]  # autocast did compute in bf16
    # the second optimizer step (bf16 gradients) moves the weights the way the float32 step does
    low_update, full_update = bf16[1][1] - bf16[0][1], fp32[1][1] - fp32[0][1]
    assert torch.nn.functional.cosine_similarity(low_update, full_update, dim=0) > 0.99
    assert low_update.norm() == pytest.approx(full_update.norm().item(), rel=0.05)


def test_collapse_monitors() -> None:
    g = torch.Generator().manual_seed(0)
    collapsed = collapse_monitors(torch.ones(500, 32) + 1e-6 * torch.randn(500, 32, generator=g))
    spread = collapse_monitors(torch.randn(500, 32, generator=g))
    assert collapsed["std"] < 1e-4
    assert spread["rank"] > 25 and spread["std"] == pytest.approx(1.0, abs=0.1)
    low_rank = collapse_monitors(torch.randn(500, 2, generator=g) @ torch.randn(2, 32, generator=g))
    assert low_rank["rank"] < 2.5
