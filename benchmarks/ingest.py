"""Ingestion benchmark: NIfTI -> Parquet throughput, cost against the nibabel floor, memory vs cohort size.

    python benchmarks/ingest.py --subjects 4 --scale 10

1. Per-scan cost of our worker path (read, gunzip, parcellate, validate, Arrow rows) against the
   floor: nibabel load + decompress of the same file (``np.asanyarray(nib.load(f).dataobj)``),
   interleaved file by file in one process, so the ratio holds on a noisy machine.
2. Peak resident memory of the worker path over the first ``subjects`` scans and over ``scale``
   times as many, each in a fresh process: it must stay flat.
3. End-to-end ``ingest`` on a local Ray cluster: scans/s and MB/s of compressed input.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from brainjepa_platform.data.extract import LabelExtractor, load_atlas, validate
from brainjepa_platform.data.ingestion import IngestOptions, ingest, plan_ingest
from brainjepa_platform.data.shards import ScanRow, dataset_schema, phenotype_field_names, rows_to_table
from brainjepa_platform.data.synth import SynthOptions, write_bids
from brainjepa_platform.storage import resolve


def worker_cost(extractor: LabelExtractor, path: Path, labels: list[str]) -> tuple[float, np.ndarray, float | None]:
    t0 = time.perf_counter()
    series, tr = extractor.extract(path.read_bytes())
    validate(series, len(labels), labels, 1)
    return time.perf_counter() - t0, series, tr


def floor_cost(path: Path) -> float:
    t0 = time.perf_counter()
    np.asanyarray(nib.load(path).dataobj)
    return time.perf_counter() - t0


def peak_memory_child(source: str, atlas: str, labels: str, n_scans: int) -> None:
    """Run the worker path over the first ``n_scans`` scans; print peak RSS in MB as JSON."""
    plan = plan_ingest(source, tempfile.mkdtemp(), IngestOptions(atlas=atlas, labels=labels, scans_per_shard=10**6))
    specs = plan.chunks[0][:n_scans]
    atlas_obj = load_atlas(Path(atlas).read_bytes(), atlas, Path(labels).read_text())
    extractor = LabelExtractor(atlas_obj)
    rows = []
    for spec in specs:
        series, tr = extractor.extract(Path(spec.path).read_bytes())
        rows.append(ScanRow(spec, series, tr))
    schema = dataset_schema(plan.phenotypes, False)
    rows_to_table(rows, "bench", "atlas", schema, phenotype_field_names(plan.phenotypes))
    print(json.dumps({"scans": len(specs), "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subjects", type=int, default=4)
    parser.add_argument("--scale", type=int, default=10)
    parser.add_argument("--grid", type=int, nargs=3, default=[40, 48, 40])
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--rois", type=int, default=100)
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        peak_memory_child(args.child[0], args.child[1], args.child[2], int(args.child[3]))
        return

    with tempfile.TemporaryDirectory(prefix="brainjepa-bench-") as tmp:
        n_big = args.subjects * args.scale
        opts = SynthOptions(subjects=n_big, rois=args.rois, frames=(args.frames, args.frames), grid=tuple(args.grid))
        print(f"writing {n_big} subjects, grid {args.grid} x {args.frames} frames ...", flush=True)
        paths = write_bids(resolve(Path(tmp) / "bids"), opts)
        files = sorted(Path(paths["source"]).rglob("*_bold.nii.gz"))
        atlas = load_atlas(Path(paths["atlas"]).read_bytes(), "atlas", Path(paths["labels"]).read_text())
        extractor = LabelExtractor(atlas)
        worker_cost(extractor, files[0], atlas.labels)  # warm the atlas operator cache
        ours, floor = [], []
        for f in files[: max(8, args.subjects)]:
            floor.append(floor_cost(f))
            ours.append(worker_cost(extractor, f, atlas.labels)[0])
        mb = np.mean([f.stat().st_size for f in files]) / 2**20
        print(
            f"per scan ({mb:.1f} MB gz): ours {np.median(ours) * 1e3:.0f} ms, floor (nibabel load+decompress) "
            f"{np.median(floor) * 1e3:.0f} ms, ratio {np.median(ours) / np.median(floor):.2f}"
        )

        mem = []
        for n in (args.subjects, len(files)):
            out = subprocess.run(
                [sys.executable, __file__, "--child", paths["source"], paths["atlas"], paths["labels"], str(n)],
                capture_output=True,
                text=True,
                check=True,
            )
            mem.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(
            f"peak RSS: {mem[0]['scans']} scans {mem[0]['peak_rss_mb']:.0f} MB, {mem[1]['scans']} scans "
            f"{mem[1]['peak_rss_mb']:.0f} MB (ratio {mem[1]['peak_rss_mb'] / mem[0]['peak_rss_mb']:.2f})"
        )

        t0 = time.perf_counter()
        result = ingest(
            paths["source"],
            str(Path(tmp) / "ds"),
            IngestOptions(atlas=paths["atlas"], labels=paths["labels"]),
            progress=False,
        )
        wall = time.perf_counter() - t0
        total_mb = sum(f.stat().st_size for f in files) / 2**20
        n = result.manifest.counts.scans
        print(
            f"end to end on local Ray (incl. start-up): {n} scans in {wall:.1f}s = {n / wall:.2f} scans/s, "
            f"{total_mb / wall:.1f} MB/s"
        )


if __name__ == "__main__":
    main()
