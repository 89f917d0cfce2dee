"""Connecting to Ray: the cluster named by RAY_ADDRESS, else a local one."""

from __future__ import annotations

import os


def init_ray(num_cpus: int = 0) -> None:
    """Connect once. Locally, a few more logical CPUs than cores (at least 4), so Ray Data's light
    tasks never wait behind training workers or ingestion actors on a small machine."""
    import ray

    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        ray.init(num_cpus=num_cpus or max(4, os.cpu_count() or 1), include_dashboard=False,
                 configure_logging=False, log_to_driver=False)
