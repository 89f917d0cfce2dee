"""Scan -> R x T ROI series: streaming NIfTI parcellation, ROI tables, cleaning and validation.

``LabelExtractor`` computes the mean of each atlas label's voxels per volume while the gzip stream
is decompressed once, volume block by volume block, so memory stays at one block of volumes
whatever the scan length (tested equal to nilearn's ``NiftiLabelsMasker`` within 1e-5).
"""

from __future__ import annotations

import gzip
import io
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import sparse

from brainjepa_platform.storage import Location

TIME_UNITS = {"sec": 1.0, "msec": 1e-3, "usec": 1e-6}


class BadInput(ValueError):
    """A scan that cannot be used; goes to the quarantine report with this message."""


@dataclass
class Atlas:
    """Integer label image and the ordered ROI labels it defines."""

    image: nib.Nifti1Image
    values: np.ndarray  # label values in ROI order
    labels: list[str]
    name: str


def _is_index(cell: str) -> bool:
    return cell.lstrip("-").isdigit()


def read_labels(text: str, values_present: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Labels file: (index, name) rows, tab-, comma- or space-separated, with or without a header row
    (extra columns, e.g. colours, ignored); or one name per line for the values 1..R."""
    rows = [line.strip() for line in text.splitlines() if line.strip()]
    sep = "\t" if any("\t" in r for r in rows) else "," if any("," in r for r in rows) else None
    cells = [[c.strip() for c in r.split(sep)] for r in rows]
    if len(cells) > 1 and not _is_index(cells[0][0]) and _is_index(cells[1][0]) and len(cells[1]) > 1:
        rows, cells = rows[1:], cells[1:]  # a header row
    indexed = [len(c) > 1 and _is_index(c[0]) for c in cells]
    if all(indexed) and cells:
        values = np.array([int(c[0]) for c in cells])
        names = [c[1] for c in cells]
    elif not any(indexed):
        values, names = np.arange(1, len(rows) + 1), rows
    else:
        line = rows[indexed.index(False) if indexed[0] else indexed.index(True)]
        raise ValueError(f"labels file: expected (index, name) rows or one name per line, found both (e.g. {line!r})")
    keep = values != 0  # background
    return values[keep], [n for n, k in zip(names, keep) if k]


def load_atlas(image_bytes: bytes, name: str, labels_text: str | None = None) -> Atlas:
    img = nib.Nifti1Image.from_bytes(_maybe_gunzip(image_bytes, name))
    data = np.asanyarray(img.dataobj)
    integral = np.issubdtype(data.dtype, np.integer) or bool(np.all(np.mod(data, 1) == 0))
    if data.ndim != 3 or not integral:
        raise ValueError(f"{name}: an atlas must be a 3-D image of integer labels, got shape {data.shape}")
    present = np.unique(data.astype(np.int64))
    present = present[present != 0]
    if labels_text is not None:
        values, labels = read_labels(labels_text, present)
        missing = sorted(set(values.tolist()) - set(present.tolist()))
        if missing:
            raise ValueError(f"{name}: labels file lists values {missing[:10]} that the atlas image does not contain")
    else:
        values, labels = present, [f"roi-{v}" for v in present]
    return Atlas(image=nib.Nifti1Image(data.astype(np.int32), img.affine), values=values, labels=labels, name=name)


def _maybe_gunzip(data: bytes, name: str) -> bytes:
    if data[:2] != b"\x1f\x8b":
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        raise BadInput(f"corrupt or truncated gzip data ({exc})") from None


def header_tr(header: nib.Nifti1Header) -> float | None:
    """TR in seconds from pixdim[4] and the time unit; None when unknown or zero."""
    zooms = header.get_zooms()
    if len(zooms) < 4 or not zooms[3] or zooms[3] <= 0:
        return None
    unit = header.get_xyzt_units()[1]
    # no time unit: pixdim[4] is often a writer's default (1.0), not a TR; demand a sidecar or --tr
    return float(zooms[3]) * TIME_UNITS[unit] if unit in TIME_UNITS else None


class LabelExtractor:
    """Mean of each atlas label per volume, on any BOLD grid (the atlas is resampled once per grid)."""

    def __init__(self, atlas: Atlas, block_volumes: int = 32) -> None:
        self.atlas = atlas
        self.block_volumes = block_volumes
        self._grids: dict[tuple, tuple[np.ndarray, sparse.csr_matrix]] = {}

    def _operator(self, shape: tuple[int, int, int], affine: np.ndarray) -> tuple[np.ndarray, sparse.csr_matrix]:
        """(voxel indices in file order, R x nvox averaging matrix) for a BOLD grid."""
        key = (shape, np.round(affine, 4).tobytes())
        if key in self._grids:
            return self._grids[key]
        atlas_img = self.atlas.image
        if atlas_img.shape != shape or not np.allclose(atlas_img.affine, affine, atol=1e-3):
            from nilearn.image import resample_to_img

            target = nib.Nifti1Image(np.zeros(shape, dtype=np.int8), affine)
            try:
                atlas_img = resample_to_img(
                    atlas_img, target, interpolation="nearest", copy_header=True, force_resample=True
                )
            except Exception as exc:  # noqa: BLE001 - nilearn raises several types for a grid mismatch
                raise BadInput(
                    f"the atlas cannot be resampled to this BOLD grid {shape}: the atlas and the image are not "
                    f"in the same space or field of view ({type(exc).__name__}: {exc})"
                ) from None
        labels = np.asarray(atlas_img.dataobj).astype(np.int64).ravel(order="F")  # NIfTI stores x fastest
        position = np.full(max(labels.max(initial=0), self.atlas.values.max()) + 1, -1, dtype=np.int64)
        position[self.atlas.values] = np.arange(len(self.atlas.values))  # label value -> ROI row
        roi_of_voxel = position[np.clip(labels, 0, None)]
        voxels = np.flatnonzero(roi_of_voxel >= 0)
        rows = roi_of_voxel[voxels]
        counts = np.bincount(rows, minlength=len(self.atlas.values))
        empty = np.flatnonzero(counts == 0)
        if empty.size:
            names = [self.atlas.labels[i] for i in empty[:5]]
            raise BadInput(
                f"{empty.size} atlas ROIs (e.g. {names}) have no voxels on this BOLD grid {shape}: "
                "the atlas and the image are not in the same space or field of view"
            )
        op = sparse.csr_matrix(
            (1.0 / counts[rows], (rows, np.arange(voxels.size))), shape=(len(self.atlas.values), voxels.size)
        )
        self._grids[key] = (voxels, op)
        return voxels, op

    def extract(self, raw: bytes) -> tuple[np.ndarray, float | None]:
        """NIfTI bytes (.nii or .nii.gz) -> (R x T float64 series, TR from the header or None)."""
        stream = self._open(raw)
        header = nib.Nifti1Header.from_fileobj(stream, check=False)
        if header.sizeof_hdr != 348:
            raise BadInput("only NIfTI-1 images are supported")
        shape = header.get_data_shape()
        if len(shape) != 4 or shape[3] < 2:
            raise BadInput(f"expected a 4-D BOLD image (x, y, z, time), got shape {shape}")
        dtype = header.get_data_dtype()
        slope, inter = header.get_slope_inter()
        voxels, op = self._operator(shape[:3], header.get_best_affine())
        stream.read(int(header.get_data_offset()) - stream.tell())  # extensions / padding before the data
        n_vox, n_t = int(np.prod(shape[:3])), shape[3]
        out = np.empty((op.shape[0], n_t))
        for t0 in range(0, n_t, self.block_volumes):
            k = min(self.block_volumes, n_t - t0)
            want = k * n_vox * dtype.itemsize
            buf = stream.read(want)
            if len(buf) < want:
                complete = t0 + len(buf) // (n_vox * dtype.itemsize)
                raise BadInput(f"truncated image: data ends at volume {complete} of {n_t}")
            block = np.frombuffer(buf, dtype=dtype).reshape(k, n_vox)[:, voxels].astype(np.float64)
            if slope is not None and slope not in (0.0, 1.0):
                block *= slope
            if inter:
                block += inter
            out[:, t0 : t0 + k] = op @ block.T
        return out, header_tr(header)

    @staticmethod
    def _open(raw: bytes) -> io.BufferedIOBase:
        if raw[:2] == b"\x1f\x8b":
            return _CheckedGzip(raw)
        return io.BytesIO(raw)


class _CheckedGzip(io.RawIOBase):
    """Streaming gunzip whose read errors become BadInput (corrupt or truncated gzip)."""

    def __init__(self, raw: bytes) -> None:
        self._gz = gzip.GzipFile(fileobj=io.BytesIO(raw))

    def read(self, n: int = -1) -> bytes:
        try:
            return self._gz.read(n)
        except (OSError, EOFError, zlib.error) as exc:
            raise BadInput(f"corrupt or truncated gzip data ({exc})") from None

    def tell(self) -> int:
        return self._gz.tell()

    def readinto(self, b) -> int:  # used by nibabel's header reader
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)


def read_table(raw: bytes, name: str, n_rois: int | None, orientation: str) -> tuple[np.ndarray, list[str] | None]:
    """ROI table (TSV/CSV with or without a header of labels, or NPY) -> (R x T, labels or None)."""
    labels = None
    if name.endswith(".npy"):
        try:
            arr = np.load(io.BytesIO(raw), allow_pickle=False)
        except ValueError as exc:
            raise BadInput(f"not a readable .npy array ({exc})") from None
    else:
        sep = "," if name.endswith(".csv") else None
        table = pd.read_csv(io.BytesIO(raw), sep=sep, engine="python", header=None)
        first = table.iloc[0]
        if pd.to_numeric(first, errors="coerce").isna().any():  # a header of labels: columns are ROIs
            labels = [str(x) for x in first]
            table = table.iloc[1:]
            orientation = "time-by-rois" if orientation == "auto" else orientation
        try:
            arr = table.apply(pd.to_numeric).to_numpy(dtype=np.float64)
        except ValueError as exc:
            raise BadInput(f"non-numeric values in the table ({exc})") from None
    if arr.ndim != 2:
        raise BadInput(f"expected a 2-D table (ROIs x time or time x ROIs), got shape {arr.shape}")
    if orientation == "auto":
        if n_rois is None or (arr.shape[0] == n_rois) == (arr.shape[1] == n_rois):
            raise BadInput(
                f"cannot tell the orientation of a {arr.shape[0]} x {arr.shape[1]} table"
                + (f" for {n_rois} ROIs" if n_rois else "")
                + "; pass --orientation rois-by-time or time-by-rois, or --labels"
            )
        orientation = "rois-by-time" if arr.shape[0] == n_rois else "time-by-rois"
    arr = arr if orientation == "rois-by-time" else arr.T
    return np.asarray(arr, dtype=np.float64), labels


@dataclass
class TableShape:
    """What a glance at an ROI table tells: the ROI counts it can have and its header's labels, if any."""

    roi_counts: set[int]
    labels: list[str] | None


def _npy_shape(head: bytes) -> tuple[int, ...]:
    stream = io.BytesIO(head)
    try:
        version = np.lib.format.read_magic(stream)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        return tuple(read(stream)[0])
    except ValueError as exc:
        raise BadInput(f"not a readable .npy array ({exc})") from None


def table_shape(head: bytes, name: str, orientation: str, whole: Callable[[], bytes]) -> TableShape:
    """The ROI counts an ROI table can have, from its first bytes (``head``; ``whole()`` reads the rest
    only when the row count matters: no header of labels and ROIs possibly on the rows), parsed as
    :func:`read_table` parses it. ``auto`` orientation without a header allows either dimension."""
    labels, rows = None, None
    if name.endswith(".npy"):
        shape = _npy_shape(head)
        if len(shape) != 2:
            raise BadInput(f"expected a 2-D table (ROIs x time or time x ROIs), got shape {shape}")
        rows, cols = shape
    else:
        first_line = (head if b"\n" in head else whole()).split(b"\n", 1)[0]
        first = pd.read_csv(
            io.BytesIO(first_line), sep="," if name.endswith(".csv") else None, engine="python", header=None
        ).iloc[0]
        cols = len(first)
        if pd.to_numeric(first, errors="coerce").isna().any():
            labels = [str(x) for x in first]
            orientation = "time-by-rois" if orientation == "auto" else orientation
        if orientation != "time-by-rois":
            rows = sum(1 for line in whole().splitlines() if line.strip()) - (labels is not None)
    counts = {"rois-by-time": {rows}, "time-by-rois": {cols}}.get(orientation, {rows, cols})
    return TableShape({int(c) for c in counts if c is not None}, labels)


@dataclass
class CleanConfig:
    """Optional nilearn.signal.clean settings applied to every scan."""

    detrend: bool = False
    high_pass: float | None = None
    low_pass: float | None = None
    confound_columns: tuple[str, ...] = ()

    @property
    def active(self) -> bool:
        return self.detrend or self.high_pass is not None or self.low_pass is not None or bool(self.confound_columns)


def clean(series: np.ndarray, tr: float, cfg: CleanConfig, confounds: pd.DataFrame | None) -> np.ndarray:
    """Confound regression / detrending / band-pass through nilearn.signal.clean (time on axis 0)."""
    from nilearn.signal import clean as nilearn_clean

    conf = None
    if cfg.confound_columns:
        if confounds is None:
            raise BadInput("confound columns were requested but no confounds file was found for this scan")
        missing = [c for c in cfg.confound_columns if c not in confounds.columns]
        if missing:
            raise BadInput(f"confounds file lacks columns {missing}")
        conf = confounds[list(cfg.confound_columns)].fillna(0.0).to_numpy()
        if conf.shape[0] != series.shape[1]:
            raise BadInput(f"confounds have {conf.shape[0]} rows but the scan has {series.shape[1]} frames")
    out = nilearn_clean(
        series.T,
        confounds=conf,
        detrend=cfg.detrend,
        standardize=False,
        high_pass=cfg.high_pass,
        low_pass=cfg.low_pass,
        t_r=tr,
    )
    return out.T


def validate(series: np.ndarray, n_rois: int, labels: list[str], min_frames: int) -> None:
    """Raise BadInput for wrong ROI count, NaN/Inf, constant ROIs or too few frames."""
    if series.shape[0] != n_rois:
        raise BadInput(f"has {series.shape[0]} ROIs, the dataset has {n_rois}")
    if series.shape[1] < min_frames:
        raise BadInput(f"has {series.shape[1]} frames, fewer than the minimum {min_frames} (--min-frames)")
    bad = ~np.isfinite(series)
    if bad.any():
        rois = np.flatnonzero(bad.any(axis=1))
        raise BadInput(f"contains NaN/Inf in {rois.size} ROIs (e.g. {[labels[i] for i in rois[:3]]})")
    flat = np.flatnonzero(series.std(axis=1) < 1e-8 * (1 + np.abs(series).mean(axis=1)))
    if flat.size:
        raise BadInput(f"{flat.size} ROIs are constant over time (e.g. {[labels[i] for i in flat[:3]]})")


def read_confounds(loc: Location | None) -> pd.DataFrame | None:
    if loc is None:
        return None
    from brainjepa_platform.storage import read_bytes

    return pd.read_csv(io.BytesIO(read_bytes(loc)), sep="\t", na_values=["n/a"])
