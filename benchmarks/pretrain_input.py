"""Pretraining input and scaling benchmarks, ratios measured in one run.

    python benchmarks/pretrain_input.py --subjects 24 --samples 2048

(a) samples/s from Parquet through Ray Data (windows, robust scaling, tensors in the collate
    function, step-keyed masks drawn ahead as in training) to the iterator, against the same work
    done by pyarrow + numpy alone in this process, at the small model's input shape and at the tiny
    model's (where per-batch overhead dominates);
    steady state (second half of the samples), alternated and repeated, medians;
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
from brainjepa.preprocess import sample_window
from brainjepa_platform.cluster.connect import init_ray
from brainjepa_platform.data.ingestion import shard_locations
from brainjepa_platform.data.manifest import read_manifest
from brainjepa_platform.data.synth import SynthOptions, write_parquet
from brainjepa_platform.tracking.pretraining import run_pretraining
from brainjepa_platform.train.config import PretrainConfig
from brainjepa_platform.train.loop import step_keys
from brainjepa_platform.train.streaming import MaskingCollate, build_datasets

ROOT = Path(__file__).resolve().parents[1]


def ray_data_rate(cfg: PretrainConfig, n_samples: int) -> tuple[float, float]:
    """Through Ray Data to a worker-style iterator (streaming split, collate function, prefetch, masks
    keyed by step as the training loop draws them): (samples/s over the second half, seconds to the first
    batch)."""
    start = time.perf_counter()
    train, _, _ = build_datasets(cfg.data.dataset, cfg.model, cfg.data, samples_needed=n_samples)
    shard = train.streaming_split(1, equal=True)[0]
    collate = MaskingCollate(cfg.masks, cfg.model, seed=0, stream=0)
    marks: list[tuple[int, float]] = []
    seen = 0
    collated = shard.iter_torch_batches(
        batch_size=cfg.train.batch_size,
        collate_fn=collate,
        drop_last=True,
        local_shuffle_buffer_size=cfg.data.shuffle_buffer or None,
        prefetch_batches=cfg.data.prefetch_batches,
    )
    for batch in collate.masked(collated, step_keys(0, 1), cfg.train.batch_size):
        seen += batch["series"].shape[0]
        marks.append((seen, time.perf_counter()))
        if seen >= n_samples:
            break
    half_seen, half_at = marks[len(marks) // 2]
    return (seen - half_seen) / (marks[-1][1] - half_at), marks[0][1] - start


def input_ratio(cfg: PretrainConfig, n_samples: int, repeats: int) -> dict[str, float]:
    """Ray Data and pyarrow alone, alternated ``repeats`` times (the machine is shared): medians."""
    ray_rates, arrow_rates, first_batch = [], [], []
    for _ in range(repeats):
        rate, first = ray_data_rate(cfg, n_samples)
        ray_rates.append(rate)
        first_batch.append(first)
        arrow_rates.append(pyarrow_rate(cfg, n_samples // 2))
    ratios = np.asarray(ray_rates) / np.asarray(arrow_rates)
    return {
        "ray": float(np.median(ray_rates)),
        "arrow": float(np.median(arrow_rates)),
        "ratio": float(np.median(ratios)),
        "ratio_min": float(ratios.min()),
        "first_cold": first_batch[0],
        "first_warm": float(np.median(first_batch[1:] or first_batch)),
    }


def pyarrow_rate(cfg: PretrainConfig, n_samples: int) -> float:
    """The same windows, scaling and masks, read with pyarrow in this process (no Ray).

    Each shard's ``series`` column is taken as one flat numpy buffer (zero-copy) and sliced per scan:
    the fastest plain-pyarrow path, so the ratio in (a) is not flattered by a slow baseline.
    """
    stats = read_manifest(cfg.data.dataset).stats()
    loc, paths = shard_locations(cfg.data.dataset)
    collate = MaskingCollate(cfg.masks, cfg.model, seed=0, stream=0)
    rng = np.random.default_rng(0)
    seen, start, pending = 0, time.perf_counter(), []
    while seen < n_samples:
        for path in paths:
            table = pq.read_table(path, filesystem=loc.fs, columns=["tr", "n_rois", "n_frames", "series"])
            column = table.column("series").combine_chunks()
            values, offsets = column.values.to_numpy(), column.offsets.to_numpy()
            trs, rois, frames = (table.column(c).to_numpy() for c in ("tr", "n_rois", "n_frames"))
            for i in range(table.num_rows):
                series = values[offsets[i] : offsets[i + 1]].reshape(int(rois[i]), int(frames[i]))
                for _ in range(cfg.data.windows_per_scan):
                    pending.append(
                        stats.scale(sample_window(series, float(trs[i]), cfg.data.target_tr, cfg.model.frames, rng))
                    )
                while len(pending) >= cfg.train.batch_size:
                    collate({"series": np.stack(pending[: cfg.train.batch_size])})
                    collate.collator.masks_for((seen, 0), cfg.train.batch_size)
                    pending = pending[cfg.train.batch_size :]
                    seen += cfg.train.batch_size
    return seen / (time.perf_counter() - start)


def run_metric(config: str, overrides: list[str], name: str, tmp: Path, metric: str) -> list[float]:
    """Train with ``config`` + overrides (no registration) and return the history of one logged metric."""
    from mlflow.tracking import MlflowClient

    tracking = f"sqlite:///{tmp}/mlflow-{name}.db"
    run = load_config(
        PretrainConfig,
        ROOT / config,
        [
            *overrides,
            f"train.name=bench-{name}",
            f"tracking.tracking_uri={tracking}",
            f"train.storage_path={tmp}/runs",
            "tracking.register=false",
        ],
    )
    result = run_pretraining(run)
    return [m.value for m in MlflowClient(tracking).get_metric_history(result.run_id, metric)]


def training_rate(dataset: str, workers: int, tmp: Path) -> float:
    history = run_metric(
        "configs/pretrain/tiny.yaml",
        [
            f"data.dataset={dataset}",
            f"train.num_workers={workers}",
            "train.steps=40",
            "train.log_every=10",
            "train.checkpoint_every=40",
            "data.windows_per_scan=16",
        ],
        f"tiny-{workers}",
        tmp,
        "samples_per_s",
    )
    return float(np.median(history[1:] or history))


def data_wait(uri: str, steps: int, tmp: Path) -> list[float]:
    """data_wait_fraction per log window of a small-model run (batch 2, one worker with every CPU)."""
    cpus = max(1, (os.cpu_count() or 2))
    return run_metric(
        "configs/pretrain/small.yaml",
        [
            f"data.dataset={uri}",
            "train.num_workers=1",
            "train.use_gpu=false",
            "train.dtype=float32",
            f"train.cpus_per_worker={cpus}",
            "train.batch_size=2",
            "optim.accumulation_steps=1",
            f"train.steps={steps}",
            "train.log_every=2",
            f"train.checkpoint_every={steps}",
            "train.val_batches=0",
        ],
        "small",
        tmp,
        "data_wait_fraction",
    )


def print_ratio(label: str, r: dict[str, float]) -> None:
    print(
        f"(a) {label}: Ray Data {r['ray']:.0f} samples/s, pyarrow alone {r['arrow']:.0f} samples/s; "
        f"ratio {r['ratio']:.2f} (lowest of the repeats {r['ratio_min']:.2f}); first batch after "
        f"{r['first_cold']:.1f} s on a fresh cluster, {r['first_warm']:.1f} s once Ray's workers exist"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subjects", type=int, default=24)
    parser.add_argument("--samples", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=3, help="alternated Ray Data / pyarrow measurements in (a)")
    parser.add_argument("--small-steps", type=int, default=12, help="steps of the small-model run for (b)")
    args = parser.parse_args()
    init_ray()
    with tempfile.TemporaryDirectory(prefix="brainjepa-bench-") as tmp:
        tiny_uri, small_uri = str(Path(tmp) / "cohort"), str(Path(tmp) / "cohort-450")
        write_parquet(tiny_uri, SynthOptions(subjects=args.subjects, rois=24, frames=(120, 160)))
        write_parquet(small_uri, SynthOptions(subjects=args.subjects, rois=450, frames=(450, 500)))
        small = load_config(
            PretrainConfig, ROOT / "configs/pretrain/small.yaml", [f"data.dataset={small_uri}", "data.val_fraction=0"]
        )
        print_ratio(
            "small model's input (450 ROIs x 160 frames, batch 16)", input_ratio(small, args.samples // 2, args.repeats)
        )
        tiny = load_config(
            PretrainConfig, ROOT / "configs/pretrain/tiny.yaml", [f"data.dataset={tiny_uri}", "data.val_fraction=0"]
        )
        tiny.model.n_rois = read_manifest(tiny_uri).atlas.n_rois
        print_ratio("tiny model's input (24 ROIs x 48 frames, batch 8)", input_ratio(tiny, args.samples, args.repeats))
        waits = data_wait(small_uri, args.small_steps, Path(tmp))
        print(
            f"(b) small model, batch 2, 1 worker: data-wait fraction {waits[0]:.3f} in the first window "
            f"(pipeline start-up), then median {np.median(waits[1:]):.3f} (max {max(waits[1:]):.3f}) over "
            f"{len(waits) - 1} windows of 2 steps"
        )
        one, two = training_rate(tiny_uri, 1, Path(tmp)), training_rate(tiny_uri, 2, Path(tmp))
        print(f"(c) tiny model: 1 worker {one:.1f} samples/s, 2 workers {two:.1f} samples/s, ratio {two / one:.2f}")


if __name__ == "__main__":
    main()
