"""Shard read throughput from an S3 server: pyarrow's native S3 client vs s3fs, ratios measured in one run.

    python benchmarks/s3_read.py --shards 6 --mb 16 --repeats 3

Starts moto's S3 server on 127.0.0.1 (or uses AWS_ENDPOINT_URL with --bucket on a real store), writes
``--shards`` Parquet shards shaped like ingest's (one row per scan, a float32 ``series`` list column),
then reads every shard with ``pyarrow.parquet.read_table`` through (a) ``pyarrow.fs.S3FileSystem`` (what
``storage.resolve`` returns and Ray Data's read tasks use) and (b) ``s3fs`` (what ``storage.run_filesystem``
hands Ray Train under temporary credentials), alternating the two, and prints medians and their ratio.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def write_shards(fs, bucket: str, n_shards: int, mb: float) -> list[str]:
    """Shards of 40 scans each (450 ROIs x frames as float32) totalling about ``mb`` MB each."""
    rng = np.random.default_rng(0)
    frames = max(10, int(mb * 1e6 / (40 * 450 * 4)))
    paths = []
    for i in range(n_shards):
        series = [rng.standard_normal(450 * frames).astype(np.float32) for _ in range(40)]
        table = pa.table({"scan_id": [f"s{i}-{j}" for j in range(40)], "series": series})
        buf = io.BytesIO()
        pq.write_table(table, buf)
        path = f"{bucket}/bench/shard-{i:03d}.parquet"
        with fs.open_output_stream(path) as out:
            out.write(buf.getvalue())
        paths.append(path)
    return paths


def read_all(paths: list[str], filesystem) -> float:
    """Seconds to read every shard's ``series`` column."""
    start = time.perf_counter()
    for path in paths:
        pq.read_table(path, filesystem=filesystem, columns=["series"])
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", type=int, default=6)
    parser.add_argument("--mb", type=float, default=16.0, help="approximate shard size")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--bucket", default="bench-s3-read")
    args = parser.parse_args()
    server = None
    if "AWS_ENDPOINT_URL" not in os.environ:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        os.environ.update(
            AWS_ENDPOINT_URL=f"http://{host}:{port}",
            AWS_ACCESS_KEY_ID="bench",
            AWS_SECRET_ACCESS_KEY="bench",
            AWS_REGION="us-east-1",
        )
    import s3fs

    from brainjepa_platform.storage import ensure_bucket, resolve, s3_endpoint

    loc = resolve(f"s3://{args.bucket}")
    ensure_bucket(loc)
    paths = write_shards(loc.fs, args.bucket, args.shards, args.mb)
    total_mb = sum(loc.fs.get_file_info(p).size for p in paths) / 1e6
    fsspec_fs = s3fs.S3FileSystem(endpoint_url=s3_endpoint(), client_kwargs={"region_name": "us-east-1"})
    clients = {"pyarrow": loc.fs, "s3fs": fsspec_fs}
    seconds: dict[str, list[float]] = {name: [] for name in clients}
    for _ in range(args.repeats):
        for name, fs in clients.items():
            seconds[name].append(read_all(paths, fs))
    rates = {name: total_mb / float(np.median(s)) for name, s in seconds.items()}
    print(
        f"{args.shards} shards, {total_mb:.0f} MB, {args.repeats} alternated repeats, medians "
        f"({'moto on loopback' if server else os.environ['AWS_ENDPOINT_URL']}):"
    )
    for name, rate in rates.items():
        print(f"  {name:8s} {rate:7.1f} MB/s")
    print(f"  pyarrow / s3fs: {rates['pyarrow'] / rates['s3fs']:.2f}x")
    if server:
        server.stop()


if __name__ == "__main__":
    main()
