"""Typed config of a distributed pretraining run (``configs/pretrain/*.yaml`` + ``key=value`` overrides)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from brainjepa.masks import MaskConfig
from brainjepa.model import ModelConfig
from brainjepa.pretext import PretextConfig
from brainjepa.schedules import OptimConfig


@dataclass
class DataConfig:
    """Where the ingested dataset is and how samples are cut from its scans."""

    dataset: str = ""
    """URI of an ingested dataset (folder with manifest.json; path, file:// or s3://)."""
    target_tr: float = 2.2
    """Seconds between the model's frames; each scan is resampled from its own TR."""
    val_fraction: float = 0.1
    """Fraction of subjects held out for validation (split by subject, never by scan)."""
    split_seed: int = 0
    windows_per_scan: int = 1
    """Random windows cut from each training scan per epoch (the paper: 1)."""
    shuffle_buffer: int = 0
    """Ray Data local shuffle buffer (rows) per worker, on top of the windows' shuffle inside each
    block (``windows.sample_windows``); 0 (default) skips it: it copies every batch in the training
    process and cut input throughput by about a third (``benchmarks/pretrain_input.py``)."""
    task_cpus: float = 1.0
    """CPUs per Ray Data task that reads a shard and cuts its windows (Ray's default). 0.25 ran up
    to 16 tasks at once on a 2-core machine and starved every one of them: 3x lower throughput."""
    prefetch_batches: int = 4


@dataclass
class TrainConfig:
    """Scale, length and fault tolerance of the run."""

    steps: int = 200
    """Optimizer steps (the schedules span exactly these)."""
    batch_size: int = 16
    """Samples per worker per micro-batch."""
    num_workers: int = 2
    use_gpu: bool = False
    cpus_per_worker: float = 0.5
    """Fractional CPUs leave room for Ray Data on small machines (docs/training.md, "Small machines")."""
    dtype: Literal["float32", "bf16"] = "float32"
    checkpoint_every: int = 50
    storage_path: str = "runs"
    """Checkpoints and Ray Train state: a path, file:// or s3:// URI."""
    name: str = "brainjepa-pretrain"
    max_failures: int = 2
    seed: int = 0
    log_every: int = 10
    """Steps between metric logs; the learning monitors (one extra forward) are computed on those steps."""
    val_batches: int = 2
    """Validation batches evaluated at each checkpoint."""


@dataclass
class TrackingConfig:
    """MLflow: tracking URI (default local sqlite), experiment and registered model."""

    tracking_uri: str = ""
    experiment: str = "brainjepa-pretrain"
    registered_model: str = ""
    """Registered-model name; empty: ``brainjepa-encoder-<atlas>-<n_rois>`` of the dataset, so that runs on
    different atlases never move each other's alias (``tracking.encoder_model_name``)."""
    alias: str = "current"
    """Alias moved to each newly registered version of that name only (MLflow reserves 'latest': the
    newest version is also ``models:/<registered_model>/latest``)."""
    register: bool = True


@dataclass
class PretrainConfig:
    """Everything a pretraining run needs; saved resolved with the run and checked on resume."""

    model: ModelConfig = field(default_factory=ModelConfig)
    masks: MaskConfig = field(default_factory=MaskConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    pretext: PretextConfig = field(default_factory=PretextConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    gradients: str = ""
    """URI of a gradient artifact (.npz from `brainjepa gradients`); empty: computed from the
    training subjects' group FC at the start of the run."""
