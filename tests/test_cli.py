"""The brainjepa command line, as a user runs it: in this process through its entry point (main), and once as
the installed `brainjepa` program."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from brainjepa_platform.cli.main import main

BRAINJEPA = shutil.which("brainjepa") or str(Path(sys.executable).parent / "brainjepa")


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Callable[..., subprocess.CompletedProcess]:
    """`brainjepa ARGS` in this process: its exit status and what it printed on stdout and stderr."""

    def run_main(*args: str) -> subprocess.CompletedProcess:
        capsys.readouterr()
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse's usage errors
            code = exc.code
        out = capsys.readouterr()
        return subprocess.CompletedProcess(["brainjepa", *args], code, out.out, out.err)

    return run_main


def test_masks_command_reports_invariants(run, tmp_path) -> None:
    png = tmp_path / "masks.png"
    out = run(
        "masks",
        "--rois",
        "450",
        "--frames",
        "160",
        "--patch",
        "16",
        "--batch",
        "16",
        "--samples",
        "300",
        "--seed",
        "0",
        "--json",
        "--plot",
        str(png),
    )
    assert out.returncode == 0, out.stderr
    stats = json.loads(out.stdout)
    assert stats["overlap_tokens"] == 0
    assert stats["samples_missing_region"] == 0
    assert stats["last_patch_observed_fraction"] > 0
    assert 0 < stats["context_tokens_mean"] < 4500 and 0 < stats["target_tokens_mean"] < 4500
    assert png.stat().st_size > 10_000


@pytest.mark.integration
def test_masks_command_rejects_bad_override() -> None:
    """The installed program: its exit status and stderr as a shell sees them."""
    out = subprocess.run(
        [BRAINJEPA, "masks", "--rois", "20", "--frames", "40", "--patch", "8", "cross_roi_scale=[0.9, 0.1]"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 2
    assert "cross_roi_scale" in out.stderr and not out.stdout


def test_masks_command_rejects_bad_override_in_process(run) -> None:
    out = run("masks", "--rois", "20", "--frames", "40", "--patch", "8", "cross_roi_scale=[0.9, 0.1]")
    assert out.returncode == 2
    assert "cross_roi_scale" in out.stderr


def test_bench_step_prints_mfu_fields(run) -> None:
    out = run(
        "bench",
        "step",
        "--model",
        "tiny",
        "--rois",
        "40",
        "--frames",
        "64",
        "--patch",
        "16",
        "--batch",
        "2",
        "--steps",
        "1",
        "--json",
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    for key in ("samples_per_s", "step_tflop", "achieved_gflops", "matmul_peak_gflops", "mfu"):
        assert result[key] > 0
    assert result["mfu"] == pytest.approx(result["achieved_gflops"] / result["matmul_peak_gflops"])


@pytest.mark.slow  # 30 steps: enough for the loss to fall
def test_local_pretraining_trains_and_writes_artifacts(run, tmp_path) -> None:
    out = run("pretrain-local", "--steps", "30", "--out", str(tmp_path / "demo"), "batch_size=8", "subjects=12")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Loss fell from" in out.stdout
    for name in ("config.yaml", "checkpoint.pt", "masks.png", "training_curves.png"):
        assert (tmp_path / "demo" / name).exists(), name
    resolved = yaml.safe_load((tmp_path / "demo" / "config.yaml").read_text())
    assert resolved["steps"] == 30 and resolved["batch_size"] == 8


# --- one convention: --config FILE, flags as shortcuts, key=value overrides, --print-config --------------
def test_options_come_from_the_file_then_flags_then_overrides(tmp_path, capsys) -> None:
    from brainjepa_platform.cli import main as cli

    config = tmp_path / "ingest.yaml"
    config.write_text("out: from-file\nmin_frames: 7\nworkers: 3\nclean:\n  high_pass: 0.01\n")
    argv = [
        "ingest",
        "cohort",
        "--config",
        str(config),
        "--workers",
        "5",
        "--confounds",
        "a,b",
        "--detrend",
        "--print-config",
        "workers=6",
        "clean.low_pass=0.1",
    ]
    assert cli.main(argv) == 0
    resolved = yaml.safe_load(capsys.readouterr().out)
    assert resolved["source"] == "cohort" and resolved["out"] == "from-file" and resolved["min_frames"] == 7
    assert resolved["workers"] == 6  # key=value has the last word, over the flag and the file
    assert resolved["clean"] == {"detrend": True, "high_pass": 0.01, "low_pass": 0.1, "confound_columns": ["a", "b"]}
    assert resolved["format"] == "auto" and resolved["quiet"] is False  # flags left out hide no default


@pytest.mark.parametrize(
    "argv",
    [
        ["gradients", "fc.npy", "--out", "g.npz", "--n-components", "5", "params.kernel=cosine"],
        ["gradients", "fc.npy", "params.kernel=cosine", "--out", "g.npz", "params.n_components=5"],
    ],
)
def test_overrides_may_follow_positionals_and_flags(argv, capsys) -> None:
    from brainjepa_platform.cli import main as cli

    assert cli.main([*argv, "--print-config"]) == 0
    resolved = yaml.safe_load(capsys.readouterr().out)
    assert resolved["params"]["kernel"] == "cosine" and resolved["params"]["n_components"] == 5
    assert resolved["source"] == "fc.npy" and resolved["out"] == "g.npz" and resolved["json"] is False


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["embed", "--data", "d", "--out", "o", "bogus=1"], "bogus"),
        (["embed", "--data", "d"], "'out'"),
        (["synth", "--out", "x", "subjects=many"], "subjects"),
        (["demo", "targets=age", "workerz=2"], "workerz"),
        (["export-checkpoint", "models:/m/1", "--out", "o", "source.x=1"], "source"),
    ],
)
def test_a_bad_key_is_one_line_naming_it(argv, named, capsys) -> None:
    from brainjepa_platform.cli import main as cli

    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"brainjepa {argv[0]}: error: ") and named in err[0], err


def test_every_command_prints_its_resolved_config(capsys) -> None:
    from brainjepa_platform.cli import main as cli

    cases = {
        ("demo", "--targets", "age,sex"): {"targets": ["age", "sex"], "subjects": 40},
        ("synth", "--out", "x", "--format", "parquet"): {"format": "parquet", "rois": 24},
        ("dataset", "info", "uri"): {"uri": "uri", "json": False},
        ("evaluate", "--data", "d", "--target", "age", "finetune.epochs=2"): {"target": "age", "seeds": 5},
        ("import-checkpoint", "c.pth", "--gradients", "g.csv", "--tr", "2"): {"tr": 2.0, "checkpoint": "c.pth"},
        ("pretrain-local", "--steps", "3"): {"steps": 3, "out": "local-output"},
        ("pretrain", "data.dataset=d"): {"data": {"dataset": "d"}},
    }
    for argv, expected in cases.items():
        assert cli.main([*argv, "--print-config"]) == 0, argv
        resolved = yaml.safe_load(capsys.readouterr().out)
        for key, value in expected.items():
            got = resolved[key] if not isinstance(value, dict) else {k: resolved[key][k] for k in value}
            assert got == value, (argv, key)


def test_log_level_is_global_and_also_after_the_command(capsys, monkeypatch) -> None:
    """--log-level (before or after the command; --debug: DEBUG) holds while the command runs; when main()
    returns, brainjepa's loggers are as they were (no handler or level left behind in-process)."""
    import logging

    from brainjepa_platform.cli import main as cli

    logger = logging.getLogger("brainjepa_platform")
    before = (logger.level, list(logger.handlers))
    seen: list[tuple[int, int]] = []

    def command(args) -> int:
        seen.append((logger.level, len([h for h in logger.handlers if h.get_name() == "brainjepa-cli"])))
        logging.getLogger("brainjepa_platform.train.streaming").error("scans skipped")
        logging.getLogger("brainjepa_platform.train.streaming").info("an info line")
        return 0

    monkeypatch.setattr(cli, "cmd_masks", command)
    for argv in (["masks"], ["masks", "--log-level", "info"], ["masks", "--debug"], ["--log-level", "ERROR", "masks"]):
        assert cli.main(argv) == 0
        assert (logger.level, list(logger.handlers)) == before
    assert seen == [(logging.WARNING, 1), (logging.INFO, 1), (logging.DEBUG, 1), (logging.ERROR, 1)]
    err = capsys.readouterr().err
    assert err.count("brainjepa masks: ERROR: scans skipped\n") == 4 and err.count("an info line") == 2
