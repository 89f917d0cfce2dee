"""``brainjepa submit pretrain|sweep|ingest|evaluate``: run a platform job on a Ray cluster and follow it."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

HELP = {
    "pretrain": "pretrain on the cluster (jobs/pretrain.py): --config FILE and key=value overrides",
    "sweep": "Ray Tune sweep on the cluster (jobs/sweep.py): --config FILE and key=value overrides",
    "ingest": "ingest a cohort on the cluster (jobs/ingest.py): SOURCE --out URI [brainjepa ingest options]",
    "evaluate": "downstream evaluation on the cluster (jobs/evaluate.py): --config FILE and its arguments",
}
EPILOG = """\
Options of `brainjepa submit` come first; everything from the first job argument on (or after `--`) goes to
the job script. Variables forwarded to the job: MLFLOW_TRACKING_URI, AWS_ENDPOINT_URL(_S3), AWS_REGION and
AWS_DEFAULT_REGION when set here, plus each --env NAME; secret-looking names (KEY, SECRET, TOKEN, PASSWORD)
are refused: credentials come from the cluster. Token authentication: export RAY_AUTH_MODE=token with the
token in ~/.ray/auth_token, RAY_AUTH_TOKEN_PATH or RAY_AUTH_TOKEN, or pass --token-file.
Exit status: 0 when the job succeeded, the job's own exit status when it failed (1 if unknown), 2 on an
error before submission."""


def cmd_submit(args: argparse.Namespace) -> int:
    """Submit one job; follow it unless --no-wait."""
    from ray.exceptions import AuthenticationError

    from brainjepa_platform.cluster.submit import JobRequest, read_token, submit

    if not args.address:
        print(
            "brainjepa submit: error: give --address http://HEAD:8265 (or set RAY_API_SERVER_ADDRESS)", file=sys.stderr
        )
        return 2
    job_args = list(args.args)
    if job_args[:1] == ["--"]:
        job_args = job_args[1:]
    request = JobRequest(
        kind=args.kind,
        args=job_args,
        config=getattr(args, "config", None),
        env_names=list(args.env),
        root=Path(args.working_dir),
    )
    token = read_token(args.token_file) if args.token_file else None
    try:
        return submit(request, args.address, token=token, wait=not args.no_wait)
    except AuthenticationError as exc:
        print(
            f"brainjepa submit: error: the cluster at {args.address} refused the request: {exc}\n"
            "  with token authentication: export RAY_AUTH_MODE=token and put the cluster's token in "
            "~/.ray/auth_token (or RAY_AUTH_TOKEN_PATH / RAY_AUTH_TOKEN), or pass --token-file",
            file=sys.stderr,
        )
        return 2
    except ConnectionError as exc:
        print(f"brainjepa submit: error: cannot reach the job API at {args.address}: {exc}", file=sys.stderr)
        return 2


def _add_kind(kinds: argparse._SubParsersAction, kind: str) -> None:
    p = kinds.add_parser(
        kind,
        help=HELP[kind],
        description=HELP[kind],
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--address",
        default=os.environ.get("RAY_API_SERVER_ADDRESS"),
        help="Ray dashboard / job API address, e.g. http://127.0.0.1:8265 (default: $RAY_API_SERVER_ADDRESS)",
    )
    if kind != "ingest":
        p.add_argument("--config", help="YAML config, relative to the checkout (e.g. configs/pretrain/base.yaml)")
    p.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME",
        help="also forward this (non-secret) variable's local value to the job; repeatable",
    )
    p.add_argument("--token-file", metavar="PATH", help="Ray auth token file (else Ray's own lookup applies)")
    p.add_argument("--working-dir", default=".", help="brainjepa checkout to ship (default: .)")
    p.add_argument("--no-wait", action="store_true", help="submit and return without following the logs")
    p.add_argument(
        "args",
        nargs=argparse.REMAINDER,
        metavar="ARGS",
        help="arguments for the job script, e.g. data.dataset=s3://bucket/ukb train.num_workers=8",
    )
    p.set_defaults(func=cmd_submit)


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``submit`` and its job kinds to the ``brainjepa`` parser."""
    from brainjepa_platform.cluster.submit import KINDS

    p = sub.add_parser("submit", help="submit a platform job to a Ray cluster (job API) and follow its logs")
    kinds = p.add_subparsers(dest="kind", required=True, metavar="KIND")
    for kind in KINDS:
        _add_kind(kinds, kind)
