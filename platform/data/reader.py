"""Ray Data over an ingested dataset's shards, without a file-listing stage.

``ray.data.read_parquet`` starts every execution with a ListFiles task that took 4-7 s on this
machine for a single local shard (most of it waiting, 87 ms of CPU; ``benchmarks/pretrain_input.py``).
The manifest already lists the committed shards, so this module builds the dataset from that list:
one row per (pass, shard), read with pyarrow inside the map task. Several passes in one dataset make
many epochs one long-running streaming execution instead of a fresh start-up per epoch; each pass
visits the shards in its own seeded order.

Tasks receive the dataset URI, never a filesystem object: S3 credentials are resolved inside the
task from the worker's environment, so they are not serialised into the object store.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from brainjepa_platform.storage import Location, resolve


@lru_cache(maxsize=8)
def _root(uri: str) -> Location:
    return resolve(uri)


def read_shards(batch: dict[str, np.ndarray], uri: str, columns: list[str]) -> pa.Table:
    """Ray Data UDF: rows naming shard paths (relative to ``uri``) -> the shards' rows."""
    root = _root(uri)
    tables = [pq.read_table(root.child(str(p)).path, filesystem=root.fs, columns=columns) for p in batch["path"]]
    return pa.concat_tables(tables) if len(tables) > 1 else tables[0]


def shard_order(n_shards: int, passes: int, seed: int) -> list[tuple[int, int]]:
    """(pass, shard index) pairs: every shard once per pass, in a seeded order of its own per pass."""
    rng = np.random.default_rng(seed)
    return [(k, int(i)) for k in range(passes) for i in rng.permutation(n_shards)]


def shard_dataset(uri: str, columns: list[str], passes: int = 1, seed: int = 0, num_cpus: float = 0.25) -> Any:
    """A Ray Dataset of the rows of every committed shard of ``uri``, ``passes`` times over
    (``num_cpus`` per read task: give the tasks fused after it the same, so they run as one)."""
    import ray

    from brainjepa_platform.data.manifest import read_manifest  # driver side only

    shards = [s.path for s in read_manifest(uri).shards]
    if not shards:
        raise ValueError(f"dataset {uri} has no shards (see its quarantine.json)")
    items = [{"pass": k, "path": shards[i]} for k, i in shard_order(len(shards), max(1, passes), seed)]
    # one block per shard read, so reads run in parallel and stream in order
    listing = ray.data.from_items(items, override_num_blocks=len(items))
    return listing.map_batches(
        read_shards,
        fn_kwargs={"uri": resolve(uri).uri, "columns": columns},
        batch_size=1,
        batch_format="numpy",
        num_cpus=num_cpus,
    )
