"""Pretraining input and scaling benchmarks, ratios measured in one run.

    python benchmarks/pretrain_input.py --subjects 24 --samples 2048

(a) samples/s from Parquet through Ray Data (windows, robust scaling, masks in the collate
    function) to the iterator, against the same work done by pyarrow + numpy alone in this process;
(b) data-wait fraction of step time while training the small model (450 ROIs x 160 frames) with
    one worker on this machine's CPUs, from the run's own MLflow metrics (first window, with the
    pipeline's start-up, reported apart from the steady state);
(c) samples/s of the tiny model trained with 1 and with 2 Ray Train workers on the same cohort
    (from the run's own MLflow metrics).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from brainjepa.config import load_config
from brainjepa.preprocess import RobustStats, sample_window
from brainjepa_platform.cluster import init_ray
from brainjepa_platform.ingest import read_manifest, shard_locations
from brainjepa_platform.pretrain import run_pretraining
from brainjepa_platform.pretrain_config import PretrainConfig
from brainjepa_platform.streaming import MaskingCollate, build_datasets
from brainjepa_platform.synth import SynthOptions, write_parquet

ROOT = Path(__file__).resolve().parents[1]


def ray_data_rate(cfg: PretrainConfig, n_samples: int) -> tuple[float, float]:
    """Through Ray Data to a worker-style iterator (streaming split, local shuffle, prefetch):
    (samples/s from the first batch on, samples/s including the pipeline's start-up)."""
    start = time.perf_counter()
    train, _, _ = build_datasets(cfg.data.dataset, cfg.model, cfg.data, samples_needed=n_samples)
    shard = train.streaming_split(1, equal=True)[0]
    collate = MaskingCollate(cfg.masks, cfg.model, seed=0, stream=0)
    seen, first, first_at = 0, 0, 0.0
    while seen < n_samples:
        for batch in shard.iter_torch_batches(batch_size=cfg.train.batch_size, collate_fn=collate, drop_last=True,
                                              local_shuffle_buffer_size=cfg.data.shuffle_buffer,
                                              prefetch_batches=cfg.data.prefetch_batches):
            seen += batch["series"].shape[0]
            if not first:
                first, first_at = seen, time.perf_counter()
            if seen >= n_samples:
                break
    end = time.perf_counter()
    return (seen - first) / (end - first_at), seen / (end - start)


def pyarrow_rate(cfg: PretrainConfig, n_samples: int) -> float:
    """The same windows, scaling and masks, read with pyarrow in this process (no Ray)."""
    manifest = read_manifest(cfg.data.dataset)
    stats = RobustStats.from_dict(manifest["robust_stats"])
    loc, paths = shard_locations(cfg.data.dataset)
    collate = MaskingCollate(cfg.masks, cfg.model, seed=0, stream=0)
    rng = np.random.default_rng(0)
    seen, start, pending = 0, time.perf_counter(), []
    while seen < n_samples:
        for path in paths:
            table = pq.read_table(path, filesystem=loc.fs, columns=["tr", "n_rois", "n_frames", "series"])
            for row in table.to_pylist():
                series = np.asarray(row["series"], dtype=np.float32).reshape(row["n_rois"], row["n_frames"])
                for _ in range(cfg.data.windows_per_scan):
                    pending.append(stats.scale(sample_window(series, row["tr"], cfg.data.target_tr, cfg.model.frames,
                                                             rng)))
                while len(pending) >= cfg.train.batch_size:
                    collate({"series": np.stack(pending[: cfg.train.batch_size])})
                    pending = pending[cfg.train.batch_size :]
                    seen += cfg.train.batch_size
    return seen / (time.perf_counter() - start)


def run_metric(config: str, overrides: list[str], name: str, tmp: Path, metric: str) -> list[float]:
    """Train with ``config`` + overrides (no registration) and return the history of one logged metric."""
    from mlflow.tracking import MlflowClient

    tracking = f"sqlite:///{tmp}/mlflow-{name}.db"
    run = load_config(PretrainConfig, ROOT / config,
                      [*overrides, f"train.name=bench-{name}", f"tracking.tracking_uri={tracking}",
                       f"train.storage_path={tmp}/runs", "tracking.register=false"])
    result = run_pretraining(run)
    return [m.value for m in MlflowClient(tracking).get_metric_history(result.run_id, metric)]


def training_rate(dataset: str, workers: int, tmp: Path) -> float:
    history = run_metric("configs/pretrain/tiny.yaml",
                         [f"data.dataset={dataset}", f"train.num_workers={workers}", "train.steps=40",
                          "train.log_every=10", "train.checkpoint_every=40", "data.windows_per_scan=16"],
                         f"tiny-{workers}", tmp, "samples_per_s")
    return float(np.median(history[1:] or history))


def data_wait(tmp: Path, subjects: int, steps: int) -> list[float]:
    """data_wait_fraction per log window of a small-model run (batch 2, one worker with every CPU)."""
    uri = str(tmp / "cohort-450")
    write_parquet(uri, SynthOptions(subjects=subjects, rois=450, frames=(450, 500)))
    cpus = max(1, (os.cpu_count() or 2))
    return run_metric("configs/pretrain/small.yaml",
                      [f"data.dataset={uri}", "train.num_workers=1", "train.use_gpu=false", "train.dtype=float32",
                       f"train.cpus_per_worker={cpus}", "train.batch_size=2", "optim.accumulation_steps=1",
                       f"train.steps={steps}", "train.log_every=2", f"train.checkpoint_every={steps}",
                       "train.val_batches=0"], "small", tmp, "data_wait_fraction")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subjects", type=int, default=24)
    parser.add_argument("--samples", type=int, default=2048)
    parser.add_argument("--small-steps", type=int, default=12, help="steps of the small-model run for (b)")
    args = parser.parse_args()
    init_ray()
    with tempfile.TemporaryDirectory(prefix="brainjepa-bench-") as tmp:
        uri = str(Path(tmp) / "cohort")
        write_parquet(uri, SynthOptions(subjects=args.subjects, rois=24, frames=(120, 160)))
        cfg = load_config(PretrainConfig, ROOT / "configs/pretrain/tiny.yaml",
                          [f"data.dataset={uri}", "data.val_fraction=0"])
        cfg.model.n_rois = read_manifest(uri)["atlas"]["n_rois"]
        (steady, overall), arrow_rate = ray_data_rate(cfg, args.samples), pyarrow_rate(cfg, args.samples)
        print(f"(a) input pipeline: Ray Data {steady:.0f} samples/s after the first batch ({overall:.0f} including "
              f"start-up), pyarrow alone {arrow_rate:.0f} samples/s; ratio {steady / arrow_rate:.2f} "
              f"({overall / arrow_rate:.2f} including start-up)")
        waits = data_wait(Path(tmp), args.subjects, args.small_steps)
        print(f"(b) small model, batch 2, 1 worker: data-wait fraction {waits[0]:.3f} in the first window "
              f"(pipeline start-up), then median {np.median(waits[1:]):.3f} (max {max(waits[1:]):.3f}) over "
              f"{len(waits) - 1} windows of 2 steps")
        one, two = training_rate(uri, 1, Path(tmp)), training_rate(uri, 2, Path(tmp))
        print(f"(c) tiny model: 1 worker {one:.1f} samples/s, 2 workers {two:.1f} samples/s, ratio {two / one:.2f}")


if __name__ == "__main__":
    main()
