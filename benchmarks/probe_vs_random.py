"""Does a short pretraining give features that beat a randomly initialised encoder? (issue: evaluation)

    python benchmarks/probe_vs_random.py --subjects 200 --steps 200 [--lr 5e-4 --ema 0.999 ...]

Single process, no Ray: pretrains the tiny model on a synthetic cohort (``brainjepa.local``), embeds
every scan with the target encoder and with a random encoder of the same architecture and
gradients (tiling windows, mean-pooled tokens, as ``brainjepa embed`` does), and runs the linear
probe of ``brainjepa evaluate`` (subject splits 60/20/20, ridge alpha chosen on validation) on the
cohort's ``coupling`` and ``age`` beside the FC baseline. Prints test Pearson r, mean +- std over
seeds, with the run's final target std and effective rank (collapse monitors). Not a timing.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from brainjepa.local import LocalPretrainConfig, cohort_gradients, run_local_pretraining
from brainjepa.model import BrainEncoder, ModelConfig
from brainjepa.preprocess import RobustStats, robust_stats
from brainjepa.schedules import OptimConfig
from brainjepa.synthetic import SyntheticCohort, synthetic_cohort
from brainjepa_platform.embed import embed_scan
from brainjepa_platform.probe import compare_features, fc_features
from brainjepa_platform.tracking import EncoderBundle

PHENOTYPES = ("coupling", "age")


def pooled_features(encoder: BrainEncoder, cohort: SyntheticCohort, stats: RobustStats, target_tr: float) -> np.ndarray:
    """(n_scans, D): each scan through ``brainjepa embed``'s own per-scan path (tiling windows, mean pool)."""
    cfg = encoder.cfg
    bundle = EncoderBundle(encoder.eval(), cfg, stats, [f"roi-{i}" for i in range(cfg.n_rois)], "synthetic",
                           encoder.pos_embed.gradients.numpy() if cfg.positional == "gradient" else
                           np.zeros((cfg.n_rois, 0)), target_tr)
    return np.stack([embed_scan(bundle, series, tr, target_tr, per_roi=False, batch_size=64)[0]
                     for series, tr in zip(cohort.series, cohort.tr)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subjects", type=int, default=200)
    parser.add_argument("--rois", type=int, default=24)
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--ema", type=float, default=0.996, help="EMA momentum at the start (-> 1.0)")
    parser.add_argument("--seeds", type=int, default=5, help="probe splits")
    parser.add_argument("--seed", type=int, default=0, help="cohort and pretraining seed")
    args = parser.parse_args()

    target_tr = 2.0
    cohort = synthetic_cohort(args.subjects, args.rois, n_frames=(100, 140), tr=(0.8, 1.0, 2.0), seed=args.seed)
    model = ModelConfig(size="tiny", n_rois=args.rois, frames=args.frames, patch=8, n_gradients=8)
    optim = OptimConfig(lr=args.lr, start_lr=args.lr / 10, warmup_fraction=0.1, ema_start=args.ema)
    cfg = LocalPretrainConfig(model=model, optim=optim, steps=args.steps, batch_size=args.batch_size,
                              subjects=args.subjects, target_tr=target_tr, seed=args.seed)
    engine, history = run_local_pretraining(cfg, cohort)
    last = history[-1]
    print(f"pretraining: loss {history[0]['loss']:.3f} -> {last['loss']:.3f}, target std "
          f"{history[0]['target_std']:.3f} -> {last['target_std']:.3f}, effective rank {last['target_rank']:.1f}")

    stats = robust_stats(cohort.series)
    torch.manual_seed(args.seed + 1)
    random_encoder = BrainEncoder(model, cohort_gradients(cohort.series, model.n_gradients))
    features = {
        "brain-jepa": pooled_features(engine.model.target_encoder, cohort, stats, target_tr),
        "random-encoder": pooled_features(random_encoder, cohort, stats, target_tr),
        "fc-baseline": fc_features([stats.scale(s) for s in cohort.series]),
    }
    subjects = [f"sub-{i:04d}" for i in range(args.subjects)]
    for phenotype in PHENOTYPES:
        result = compare_features(features, subjects, cohort.phenotypes[phenotype], "regression",
                                  seeds=list(range(args.seeds)))
        cells = [f"{name} {mean:+.2f} +- {std:.2f}" for name, (mean, std) in
                 ((n, result.summary()[n]["pearson_r"]) for n in result.names)]
        print(f"{phenotype:>8}: test Pearson r  " + " | ".join(cells))


if __name__ == "__main__":
    main()
