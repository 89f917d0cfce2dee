"""Pretraining input and scaling benchmarks, ratios measured in one run.

    python benchmarks/pretrain_input.py --subjects 24 --samples 512

(a) samples/s from Parquet through Ray Data (windows, robust scaling, masks in the collate
    function) to the iterator, against the same work done by pyarrow + numpy alone in this process;
(c) samples/s of the tiny model trained with 1 and with 2 Ray Train workers on the same cohort
    (from the run's own MLflow metrics).
"""

from __future__ import annotations

import argparse
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


def ray_data_rate(cfg: PretrainConfig, n_samples: int) -> float:
    train, _, _ = build_datasets(cfg.data.dataset, cfg.model, cfg.data)
    collate = MaskingCollate(cfg.masks, cfg.model, seed=0, stream=0)
    seen, start = 0, time.perf_counter()
    while seen < n_samples:
        for batch in train.iter_torch_batches(batch_size=cfg.train.batch_size, collate_fn=collate, drop_last=True):
            seen += batch["series"].shape[0]
            if seen >= n_samples:
                break
    return seen / (time.perf_counter() - start)


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


def training_rate(cfg: PretrainConfig, workers: int, tmp: Path) -> float:
    from mlflow.tracking import MlflowClient

    tracking = f"sqlite:///{tmp}/mlflow-{workers}.db"
    overrides = [f"train.num_workers={workers}", f"train.name=bench-{workers}", f"tracking.tracking_uri={tracking}",
                 f"train.storage_path={tmp}/runs", "tracking.register=false"]
    run = load_config(PretrainConfig, ROOT / "configs/pretrain/tiny.yaml",
                      [*overrides, f"data.dataset={cfg.data.dataset}", "train.steps=40", "train.log_every=10",
                       "train.checkpoint_every=40", "data.windows_per_scan=16"])
    result = run_pretraining(run)
    history = MlflowClient(tracking).get_metric_history(result.run_id, "samples_per_s")
    return float(np.median([m.value for m in history[1:]] or [m.value for m in history]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subjects", type=int, default=24)
    parser.add_argument("--samples", type=int, default=512)
    args = parser.parse_args()
    init_ray()
    with tempfile.TemporaryDirectory(prefix="brainjepa-bench-") as tmp:
        uri = str(Path(tmp) / "cohort")
        write_parquet(uri, SynthOptions(subjects=args.subjects, rois=24, frames=(120, 160)))
        cfg = load_config(PretrainConfig, ROOT / "configs/pretrain/tiny.yaml",
                          [f"data.dataset={uri}", "data.val_fraction=0"])
        cfg.model.n_rois = read_manifest(uri)["atlas"]["n_rois"]
        ray_rate, arrow_rate = ray_data_rate(cfg, args.samples), pyarrow_rate(cfg, args.samples)
        print(f"(a) input pipeline: Ray Data {ray_rate:.0f} samples/s, pyarrow alone {arrow_rate:.0f} samples/s, "
              f"ratio {ray_rate / arrow_rate:.2f}")
        one, two = training_rate(cfg, 1, Path(tmp)), training_rate(cfg, 2, Path(tmp))
        print(f"(c) tiny model: 1 worker {one:.1f} samples/s, 2 workers {two:.1f} samples/s, ratio {two / one:.2f}")


if __name__ == "__main__":
    main()
