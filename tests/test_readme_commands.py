"""The commands of the README and the guides, run on the README's own example data (16 synthetic subjects, 24 ROIs).

README.md, then each guide of docs/ (in name order), marks its command blocks with an HTML comment on the
line before the fence:

* ``<!-- runnable -->``: run, in that order, in one temporary folder (a checkout's ``configs/`` linked
  in), through ``brainjepa_platform.cli.main.main`` on the session's Ray cluster; each must exit 0.
* ``<!-- runnable: dry -->``: minutes of training each, so here their arguments are parsed and their
  inputs checked against the data the runnable blocks made (configs load, datasets exist, gradient
  counts fit the atlas, phenotypes exist, model names match what pretraining registers);
  ``BRAINJEPA_README_FULL=1`` runs them too.
* ``<!-- runnable: dry-only -->``: the user's own data, a GPU or a cluster: arguments parsed only.

Unmarked blocks (make, docker, kubectl, mlflow) are not walked.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from brainjepa_platform.cli import main as cli

REPO = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"<!-- runnable(?::\s*(dry|dry-only))? -->\n```(?:bash|sh)?\n(.*?)```", re.S)
FULL = os.environ.get("BRAINJEPA_README_FULL", "") not in ("", "0")


@dataclass
class Block:
    mode: str
    """run, dry or dry-only"""
    source: str
    """README.md or docs/<guide>.md"""
    line: int
    commands: list[list[str]]


def shell_commands(text: str) -> list[list[str]]:
    """One argv per command line (continuations joined, comments dropped)."""
    argvs = [shlex.split(line, comments=True) for line in text.replace("\\\n", " ").splitlines()]
    return [argv for argv in argvs if argv]


def documents() -> list[Path]:
    """README.md first (its quickstart makes the data), then the guides."""
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def readme_blocks() -> list[Block]:
    blocks = []
    for path in documents():
        text = path.read_text()
        source = path.relative_to(REPO).as_posix()
        blocks += [
            Block(m.group(1) or "run", source, text.count("\n", 0, m.start()) + 1, shell_commands(m.group(2)))
            for m in BLOCK.finditer(text)
        ]
    return blocks


# --- what a dry check looks at, per command (after its arguments parsed) ------------------------------
def check_pretrain(args: argparse.Namespace) -> None:
    from brainjepa.config import load_config
    from brainjepa_platform.data.manifest import read_manifest
    from brainjepa_platform.train.config import PretrainConfig

    cfg = load_config(PretrainConfig, args.config, args.overrides)
    n_rois = read_manifest(cfg.data.dataset).atlas.n_rois
    assert cfg.model.n_gradients < n_rois or cfg.model.positional != "gradient"


def check_sweep(args: argparse.Namespace) -> None:
    from brainjepa_platform.data.manifest import read_manifest
    from brainjepa_platform.sweep.config import load_sweep_config
    from brainjepa_platform.sweep.driver import check_fits_dataset

    cfg = load_sweep_config(args.config, args.overrides)
    base = cfg.base_pretrain()
    check_fits_dataset(cfg, base, read_manifest(base.data.dataset))
    assert cfg.expected_trials() * base.train.steps <= 1000, "a laptop sweep of more than 1,000 steps"


def check_model_data(args: argparse.Namespace) -> None:
    """embed / evaluate / fingerprint: the dataset exists, has the target, and the model is the name pretraining
    registers."""
    from brainjepa_platform.cli.options import given_flags
    from brainjepa_platform.data.manifest import read_manifest
    from brainjepa_platform.tracking.names import encoder_model_name

    given = {**given_flags(args), **dict(item.split("=", 1) for item in args.overrides)}  # flags, key=value
    manifest = read_manifest(given["data"])
    if given.get("target"):
        assert given["target"] in manifest.phenotypes, f"no phenotype {given['target']} in {given['data']}"
    if given.get("model"):
        name = re.match(r"models:/([^/@]+)", given["model"]).group(1)
        assert name == encoder_model_name(manifest.atlas.name, manifest.atlas.n_rois)


def check_pretrain_local(args: argparse.Namespace) -> None:
    from brainjepa.config import load_config
    from brainjepa.local import LocalPretrainConfig

    load_config(LocalPretrainConfig, args.config, args.overrides)


DRY_CHECKS: dict[str, Callable[[argparse.Namespace], None]] = {
    "pretrain": check_pretrain,
    "sweep": check_sweep,
    "embed": check_model_data,
    "evaluate": check_model_data,
    "fingerprint": check_model_data,
    "pretrain-local": check_pretrain_local,
}


@pytest.fixture
def readme_folder(tmp_path: Path, monkeypatch) -> Path:
    """A folder standing in for a checkout: configs/ linked, MLflow's default database inside."""
    (tmp_path / "configs").symlink_to(REPO / "configs", target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


def test_readme_marks_its_blocks() -> None:
    blocks = readme_blocks()
    assert {b.mode for b in blocks} == {"run", "dry", "dry-only"}
    assert all(argv[0] == "brainjepa" for b in blocks for argv in b.commands), "only brainjepa commands"
    walked = {argv[1] for b in blocks if b.mode != "dry-only" for argv in b.commands}
    assert walked >= {
        "synth",
        "ingest",
        "dataset",
        "gradients",
        "pretrain",
        "sweep",
        "evaluate",
        "embed",
        "fingerprint",
        "masks",
        "bench",
        "pretrain-local",
    }
    quickstart = {argv[1] for b in blocks if b.source == "README.md" and b.mode != "dry-only" for argv in b.commands}
    assert quickstart >= {"synth", "ingest", "gradients", "pretrain", "embed", "evaluate"}


def test_readme_commands_run_on_readme_data(readme_folder, ray_cluster, capsys) -> None:
    parser = cli.build_parser()
    for block in readme_blocks():
        for argv in block.commands:
            where = f"{block.source} line {block.line}: {shlex.join(argv)}"
            if block.mode == "run" or (block.mode == "dry" and FULL):
                code = cli.main(argv[1:])
                assert code == 0, f"{where}: exit status {code}\n{capsys.readouterr().err}"
                continue
            try:
                args = parser.parse_args(argv[1:])
            except SystemExit:
                pytest.fail(f"{where}: {capsys.readouterr().err}")
            if block.mode == "dry" and args.command in DRY_CHECKS:
                try:
                    DRY_CHECKS[args.command](args)
                except Exception as exc:  # noqa: BLE001 (reported with the README line)
                    pytest.fail(f"{where}: {type(exc).__name__}: {exc}")
    assert (readme_folder / "gradients.npz").exists() and (readme_folder / "data" / "cohort").is_dir()
