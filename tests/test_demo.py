"""`brainjepa demo` at its smallest size: every step runs, every artifact exists, a rerun reuses them."""

from __future__ import annotations

import json

import pytest

from brainjepa_platform.cli.main import main

pytestmark = pytest.mark.usefixtures("ray_cluster")
STEPS = ["synthesise", "ingest", "brain gradients", "pretrain", "evaluate on coupling", "pictures"]


def test_demo_runs_end_to_end_and_reuses_finished_steps(tmp_path, capsys) -> None:
    out = tmp_path / "demo-output"
    argv = ["demo", "--subjects", "10", "--minutes", "0.5", "--targets", "coupling", "--seeds", "2", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary) == len(STEPS) and all(r["name"].startswith(s) for r, s in zip(summary, STEPS))
    assert all(r["status"] == "done" for r in summary)
    for name in (
        "masks.png",
        "gradients.png",
        "training_curves.png",
        "mlflow.db",
        "pretrain-config.yaml",
        "store/cohort/manifest.json",
        "store/gradients.npz",
        "evaluation/coupling/results.json",
        "evaluation/coupling/evaluation-coupling.png",
        "evaluation/coupling/table.txt",
    ):
        assert (out / name).exists() and (out / name).stat().st_size > 0, name
    for row in STEPS:
        assert row in printed, row
    assert "mlflow ui --backend-store-uri sqlite:///" in printed and "--host 127.0.0.1" in printed
    results = json.loads((out / "evaluation/coupling/results.json").read_text())
    assert results["features"] == ["brain-jepa", "random-encoder", "fc-baseline"]
    assert results["config"]["model"].startswith("models:/brainjepa-encoder-atlas-24/")
    # the same command again: everything is reused
    assert main(argv) == 0
    again = json.loads((out / "summary.json").read_text())
    assert [r["status"] for r in again] == ["reused"] * len(STEPS)
