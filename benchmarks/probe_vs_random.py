"""Does a short pretraining give features that beat a randomly initialised encoder? (issue: evaluation)

    python benchmarks/probe_vs_random.py --subjects 200 --steps 200 [--lr 5e-4 --ema 0.999 ...]
    python benchmarks/probe_vs_random.py --steps 3000 --checkpoints 1000,2000   # probe along the way
    python benchmarks/probe_vs_random.py --size small --device cuda --dtype bf16 --batch-size 64 --steps 4000

Single process, no Ray: pretrains a model on a synthetic cohort (``brainjepa.local``), embeds
every scan with the target encoder and with a random encoder of the same architecture and
gradients (tiling windows, mean-pooled tokens, as ``brainjepa embed`` does), and runs the linear
probe of ``brainjepa evaluate`` (subject splits 60/20/20, ridge alpha chosen on validation) on the
cohort's ``coupling`` and ``age`` beside the FC baseline. Prints, at each checkpoint and at the end,
test Pearson r (mean +- std over seeds), the target std and effective rank (collapse monitors), and
how much attention each encoder block puts on tokens of the same network at the same time patch
(uniform attention gives the chance level printed beside it). Not a timing.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from brainjepa.local import LocalPretrainConfig, cohort_gradients, local_pretraining
from brainjepa.model import BrainEncoder, ModelConfig
from brainjepa.monitors import attention_share
from brainjepa.preprocess import RobustStats, robust_stats, tiling_windows
from brainjepa.schedules import OptimConfig
from brainjepa.synthetic import SyntheticCohort, synthetic_cohort
from brainjepa_platform.evaluate.embed import embed_scan
from brainjepa_platform.evaluate.probe import compare_features, fc_features
from brainjepa_platform.tracking.bundle import EncoderBundle

PHENOTYPES = ("coupling", "age")


def pooled_features(encoder: BrainEncoder, cohort: SyntheticCohort, stats: RobustStats, target_tr: float) -> np.ndarray:
    """(n_scans, D): each scan through ``brainjepa embed``'s own per-scan path (tiling windows, mean pool)."""
    cfg = encoder.cfg
    bundle = EncoderBundle(
        encoder.eval(),
        cfg,
        stats,
        [f"roi-{i}" for i in range(cfg.n_rois)],
        "synthetic",
        encoder.pos_embed.gradients.cpu().numpy() if cfg.positional == "gradient" else np.zeros((cfg.n_rois, 0)),
        target_tr,
    )
    with torch.no_grad():
        return np.stack(
            [
                embed_scan(bundle, series, tr, target_tr, per_roi=False, batch_size=64).pooled
                for series, tr in zip(cohort.series, cohort.tr)
            ]
        )


def same_network_and_time(cohort: SyntheticCohort, n_time_patches: int) -> torch.Tensor:
    """(N, N) bool over the token grid: tokens of one network at one time patch."""
    network = np.repeat(cohort.network, n_time_patches)
    patch = np.tile(np.arange(n_time_patches), len(cohort.network))
    return torch.from_numpy((network[:, None] == network[None]) & (patch[:, None] == patch[None]))


def attention_locality(encoder: BrainEncoder, windows: torch.Tensor, related: torch.Tensor) -> str:
    """Per block, the mean attention mass on ``related`` tokens over ``windows`` (B, R, T)."""
    device = next(encoder.parameters()).device
    maps = encoder.eval().attention_maps(windows.to(device))
    return " ".join(f"{share:.3f}" for share in attention_share(maps, related.to(device)))


class Evaluation:
    """The fixed half of the comparison: cohort, scaling, random encoder and FC features."""

    def __init__(self, cohort: SyntheticCohort, model: ModelConfig, target_tr: float, seed: int, n_seeds: int) -> None:
        self.cohort, self.target_tr, self.seeds = cohort, target_tr, list(range(n_seeds))
        self.stats = robust_stats(cohort.series)
        torch.manual_seed(seed + 1)
        self.random_encoder = BrainEncoder(model, cohort_gradients(cohort.series, model.n_gradients))
        self.fixed = {
            "random-encoder": pooled_features(self.random_encoder, cohort, self.stats, target_tr),
            "fc-baseline": fc_features([self.stats.scale(s) for s in cohort.series]),
        }
        self.subjects = [f"sub-{i:04d}" for i in range(len(cohort.series))]
        # attention is read on each scan's first window, against same-network same-time tokens
        self.windows = torch.from_numpy(
            np.stack(
                [
                    self.stats.scale(tiling_windows(s, tr, target_tr, model.frames)[0])
                    for s, tr in zip(cohort.series, cohort.tr)
                ]
            )
        ).float()
        self.related = same_network_and_time(cohort, model.n_time_patches)
        self.random_locality = attention_locality(self.random_encoder, self.windows, self.related)
        self.chance = float(self.related.float().mean())

    def report(self, encoder: BrainEncoder, metrics: dict[str, float]) -> None:
        """Print the step's monitors, attention locality and the probe table for ``encoder``."""
        print(
            f"step {int(metrics['step'])}: loss {metrics['loss']:.3f}, target std {metrics['target_std']:.3f}, "
            f"effective rank {metrics['target_rank']:.1f}"
        )
        print(
            f"  same-network same-time attention per block: model "
            f"{attention_locality(encoder, self.windows, self.related)} | random {self.random_locality} | "
            f"chance {self.chance:.3f}"
        )
        features = {"brain-jepa": pooled_features(encoder, self.cohort, self.stats, self.target_tr), **self.fixed}
        for phenotype in PHENOTYPES:
            result = compare_features(
                features, self.subjects, self.cohort.phenotypes[phenotype], "regression", seeds=self.seeds
            )
            cells = [
                f"{name} {mean:+.2f} +- {std:.2f}"
                for name, (mean, std) in ((n, result.summary()[n]["pearson_r"]) for n in result.names)
            ]
            print(f"  {phenotype:>8}: test Pearson r  " + " | ".join(cells), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subjects", type=int, default=200)
    parser.add_argument("--size", default="tiny", help="model size preset (tiny, small, base, large)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", help="float32, or bf16 on a GPU")
    parser.add_argument("--checkpoints", default="", help="comma-separated steps to probe at before the end")
    parser.add_argument("--rois", type=int, default=24)
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--noise", type=float, default=0.6, help="per-ROI noise of the synthetic cohort")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--ema", type=float, default=0.996, help="EMA momentum at the start (-> 1.0)")
    parser.add_argument("--seeds", type=int, default=5, help="probe splits")
    parser.add_argument("--seed", type=int, default=0, help="cohort and pretraining seed")
    args = parser.parse_args()

    target_tr = 2.0
    cohort = synthetic_cohort(
        args.subjects, args.rois, n_frames=(100, 140), tr=(0.8, 1.0, 2.0), noise=args.noise, seed=args.seed
    )
    model = ModelConfig(size=args.size, n_rois=args.rois, frames=args.frames, patch=8, n_gradients=8)
    optim = OptimConfig(lr=args.lr, start_lr=args.lr / 10, warmup_fraction=0.1, ema_start=args.ema)
    cfg = LocalPretrainConfig(
        model=model,
        optim=optim,
        steps=args.steps,
        batch_size=args.batch_size,
        subjects=args.subjects,
        target_tr=target_tr,
        seed=args.seed,
        device=args.device,
        dtype=args.dtype,
    )
    evaluation = Evaluation(cohort, model, target_tr, args.seed, args.seeds)
    checkpoints = {int(s) for s in args.checkpoints.split(",") if s} | {args.steps}
    for engine, metrics in local_pretraining(cfg, cohort):
        if engine.step in checkpoints:
            evaluation.report(engine.model.target_encoder, metrics)


if __name__ == "__main__":
    main()
