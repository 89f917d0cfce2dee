"""Group functional connectivity of an ingested dataset, streamed with Ray Data in bounded memory.

Each block of scans becomes one partial sum of Fisher-z correlation matrices; the driver adds the
partial sums, so memory is one R x R matrix per block whatever the cohort size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from brainjepa.gradients import pearson_fc
from brainjepa_platform.data.manifest import read_manifest
from brainjepa_platform.data.reader import shard_dataset

Z_CLIP = 0.999999


@dataclass
class SubjectFilter:
    """Keep scans of training subjects only (same split as pretraining), or every scan."""

    val_fraction: float = 0.0
    split_seed: int = 0

    def keep(self, subject: str) -> bool:
        from brainjepa_platform.data.windows import is_validation

        return self.val_fraction <= 0 or not is_validation(subject, self.val_fraction, self.split_seed)


class FisherZSum:
    """Ray Data UDF: a block of scans -> one row with the sum of their Fisher-z FC and the count."""

    def __init__(self, subject_filter: SubjectFilter) -> None:
        self.filter = subject_filter

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        total, count = None, 0
        for i, subject in enumerate(batch["subject"]):
            if not self.filter.keep(str(subject)):
                continue
            series = np.asarray(batch["series"][i], dtype=np.float64).reshape(int(batch["n_rois"][i]), -1)
            z = np.arctanh(np.clip(pearson_fc(series), -Z_CLIP, Z_CLIP))
            total = z if total is None else total + z
            count += 1
        if total is None:  # every scan of the block filtered out: a zero row keeps the column shape
            r = int(batch["n_rois"][0])
            return {"zsum": np.zeros((1, r * r)), "count": np.array([0])}
        return {"zsum": total.ravel()[None, :], "count": np.array([count])}


def dataset_group_fc(uri: str, subject_filter: SubjectFilter | None = None) -> tuple[np.ndarray, int]:
    """(group FC as tanh of the mean Fisher z, number of scans) over the dataset's scans."""
    import ray

    r = read_manifest(uri).atlas.n_rois
    ds = shard_dataset(uri, ["subject", "n_rois", "series"])
    parts = ds.map_batches(
        FisherZSum,
        fn_constructor_kwargs={"subject_filter": subject_filter or SubjectFilter()},
        batch_format="numpy",
        batch_size=32,
        compute=ray.data.ActorPoolStrategy(size=1),
        num_cpus=0.5,
    )
    total, n = np.zeros((r, r)), 0
    for batch in parts.iter_batches(batch_size=None, batch_format="numpy"):
        for zsum, count in zip(batch["zsum"], batch["count"]):
            total += np.asarray(zsum).reshape(r, r)
            n += int(count)
    if n == 0:
        raise ValueError(f"{uri}: no scans left to compute group connectivity from")
    return np.tanh(total / n), n
