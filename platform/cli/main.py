"""The ``brainjepa`` command line: one entry point for every step of the platform."""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

from brainjepa.config import save_config
from brainjepa_platform.cli.options import add_command, base_options, comma_separated, keys_given, shortcut
from brainjepa_platform.cli.process import (
    LOG_LEVELS,
    close_stdout,
    command_name,
    configure_logging,
    interrupted_message,
    stdout_closed,
)
from brainjepa_platform.errors import (
    DEBUG_ENV,
    EXIT_BROKEN_PIPE,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    debug_enabled,
    user_error_message,
)

if TYPE_CHECKING:
    from brainjepa_platform.cli.commands import GradientsCommand
    from brainjepa_platform.cli.demo import DemoOptions
    from brainjepa_platform.cli.model_commands import PretrainLocalCommand

EPILOG = """Exit status: 0 done, 2 error (one line on stderr; --debug for the traceback), 3 done with some
inputs quarantined (ingest), 130 interrupted by Ctrl-C (the same command resumes where that is possible),
141 the output pipe was closed (e.g. `| head`)."""
OVERRIDE = re.compile(r"[A-Za-z_][\w.]*=")
INTERRUPTED = threading.Event()
"""Set once a command has been stopped by Ctrl-C and said so (see :func:`console`)."""


def cmd_demo(opts: DemoOptions, args: argparse.Namespace) -> int:
    """The whole pipeline end to end on embedded defaults (see brainjepa_platform.cli.demo)."""
    from brainjepa_platform.cli.demo import run_demo
    from brainjepa_platform.cluster.connect import init_ray, run_interruptible

    init_ray()  # in the main thread; the steps run in a worker thread so that Ctrl-C reaches this command
    demo = run_interruptible(run_demo, opts)
    print()
    print(demo.summary())
    return 0


def cmd_pretrain_local(opts: PretrainLocalCommand, args: argparse.Namespace) -> int:
    """Small single-process pretraining on a synthetic cohort (no Ray); prints the loss falling."""
    from brainjepa.local import LocalPretrainConfig, run_local_pretraining
    from brainjepa.masks import MaskCollator
    from brainjepa_platform.plots import plot_masks, plot_training_curves

    cfg = base_options(opts, LocalPretrainConfig)
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    m = cfg.model
    print(
        f"Brain-JEPA demo: {m.size} model ({m.dim}/{m.depth}/{m.heads}), {cfg.subjects} synthetic subjects, "
        f"{m.n_rois} ROIs x {m.frames} frames, {cfg.steps} optimizer steps of {cfg.batch_size} samples"
    )
    t0 = time.perf_counter()
    # about ten lines, on steps that carry the learning monitors
    every = cfg.monitor_every * max(1, cfg.steps // (10 * cfg.monitor_every)) if cfg.monitor_every > 0 else cfg.steps

    def report(metrics: dict[str, float]) -> None:
        step = int(metrics["step"])
        if "target_rank" in metrics and (step == 1 or step % every == 0):
            ratio, reliance = (metrics.get(k, float("nan")) for k in ("loss_over_floor", "context_reliance"))
            print(
                f"  step {step:4d}  loss {metrics['loss']:.4f}  loss/floor {ratio:.2f}  "
                f"context reliance {reliance:+.4f}  target rank {metrics['target_rank']:.1f}  "
                f"({time.perf_counter() - t0:.0f}s)",
                flush=True,
            )

    engine, history = run_local_pretraining(cfg, on_step=report)
    first = sum(h["loss"] for h in history[:5]) / min(5, len(history))
    last = sum(h["loss"] for h in history[-5:]) / min(5, len(history))
    masks = MaskCollator(cfg.masks, m.n_rois, m.n_time_patches, seed=cfg.seed).next_masks(4)
    pictures = [
        plot_masks(masks, m.n_rois, m.n_time_patches, out / "masks.png"),
        plot_training_curves(history, out / "training_curves.png"),
    ]
    engine.save(out / "checkpoint.pt")
    elapsed = time.perf_counter() - t0
    verdict = "fell" if last < first else "did NOT fall"
    print(f"Loss {verdict} from {first:.4f} (mean of first 5 steps) to {last:.4f} (last 5) in {elapsed:.0f}s.")
    print(f"Wrote {out / 'config.yaml'}, {out / 'checkpoint.pt'}, " + ", ".join(str(p) for p in pictures))
    return 0 if last < first else 1


def cmd_gradients(opts: GradientsCommand, args: argparse.Namespace) -> int:
    """Diffusion-map gradients of a group FC matrix, saved as a versioned artifact (and plotted)."""
    from brainjepa_platform.data.gradient_artifacts import GradientsRequest, run_gradients

    request = base_options(opts, GradientsRequest)
    given = keys_given(args)
    if "auto_components" not in given:  # an atlas of R <= 30 ROIs: R-1 gradients unless a number was asked for
        request.auto_components = "params.n_components" not in given
    params = request.params
    summary = run_gradients(request)
    if "note" in summary:
        print(f"Note: {summary['note']}", file=sys.stderr)
    if opts.json:
        print(json.dumps(summary, indent=2))
        return 0
    lam = ", ".join(f"{v:.4f}" for v in summary["eigenvalues"][:5])
    print(
        f"Gradients of {summary['n_rois']} ROIs: {summary['n_components']} components ({params.kernel}, "
        f"sparsity {params.sparsity}, alpha {params.alpha}); first eigenvalues {lam}"
    )
    if summary["params"]["aligned_to"]:
        print(f"  Procrustes-aligned to {summary['params']['aligned_to']}")
    print(f"Wrote {summary['artifact']}" + (f", {summary['plot']}" if "plot" in summary else ""))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="brainjepa", description=__doc__, epilog=EPILOG)
    parser.add_argument(
        "--debug", action="store_true", help=f"show tracebacks of errors and Ray's own logs (or set {DEBUG_ENV}=1)"
    )
    parser.add_argument(
        "--log-level",
        type=str.upper,
        choices=LOG_LEVELS,
        default=None,
        help="level of brainjepa's own log lines on stderr (default WARNING; DEBUG with --debug)",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    from brainjepa_platform.cli import data, evaluate, library, submit, sweep, train, weights

    library.register(sub)
    p = add_command(
        sub,
        "demo",
        "demo:DemoOptions",
        cmd_demo,
        help="the whole pipeline end to end: synth -> ingest -> gradients -> pretrain -> register -> "
        "evaluate, with pictures",
    )
    shortcut(p, "--subjects", key="subjects", type=int, help="synthetic subjects (some have 2 sessions or runs)")
    shortcut(p, "--minutes", key="minutes", type=float, help="approximate pretraining budget")
    shortcut(p, "--workers", key="workers", type=int, help="Ray Train workers")
    shortcut(
        p,
        "--targets",
        key="targets",
        type=comma_separated,
        help="phenotypes to evaluate, comma-separated",
    )
    shortcut(p, "--seeds", key="seeds", type=int, help="repeated subject-level splits per evaluation")
    shortcut(p, "--out", key="out", help="folder for everything the demo makes")

    p = add_command(
        sub,
        "pretrain-local",
        "model_commands:PretrainLocalCommand",
        cmd_pretrain_local,
        help="single-process pretraining on synthetic data (no Ray), loss curve",
        overrides_help="config overrides, e.g. model.size=tiny",
    )
    shortcut(p, "--steps", key="steps", type=int, help="optimizer steps")
    shortcut(p, "--out", key="out", help="folder for the config, checkpoint and pictures")

    p = add_command(
        sub,
        "gradients",
        "GradientsCommand",
        cmd_gradients,
        help="diffusion-map brain gradients of a group FC matrix or an ingested dataset -> versioned artifact",
        positionals=(
            (
                "source",
                "group FC matrix: .npy, .csv or .tsv (local path or file:// URI), or an "
                "ingested dataset (path, file:// or s3://)",
            ),
        ),
    )
    shortcut(p, "--out", key="out", metavar="PATH", help="artifact to write (.npz)")
    shortcut(
        p,
        "--n-components",
        key="params.n_components",
        type=int,
        help="number of gradients",
        default_help="{default}, or R-1 for an atlas of R <= {default} ROIs",
    )
    shortcut(p, "--kernel", key="params.kernel", choices=["normalized_angle", "cosine"], help="affinity kernel")
    shortcut(
        p,
        "--sparsity",
        key="params.sparsity",
        type=float,
        help="fraction of each FC row zeroed before the kernel",
    )
    shortcut(p, "--alpha", key="params.alpha", type=float, help="anisotropic diffusion parameter")
    shortcut(
        p, "--labels", key="labels", metavar="LABELS_FILE", help="ROI labels, one per line (or a Schaefer lookup table)"
    )
    shortcut(p, "--align-to", key="align_to", metavar="ARTIFACT", help="Procrustes-align to this gradient artifact")
    shortcut(p, "--atlas", key="atlas", help="atlas name recorded in the artifact")
    shortcut(p, "--cohort", key="cohort", help="cohort description recorded in the artifact")
    shortcut(p, "--plot", key="plot", metavar="PNG", help="gradient 1 vs 2 scatter and scree plot")
    shortcut(p, "--json", key="json", action="store_true", help="print JSON only")

    for group in (data, train, evaluate, submit, sweep, weights):
        group.register(sub)
    _global_options_everywhere(parser)
    return parser


def _global_options_everywhere(parser: argparse.ArgumentParser) -> None:
    """``--debug`` and ``--log-level`` also after any subcommand (``brainjepa ingest ... --debug``)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for subparser in action.choices.values():
                if not any("--debug" in a.option_strings for a in subparser._actions):
                    subparser.add_argument(
                        "--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
                    )
                if not any("--log-level" in a.option_strings for a in subparser._actions):
                    subparser.add_argument(
                        "--log-level",
                        type=str.upper,
                        choices=LOG_LEVELS,
                        default=argparse.SUPPRESS,
                        help=argparse.SUPPRESS,
                    )
                _global_options_everywhere(subparser)


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> argparse.Namespace:
    """``parser.parse_args``, where ``key=value`` overrides may also come after a positional argument and an
    option (``gradients FC --out G params.kernel=cosine``: argparse matches ``FC`` and an empty list of
    overrides at once, and would refuse the rest)."""
    args, extra = parser.parse_known_args(argv)
    if extra and hasattr(args, "overrides") and all(OVERRIDE.match(item) for item in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run one command. Exit status: 0 done, 2 error (one line on stderr), 3 some inputs quarantined
    (ingest), 130 interrupted, 141 output pipe closed; tracebacks only for bugs (and with --debug)."""
    args = parse_args(build_parser(), argv)
    restore_logging = configure_logging(
        args.log_level or ("DEBUG" if args.debug or debug_enabled() else "WARNING"), command_name(args)
    )
    try:
        return _run(args)
    finally:
        restore_logging()


def _run(args: argparse.Namespace) -> int:
    """The command of ``args``, its errors turned into exit statuses (see :func:`main`)."""
    if args.debug:
        os.environ[DEBUG_ENV] = "1"  # Ray workers and jobs inherit it
    else:  # MLflow's per-artifact progress bars (several per model loaded or registered)
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        status = args.func(args)
        sys.stdout.flush()
        return status
    except KeyboardInterrupt:
        INTERRUPTED.set()
        print(interrupted_message(args), file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except Exception as exc:
        if isinstance(exc, BrokenPipeError) and stdout_closed():
            close_stdout()
            return EXIT_BROKEN_PIPE
        message = user_error_message(exc)
        if message is None:
            raise
        if debug_enabled():
            traceback.print_exc()
        print(f"brainjepa {command_name(args)}: error: {message}", file=sys.stderr, flush=True)
        return EXIT_ERROR


def quiet_finalizers_after_interrupt(unraisable: Any) -> None:
    """The console script's ``sys.unraisablehook``: once the command was interrupted, an error raised in an
    object's finalizer while the process winds down is dropped (seen: a Ray Data ``Dataset`` whose construction
    Ctrl-C cut short fails in ``__del__`` with "no attribute '_current_executor'"), since the one-line
    interrupted message already says what happened; otherwise, and with --debug, Python's own report."""
    if INTERRUPTED.is_set() and not debug_enabled():
        return
    sys.__unraisablehook__(unraisable)


def console() -> None:
    """The ``brainjepa`` console script: :func:`main`'s status as the exit status. Once a command has been
    interrupted, the status stays 130 while the process winds down: a local Ray node ends its process with
    ``sys.exit(1)`` on SIGTERM, and Ray's process reaper may send one to the whole process group as the cluster
    stops (seen once under load: the interrupted message, then exit status 1 and no traceback)."""
    sys.unraisablehook = quiet_finalizers_after_interrupt  # this process only: the console script's entry point
    try:
        status = main()
    except SystemExit:
        if not INTERRUPTED.is_set():
            raise
        status = EXIT_INTERRUPTED
    if status == EXIT_INTERRUPTED:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the command is done; what is left is interpreter exit
    sys.exit(status)


if __name__ == "__main__":
    console()
