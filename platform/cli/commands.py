"""The typed options of the ``brainjepa`` commands that have no library dataclass of their own: each is the
library's options (``IngestOptions``, ``SynthOptions``, ...) plus the few keys only the command has
(where to write, ``quiet``, ``json``). Every key can be set in ``--config FILE`` or as ``key=value``; see
:mod:`brainjepa_platform.cli.options`. Imported only when a command runs; the options of commands that load
torch are in :mod:`brainjepa_platform.cli.model_commands`, so that the data commands do not import it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from brainjepa.gradients import GradientParams
from brainjepa_platform.data.gradient_artifacts import GradientsRequest
from brainjepa_platform.data.ingestion import IngestOptions
from brainjepa_platform.data.synth import SynthOptions


@dataclass(kw_only=True)
class IngestCommand(IngestOptions):
    """``brainjepa ingest``: what to ingest, where to, and :class:`IngestOptions`."""

    source: str
    """BIDS root, folder of NIfTI files or ROI tables (path, file:// or s3://)."""
    out: str
    """Dataset URI (path, file:// or s3://)."""
    quiet: bool = False
    """No progress bar."""


@dataclass(kw_only=True)
class SynthCommand(SynthOptions):
    """``brainjepa synth``: where to write a synthetic cohort, in which form, and :class:`SynthOptions`."""

    out: str
    format: Literal["bids", "parquet"] = "bids"
    quiet: bool = False
    overwrite: bool = False
    """Replace an existing output of the same format."""


@dataclass
class DatasetInfoOptions:
    """``brainjepa dataset info``."""

    uri: str
    json: bool = False
    """Print the whole manifest as JSON."""


@dataclass
class EmbedOptions:
    """``brainjepa embed``: a registered encoder over every scan of an ingested dataset."""

    data: str
    """Ingested dataset URI (path, file:// or s3://)."""
    out: str
    """Output folder URI (embeddings.parquet + embeddings.json)."""
    model: str = ""
    """MLflow model URI; empty: ``models:/brainjepa-encoder-<atlas>-<n_rois>@current`` of the dataset's atlas."""
    per_roi: bool = False
    token_fc: bool = False
    """Also each scan's token-FC: the ROI x ROI correlation of its time-centred tokens (docs/learning.md)."""
    scaling: Literal["dataset", "model"] = "dataset"
    target_tr: float = 0.0
    """Seconds between model frames; 0: the model's."""
    batch_size: int = 32
    workers: int = 1


@dataclass(kw_only=True)
class GradientsCommand(GradientsRequest):
    """``brainjepa gradients``: :class:`GradientsRequest` with the default parameters, and ``json`` output."""

    params: GradientParams = field(default_factory=GradientParams)
    json: bool = False


@dataclass
class BenchStepCommand:
    """``brainjepa bench step``: full pretraining steps of one model size and input shape, timed."""

    model: Literal["tiny", "small", "base", "large"] = "small"
    rois: int = 450
    frames: int = 160
    """Frames per window; a multiple of ``patch``."""
    patch: int = 16
    gradients: int = 30
    """Number of gradient components m."""
    batch: int = 2
    steps: int = 3
    """Timed steps, after ``warmup`` untimed ones."""
    warmup: int = 1
    device: str = "cpu"
    dtype: Literal["float32", "bf16"] = "float32"
    threads: int = 0
    """torch CPU threads; 0: torch's default."""
    seed: int = 0
    json: bool = False
    """Print JSON only."""


@dataclass
class ExportOptions:
    """``brainjepa export-checkpoint``."""

    source: str
    """models:/NAME/VERSION (or @ALIAS, runs:/...) or a pretraining checkpoint (engine.pt or its folder)."""
    out: str
