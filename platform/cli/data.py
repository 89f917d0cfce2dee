"""``brainjepa ingest``, ``brainjepa dataset info`` and ``brainjepa synth``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from brainjepa_platform.cli.options import add_command, base_options, comma_separated, shortcut

if TYPE_CHECKING:
    from brainjepa_platform.cli.commands import DatasetInfoOptions, IngestCommand, SynthCommand
    from brainjepa_platform.data.ingestion import IngestResult


def cmd_ingest(opts: IngestCommand, args: argparse.Namespace) -> int:
    """Ingest a cohort into a Parquet dataset; exit 3 when any scan was quarantined."""
    from brainjepa_platform.data.ingestion import IngestOptions, ingest

    result = ingest(opts.source, opts.out, base_options(opts, IngestOptions), progress=not opts.quiet)
    counts = result.manifest.counts
    print(
        f"Ingested {counts.scans} scans of {counts.subjects} subjects into {counts.shards} shards at "
        f"{result.out} in {result.seconds:.1f}s ({result.chunks_run} chunks run, {result.chunks_skipped} "
        "already done)"
    )
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
        atlas, scans = result.manifest.atlas, result.manifest.counts.scans
        print(
            f"WARNING: most inputs were quarantined ({len(result.quarantined)} of "
            f"{len(result.quarantined) + scans}; {scans} ingested). The dataset has {atlas.n_rois} ROIs, "
            f"decided by {atlas.decided_by}: if that is the wrong atlas, rerun with the right --atlas or "
            "--labels and --overwrite.",
            file=sys.stderr,
        )


def cmd_dataset_info(opts: DatasetInfoOptions, args: argparse.Namespace) -> int:
    from brainjepa_platform.data.manifest import read_manifest

    manifest = read_manifest(opts.uri)
    if opts.json:
        print(json.dumps(manifest.to_json(), indent=2))
        return 0
    counts, atlas, tr, frames = manifest.counts, manifest.atlas, manifest.tr_seconds, manifest.n_frames
    print(f"Dataset {manifest.dataset} at {opts.uri} (schema v{manifest.schema_version}, {manifest.created})")
    print(
        f"  scans {counts.scans}, subjects {counts.subjects}, quarantined {counts.quarantined}, "
        + (f"ignored {counts.ignored}, " if counts.ignored else "")
        + f"shards {counts.shards}, frames {counts.frames}"
    )
    print(
        f"  atlas {atlas.name}: {atlas.n_rois} ROIs ({', '.join(atlas.roi_labels[:3])}, ...)"
        + (f", decided by {atlas.decided_by}" if atlas.decided_by else "")
    )
    if tr is not None and frames is not None:
        duration = manifest.duration_seconds
        print(
            f"  TR {tr.min:.3g}-{tr.max:.3g} s, frames per scan {frames.min}-{frames.max}"
            + (f", {duration.min:.0f}-{duration.max:.0f} s per scan" if duration else "")
        )
    print(f"  phenotypes: {', '.join(f'{k} ({v})' for k, v in manifest.phenotypes.items()) or 'none'}")
    print(f"  series: {manifest.series.dtype}, {manifest.series.layout}")
    print(f"  made by: {manifest.command}")
    return 0


def cmd_synth(opts: SynthCommand, args: argparse.Namespace) -> int:
    from brainjepa_platform.data.synth import SynthOptions, replace_bids, synth_summary, write_parquet
    from brainjepa_platform.storage import resolve

    synth = base_options(opts, SynthOptions)
    if opts.format == "bids":
        print(synth_summary(replace_bids(resolve(opts.out), synth, overwrite=opts.overwrite)), end="")
    else:
        n = write_parquet(opts.out, synth, progress=not opts.quiet, overwrite=opts.overwrite)
        print(f"Wrote an ingested synthetic dataset of {n} scans at {opts.out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the data subcommands to the ``brainjepa`` parser."""
    p = add_command(
        sub,
        "ingest",
        "IngestCommand",
        cmd_ingest,
        help="cohort (BIDS/fMRIPrep, NIfTI, ROI tables) -> Parquet dataset",
        description="Exit status: 0 all ingested, 3 some inputs quarantined, 2 error.",
        positionals=(("source", "BIDS root, folder of NIfTI files or ROI tables (path, file:// or s3://)"),),
    )
    shortcut(p, "--out", key="out", help="dataset URI (path, file:// or s3://)")
    shortcut(p, "--format", key="format", choices=["auto", "bids", "nifti", "roi-table"], help="input form")
    shortcut(p, "--atlas", key="atlas", help="integer label atlas NIfTI (needed for NIfTI inputs)")
    shortcut(p, "--labels", key="labels", help="ROI labels TSV: index and name per row (or one name per line)")
    shortcut(p, "--tr", key="tr", type=float, help="repetition time in seconds (overrides sidecars and headers)")
    shortcut(p, "--phenotypes", key="phenotypes", help="participants.tsv to join", default_help="the BIDS root's")
    shortcut(p, "--dataset", key="dataset", help="dataset name", default_help="the source folder's name")
    shortcut(
        p,
        "--orientation",
        key="orientation",
        choices=["auto", "rois-by-time", "time-by-rois"],
        help="layout of ROI tables",
    )
    shortcut(p, "--min-frames", key="min_frames", type=int, help="scans shorter than this are quarantined")
    shortcut(p, "--float16", key="float16", action="store_true", help="store series as float16 (half the size)")
    shortcut(p, "--detrend", key="clean.detrend", action="store_true")
    shortcut(p, "--high-pass", key="clean.high_pass", type=float, help="Hz")
    shortcut(p, "--low-pass", key="clean.low_pass", type=float, help="Hz")
    shortcut(
        p,
        "--confounds",
        key="clean.confound_columns",
        type=comma_separated,
        help="comma-separated fMRIPrep confound columns to regress out",
    )
    shortcut(p, "--shard-mb", key="shard_mb", type=float, help="target shard size in MB")
    shortcut(
        p,
        "--scans-per-shard",
        key="scans_per_shard",
        type=int,
        help="fixed scans per shard instead of --shard-mb; 0: off",
    )
    shortcut(p, "--workers", key="workers", type=int, help="parallel workers", default_help="the cluster's CPUs")
    shortcut(p, "--quiet", key="quiet", action="store_true", help="no progress bar")
    shortcut(
        p,
        "--overwrite",
        key="overwrite",
        action="store_true",
        help="replace a complete dataset at --out (atomically: the old one stays readable until the "
        "new manifest is written); an unfinished ingest there is resumed without it",
    )

    dataset = sub.add_parser("dataset", help="inspect ingested datasets").add_subparsers(
        dest="dataset_cmd", required=True
    )
    p = add_command(
        dataset,
        "info",
        "DatasetInfoOptions",
        cmd_dataset_info,
        help="print a dataset's manifest and counts",
        positionals=(("uri", "ingested dataset (path, file:// or s3://)"),),
    )
    shortcut(p, "--json", key="json", action="store_true", help="print the whole manifest as JSON")

    p = add_command(
        sub,
        "synth",
        "SynthCommand",
        cmd_synth,
        help="write a synthetic cohort (BIDS tree of 4-D NIfTI + atlas, or ingested)",
    )
    shortcut(p, "--out", key="out", help="output folder or dataset URI")
    shortcut(p, "--subjects", key="subjects", type=int, help="synthetic subjects")
    shortcut(p, "--rois", key="rois", type=int, help="ROIs of the atlas")
    shortcut(
        p,
        "--scans-per-subject",
        key="scans_per_subject",
        type=int,
        help="sessions per subject (ses-1, ses-2, ...); above 1 each subject keeps its own connectivity across "
        "them (subject fingerprinting) and the phenotype is cohesion",
    )
    shortcut(p, "--format", key="format", choices=["bids", "parquet"], help="BIDS tree or ingested dataset")
    shortcut(p, "--seed", key="seed", type=int, help="random seed")
    shortcut(p, "--quiet", key="quiet", action="store_true")
    shortcut(
        p, "--overwrite", key="overwrite", action="store_true", help="replace an existing output of the same format"
    )
