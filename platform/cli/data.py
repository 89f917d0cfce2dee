"""``brainjepa ingest``, ``brainjepa dataset info`` and ``brainjepa synth``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from brainjepa_platform.data.ingestion import IngestResult


def cmd_ingest(args: argparse.Namespace) -> int:
    """Ingest a cohort into a Parquet dataset; exit 3 when any scan was quarantined."""
    from brainjepa_platform.data.extract import CleanConfig
    from brainjepa_platform.data.ingestion import IngestOptions, ingest

    opts = IngestOptions(
        format=args.format, atlas=args.atlas, labels=args.labels, tr=args.tr, phenotypes=args.phenotypes,
        dataset=args.dataset, orientation=args.orientation, min_frames=args.min_frames, float16=args.float16,
        clean=CleanConfig(detrend=args.detrend, high_pass=args.high_pass, low_pass=args.low_pass,
                          confound_columns=tuple(c for c in (args.confounds or "").split(",") if c)),
        shard_mb=args.shard_mb, scans_per_shard=args.scans_per_shard, workers=args.workers,
        overwrite=args.overwrite,
    )
    result = ingest(args.source, args.out, opts, progress=not args.quiet)
    counts = result.manifest["counts"]
    print(f"Ingested {counts['scans']} scans of {counts['subjects']} subjects into {counts['shards']} shards at "
          f"{result.out} in {result.seconds:.1f}s ({result.chunks_run} chunks run, {result.chunks_skipped} "
          "already done)")
    print_left_out(result)
    return result.exit_code


def print_left_out(result: IngestResult) -> None:
    """The inputs left out, on stderr: ignored ones, quarantined ones, and a loud warning when they are most."""
    if result.ignored:
        print(f"{len(result.ignored)} inputs ignored (see {result.out}/quarantine.json):", file=sys.stderr)
        for q in result.ignored[:20]:
            print(f"  {q['path']}: {q['reason']}", file=sys.stderr)
    if result.quarantined:
        print(f"{len(result.quarantined)} inputs quarantined (see {result.out}/quarantine.json):", file=sys.stderr)
        for q in result.quarantined[:20]:
            print(f"  {q['path']}: {q['reason']}", file=sys.stderr)
    if result.mostly_quarantined:
        atlas, scans = result.manifest["atlas"], result.manifest["counts"]["scans"]
        print(f"WARNING: most inputs were quarantined ({len(result.quarantined)} of "
              f"{len(result.quarantined) + scans}; {scans} ingested). The dataset has {atlas['n_rois']} ROIs, "
              f"decided by {atlas['decided_by']}: if that is the wrong atlas, rerun with the right --atlas or "
              "--labels and --overwrite.", file=sys.stderr)


def cmd_dataset_info(args: argparse.Namespace) -> int:
    from brainjepa_platform.data.ingestion import read_manifest

    manifest = read_manifest(args.uri)
    if args.json:
        print(json.dumps(manifest, indent=2))
        return 0
    counts, atlas = manifest["counts"], manifest["atlas"]
    print(f"Dataset {manifest['dataset']} at {args.uri} (schema v{manifest['schema_version']}, {manifest['created']})")
    print(f"  scans {counts['scans']}, subjects {counts['subjects']}, quarantined {counts['quarantined']}, "
          + (f"ignored {counts['ignored']}, " if counts.get("ignored") else "")
          + f"shards {counts['shards']}, frames {counts['frames']}")
    print(f"  atlas {atlas['name']}: {atlas['n_rois']} ROIs ({', '.join(atlas['roi_labels'][:3])}, ...)"
          + (f", decided by {atlas['decided_by']}" if atlas.get("decided_by") else ""))
    if manifest["tr_seconds"]:
        duration = manifest.get("duration_seconds")
        print(f"  TR {manifest['tr_seconds']['min']:.3g}-{manifest['tr_seconds']['max']:.3g} s, "
              f"frames per scan {manifest['n_frames']['min']}-{manifest['n_frames']['max']}"
              + (f", {duration['min']:.0f}-{duration['max']:.0f} s per scan" if duration else ""))
    print(f"  phenotypes: {', '.join(f'{k} ({v})' for k, v in manifest['phenotypes'].items()) or 'none'}")
    print(f"  series: {manifest['series']['dtype']}, {manifest['series']['layout']}")
    print(f"  made by: {manifest['command']}")
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    from brainjepa_platform.data.synth import SynthOptions, replace_bids, synth_summary, write_parquet
    from brainjepa_platform.storage import resolve

    opts = SynthOptions(subjects=args.subjects, rois=args.rois, seed=args.seed)
    if args.format == "bids":
        print(synth_summary(replace_bids(resolve(args.out), opts, overwrite=args.overwrite)), end="")
    else:
        n = write_parquet(args.out, opts, progress=not args.quiet, overwrite=args.overwrite)
        print(f"Wrote an ingested synthetic dataset of {n} scans at {args.out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the data subcommands to the ``brainjepa`` parser."""
    p = sub.add_parser("ingest", help="cohort (BIDS/fMRIPrep, NIfTI, ROI tables) -> Parquet dataset",
                       description="Exit status: 0 all ingested, 3 some inputs quarantined, 2 error.")
    p.add_argument("source", help="BIDS root, folder of NIfTI files or ROI tables (path, file:// or s3://)")
    p.add_argument("--out", required=True, help="dataset URI (path, file:// or s3://)")
    p.add_argument("--format", default="auto", choices=["auto", "bids", "nifti", "roi-table"])
    p.add_argument("--atlas", help="integer label atlas NIfTI (needed for NIfTI inputs)")
    p.add_argument("--labels", help="ROI labels TSV: index and name per row (or one name per line)")
    p.add_argument("--tr", type=float, help="repetition time in seconds (overrides sidecars and headers)")
    p.add_argument("--phenotypes", help="participants.tsv to join (default: the BIDS root's)")
    p.add_argument("--dataset", help="dataset name (default: the source folder's name)")
    p.add_argument("--orientation", default="auto", choices=["auto", "rois-by-time", "time-by-rois"])
    p.add_argument("--min-frames", type=int, default=20, help="scans shorter than this are quarantined")
    p.add_argument("--float16", action="store_true", help="store series as float16 (half the size)")
    p.add_argument("--detrend", action="store_true")
    p.add_argument("--high-pass", type=float, help="Hz")
    p.add_argument("--low-pass", type=float, help="Hz")
    p.add_argument("--confounds", help="comma-separated fMRIPrep confound columns to regress out")
    p.add_argument("--shard-mb", type=float, default=128.0, help="target shard size")
    p.add_argument("--scans-per-shard", type=int, default=0, help="fixed scans per shard (overrides --shard-mb)")
    p.add_argument("--workers", type=int, default=0, help="parallel workers (default: the cluster's CPUs)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a complete dataset at --out (atomically: the old one stays readable until the "
                        "new manifest is written); an unfinished ingest there is resumed without it")
    p.set_defaults(func=cmd_ingest)

    dataset = sub.add_parser("dataset", help="inspect ingested datasets").add_subparsers(dest="dataset_cmd",
                                                                                         required=True)
    p = dataset.add_parser("info", help="print a dataset's manifest and counts")
    p.add_argument("uri")
    p.add_argument("--json", action="store_true", help="print the whole manifest as JSON")
    p.set_defaults(func=cmd_dataset_info)

    p = sub.add_parser("synth", help="write a synthetic cohort (BIDS tree of 4-D NIfTI + atlas, or ingested)")
    p.add_argument("--out", required=True)
    p.add_argument("--subjects", type=int, default=16)
    p.add_argument("--rois", type=int, default=24)
    p.add_argument("--format", default="bids", choices=["bids", "parquet"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output of the same format")
    p.set_defaults(func=cmd_synth)
