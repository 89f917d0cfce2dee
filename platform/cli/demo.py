"""``brainjepa demo``: the whole platform end to end on embedded defaults.

synthetic BIDS cohort (4-D NIfTI + atlas + participants.tsv) -> ``ingest`` (the real NIfTI path,
Ray Data) -> Parquet dataset in a local object store folder -> group-FC brain gradients -> Ray Train
DDP pretraining of the tiny model (2 workers) -> MLflow run + registered encoder -> ``evaluate``
(linear probe of the model vs a random encoder vs the FC baseline) -> pictures and a summary table.

Everything lands under one folder (``demo-output/`` by default): the store, runs, the sqlite MLflow
database and the pictures. Each finished step is recorded in ``demo-output/demo-state.json``; a rerun
skips steps whose outputs are still there (ingestion, gradients, pretraining, evaluation).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

STEPS_PER_MINUTE = 40
"""Pretraining steps per minute of --minutes, deliberately conservative: on a quiet 2-core machine the
tiny model with 2 CPU workers (batch 8 each) ran 160 steps in 82 s, Ray Train start-up included; under
heavy load about 40 steps a minute."""


@dataclass
class DemoOptions:
    subjects: int = 40
    minutes: float = 4.0
    """Approximate pretraining budget (converted to steps with STEPS_PER_MINUTE)."""
    out: str = "demo-output"
    workers: int = 2
    targets: tuple[str, ...] = ("coupling", "age")
    seeds: int = 3
    rois: int = 24


@dataclass
class StepRecord:
    name: str
    status: str
    seconds: float
    outputs: dict[str, str] = field(default_factory=dict)


class Demo:
    """Runs the demo's steps in order, skipping those recorded as done whose outputs still exist."""

    def __init__(self, opts: DemoOptions) -> None:
        self.opts = opts
        self.out = Path(opts.out).resolve()
        self.out.mkdir(parents=True, exist_ok=True)
        self.state_file = self.out / "demo-state.json"
        self.done: dict[str, dict[str, str]] = (
            json.loads(self.state_file.read_text()) if self.state_file.exists() else {}
        )
        self.records: list[StepRecord] = []

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.out / 'mlflow.db'}"

    def step(self, name: str, action: Callable[[], dict[str, str]]) -> dict[str, str]:
        """Run ``action`` (returning its outputs) unless a previous run finished it and its outputs exist."""
        previous = self.done.get(name)
        if previous and all(Path(p).exists() for k, p in previous.items() if k.endswith("_path")):
            self.records.append(StepRecord(name, "reused", 0.0, previous))
            print(f"[{len(self.records)}] {name}: reused from a previous run", flush=True)
            return previous
        print(f"[{len(self.records) + 1}] {name} ...", flush=True)
        start = time.perf_counter()
        outputs = action()
        self.records.append(StepRecord(name, "done", time.perf_counter() - start, outputs))
        self.done[name] = outputs
        self.state_file.write_text(json.dumps(self.done, indent=2))
        print(f"    done in {self.records[-1].seconds:.0f}s", flush=True)
        return outputs

    # --- the steps ----------------------------------------------------------------------------------
    def synthesise(self) -> dict[str, str]:
        from brainjepa_platform.data.synth import SynthOptions, write_bids
        from brainjepa_platform.storage import resolve

        paths = write_bids(
            resolve(self.out / "cohort-bids"),
            SynthOptions(subjects=self.opts.subjects, rois=self.opts.rois, frames=(100, 140)),
        )
        return {"bids_path": paths["source"], "atlas_path": paths["atlas"], "labels_path": paths["labels"]}

    def ingest(self, bids: dict[str, str]) -> dict[str, str]:
        from brainjepa_platform.data.ingestion import IngestOptions, ingest

        dataset = str(self.out / "store" / "cohort")
        result = ingest(
            bids["bids_path"],
            dataset,
            IngestOptions(atlas=bids["atlas_path"], labels=bids["labels_path"], dataset="demo"),
            progress=True,
        )
        counts = result.manifest.counts
        return {
            "dataset_path": dataset,
            "manifest_path": f"{dataset}/manifest.json",
            "scans": str(counts.scans),
            "subjects": str(counts.subjects),
        }

    def gradients(self, dataset: str) -> dict[str, str]:
        from brainjepa.gradients import GradientParams
        from brainjepa_platform.data.gradient_artifacts import GradientsRequest, run_gradients

        artifact, plot = self.out / "store" / "gradients.npz", self.out / "gradients.png"
        run_gradients(
            GradientsRequest(
                source=dataset,
                out=str(artifact),
                params=GradientParams(n_components=10),
                plot=str(plot),
                cohort="demo cohort, all scans",
            )
        )
        return {"artifact_path": str(artifact), "plot_path": str(plot)}

    def pretrain(self, dataset: str, gradients: str) -> dict[str, str]:
        from brainjepa.config import load_config, save_config
        from brainjepa_platform.config_files import builtin_config
        from brainjepa_platform.tracking.pretraining import run_pretraining
        from brainjepa_platform.train.config import PretrainConfig

        steps = max(20, int(self.opts.minutes * STEPS_PER_MINUTE))
        cfg = load_config(
            PretrainConfig,
            builtin_config("pretrain/tiny"),
            [
                f"data.dataset={dataset}",
                f"gradients={gradients}",
                f"train.storage_path={self.out / 'runs'}",
                "train.name=demo",
                f"train.num_workers={self.opts.workers}",
                f"train.steps={steps}",
                f"train.checkpoint_every={max(10, steps // 4)}",
                f"train.log_every={max(1, steps // 40)}",
                f"tracking.tracking_uri={self.tracking_uri}",
                "model.frames=32",
                "data.windows_per_scan=16",
            ],
        )
        result = run_pretraining(cfg)
        save_config(cfg, self.out / "pretrain-config.yaml")  # resolved: n_rois taken from the dataset
        return {
            "run_id": result.run_id,
            "model": f"models:/{cfg.tracking.registered_model}/{result.model_version}",
            "config_path": str(self.out / "pretrain-config.yaml"),
            "checkpoint": str(result.checkpoint),
            "steps": str(result.steps),
            "loss": f"{result.metrics.get('loss', float('nan')):.4f}",
        }

    def evaluate(self, model: str, dataset: str, target: str) -> dict[str, str]:
        from brainjepa_platform.evaluate.run import EvaluateConfig, log_evaluation, run_evaluation
        from brainjepa_platform.tracking.registry import load_encoder
        from brainjepa_platform.tracking.uri import using_tracking_uri

        cfg = EvaluateConfig(
            model=model,
            data=dataset,
            target=target,
            seeds=self.opts.seeds,
            out=str(self.out / "evaluation" / target),
            tracking_uri=self.tracking_uri,
        )
        with using_tracking_uri(self.tracking_uri):  # models:/ URIs resolve in the demo's registry
            bundle = load_encoder(model)
        evaluation = run_evaluation(cfg, bundle)
        run_id = log_evaluation(evaluation, cfg, self.tracking_uri)
        print(evaluation.comparison.format_table(), flush=True)
        return {
            "table_path": evaluation.files["table"],
            "results_path": evaluation.files["results"],
            "plot_path": evaluation.files["plot"],
            "run_id": run_id,
        }

    def pictures(self, pretrain: dict[str, str]) -> dict[str, str]:
        from mlflow.tracking import MlflowClient

        from brainjepa.config import load_config
        from brainjepa.masks import MaskCollator
        from brainjepa.monitors import LEARNING_MONITORS
        from brainjepa_platform.plots import plot_masks, plot_training_curves
        from brainjepa_platform.train.config import PretrainConfig

        cfg = load_config(PretrainConfig, pretrain["config_path"])
        m = cfg.model
        masks = MaskCollator(cfg.masks, m.n_rois, m.n_time_patches, seed=0).next_masks(4)
        client = MlflowClient(self.tracking_uri)
        history: dict[int, dict[str, float]] = {}
        for key in ("loss", *LEARNING_MONITORS):
            for metric in client.get_metric_history(pretrain["run_id"], key):
                history.setdefault(metric.step, {"step": metric.step})[key] = metric.value
        rows = [h for _, h in sorted(history.items()) if "loss" in h]
        return {
            "masks_path": str(plot_masks(masks, m.n_rois, m.n_time_patches, self.out / "masks.png")),
            "curves_path": str(plot_training_curves(rows, self.out / "training_curves.png")),
        }

    def run(self) -> list[StepRecord]:
        from brainjepa_platform.cluster.connect import init_ray

        init_ray()
        bids = self.step("synthesise a BIDS cohort (NIfTI + atlas)", self.synthesise)
        data = self.step("ingest into the object store (Parquet)", lambda: self.ingest(bids))
        grads = self.step("brain gradients from group FC", lambda: self.gradients(data["dataset_path"]))
        pre = self.step(
            "pretrain with Ray Train (DDP) + register in MLflow",
            lambda: self.pretrain(data["dataset_path"], grads["artifact_path"]),
        )
        for target in self.opts.targets:
            self.step(
                f"evaluate on {target}: model vs random encoder vs FC",
                lambda t=target: self.evaluate(pre["model"], data["dataset_path"], t),
            )
        self.step("pictures: masks, training curves", lambda: self.pictures(pre))
        return self.records

    def summary(self) -> str:
        from brainjepa_platform.tables import format_table

        rows = []
        for r in self.records:
            shown = ", ".join(
                f"{k.removesuffix('_path')}: {v}"
                for k, v in r.outputs.items()
                if k.endswith("_path") or k in ("model", "run_id", "scans", "loss")
            )
            rows.append([r.name, r.status, f"{r.seconds:.0f}s", shown])
        lines = [format_table(["step", "status", "time", "outputs"], rows), ""]
        lines.append(f"MLflow UI: mlflow ui --backend-store-uri {self.tracking_uri} --host 127.0.0.1 --port 5000")
        lines.append(f"Everything is under {self.out}; rerun `brainjepa demo` to reuse finished steps.")
        return "\n".join(lines)

    def write_summary(self) -> Path:
        path = self.out / "summary.json"
        path.write_text(json.dumps([asdict(r) for r in self.records], indent=2))
        return path


def run_demo(opts: DemoOptions) -> Demo:
    demo = Demo(opts)
    demo.run()
    demo.write_summary()
    return demo
