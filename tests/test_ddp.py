"""The engine under DistributedDataParallel: accumulation all-reduces once per optimizer step."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.nn.parallel import DistributedDataParallel

from brainjepa.jepa import BrainJEPA, PretrainEngine
from brainjepa.local import ScanSampler
from brainjepa.masks import MaskConfig
from brainjepa.model import ModelConfig
from brainjepa.preprocess import robust_stats
from brainjepa.schedules import OptimConfig
from brainjepa.synthetic import synthetic_cohort


def test_gradient_accumulation_syncs_once_per_step(tmp_path) -> None:
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        cfg = ModelConfig(size="tiny", n_rois=12, frames=32, patch=8, n_gradients=3)
        model = BrainJEPA(cfg, torch.randn(12, 3))
        ddp = DistributedDataParallel(model.student, bucket_cap_mb=1000)
        calls = []

        def counting_hook(state, bucket):
            calls.append(1)
            return default_hooks.allreduce_hook(None, bucket)

        ddp.register_comm_hook(None, counting_hook)
        engine = PretrainEngine(model, OptimConfig(accumulation_steps=3), total_steps=4, student=ddp)
        cohort = synthetic_cohort(6, 12, n_frames=50, seed=0)
        sampler = iter(
            ScanSampler(
                cohort.series,
                cohort.tr,
                robust_stats(cohort.series),
                cfg,
                MaskConfig(),
                batch_size=2,
                target_tr=2.0,
                seed=0,
            )
        )
        for step in range(2):
            before = len(calls)
            metrics = engine.train_step([next(sampler) for _ in range(3)])
            assert len(calls) - before == 1, "one all-reduce per optimizer step, none per micro-batch"
            assert metrics["step"] == step + 1
    finally:
        dist.destroy_process_group()
