"""Connecting to Ray: the cluster named by RAY_ADDRESS (used as is), else a local one on 127.0.0.1.

The local cluster every command starts listens on the loopback address only (GCS, raylet, object
manager, workers, agents): Ray binds its servers to the node IP, which is the loopback address when
Ray is not told to look for a cluster network. Token authentication stays on, as Ray does by default
for a new local cluster. Ray's own chatter is quieted: no banner about token authentication, Ray
Data's console shows errors only (its log files keep everything), and the once-per-process ERROR
line of Ray's core worker about actor constructor arguments is set off at start-up. Ray core's own
warnings and errors, Ray Data's errors, and exceptions raised in Ray tasks and actors still reach
the command.
``--debug`` / ``BRAINJEPA_DEBUG=1`` leaves Ray's logging as Ray sets it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from brainjepa_platform.errors import debug_enabled

T = TypeVar("T")
STOP_WAIT_S = 20.0  # after Ctrl-C, how long the interrupted run gets to clean up

LOCAL_RAY_ENV = {
    # the node IP is 127.0.0.1 (every server binds to it) rather than the address of a network interface
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
}
# Ray's warning that token authentication is on (it stays on) for every new local cluster
AUTH_BANNER_LOGGER = "ray._private.authentication.authentication_token_setup"


def local_ray_settings() -> None:
    """Environment of a local cluster started by this process (variables the user set win). Set before
    Ray starts; its node processes and workers inherit them."""
    for key, value in LOCAL_RAY_ENV.items():
        os.environ.setdefault(key, value)
    from ray._private import ray_constants  # read at import: follow the variable if Ray came in earlier

    ray_constants.ENABLE_RAY_CLUSTER = os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"].lower() in ("1", "true")


def consume_actor_restart_warning() -> None:
    """Ray's core worker prints, once per process, an ERROR line on stderr when an actor that may be
    restarted takes constructor arguments from the object store, which every Ray Data actor pool does
    (ray-project/ray#53727: a note for Ray's developers, not a problem of the run). Set that once-only
    line off here, with stderr pointed at /dev/null for the instant it takes."""
    import ray

    @ray.remote(num_cpus=0, max_restarts=1)
    class _Probe:
        def __init__(self, arg: Any) -> None:
            self.arg = arg

    ref = ray.put(None)
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        probe = _Probe.remote(ref)
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    ray.kill(probe)


def quiet_ray_data_console() -> None:
    """Ray Data's console handler: errors only (its INFO lines on every execution and its warnings about
    progress bars and object-store size are not the user's business); its log files keep everything."""
    import ray.data  # noqa: F401  (configures the "ray.data" logger)

    for handler in logging.getLogger("ray.data").handlers:
        if not isinstance(handler, logging.FileHandler):
            handler.setLevel(logging.ERROR)


@contextlib.contextmanager
def no_ray_data_progress_bars() -> Iterator[None]:
    """Ray Data datasets created (and iterated) inside show no progress bars: they run under a copy of the
    current ``DataContext`` with the bars off, and a dataset keeps the context it was created under. The
    process's own ``DataContext`` is as it was afterwards."""
    from ray.data import DataContext

    quiet = DataContext.get_current().copy()
    quiet.enable_progress_bars = False
    with DataContext.current(quiet):
        yield


def forward_worker_stdout_only() -> None:
    """Of what Ray workers print, show only their standard output (pretraining's rank-0 progress lines),
    without Ray's worker prefix; their standard error, where Ray and its libraries chatter, stays in
    the session's log files (exceptions in tasks still reach the command through Ray's errors)."""
    from ray._private import worker as ray_worker

    dispatcher = ray_worker.global_worker_stdstream_dispatcher

    def stdout_only(data: dict[str, Any]) -> None:
        if not data["is_err"]:
            ray_worker.print_to_stdstream(data, ignore_prefix=True)

    dispatcher.remove_handler("ray_print_logs")
    dispatcher.add_handler("ray_print_logs", stdout_only)


RAYLET_TIMEOUT = "timed out during startup"
"""Ray's error when the raylet does not register with the GCS within its fixed 30 s (an overloaded machine)."""


def retry_raylet_timeout(start: Callable[[], T], cleanup: Callable[[], object]) -> T:
    """``start()``, and once more after ``cleanup()`` if it failed because the raylet timed out.

    Ray gives a starting raylet a fixed 30 s to register; on a busy machine (a laptop doing other work, a CI
    runner running tests in parallel) that can pass once and not the next time. Any other error is raised.
    """
    try:
        return start()
    except Exception as exc:
        if RAYLET_TIMEOUT not in str(exc):
            raise
    cleanup()
    return start()


def start_local_ray(**init_kwargs: Any) -> Any:
    """``ray.init(**init_kwargs)`` for a new local cluster, tried a second time if the raylet timed out."""
    import ray

    return retry_raylet_timeout(lambda: ray.init(**init_kwargs), ray.shutdown)


def init_ray(num_cpus: int = 0, worker_output: bool = False) -> None:
    """Connect once. Locally, a few more logical CPUs than cores (at least 4), so Ray Data's light
    tasks never wait behind training workers or ingestion actors on a small machine. ``worker_output``:
    print what Ray workers print (pretraining's rank-0 progress lines) on this console."""
    import ray

    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    quiet = not debug_enabled()
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        local_ray_settings()
        if quiet:
            logging.getLogger(AUTH_BANNER_LOGGER).setLevel(logging.ERROR)
        start_local_ray(
            num_cpus=num_cpus or max(4, os.cpu_count() or 1),
            include_dashboard=False,
            configure_logging=False,
            log_to_driver=worker_output,
        )
    if quiet:
        quiet_ray_data_console()
        consume_actor_restart_warning()
        if worker_output and not address:
            forward_worker_stdout_only()


def stop_ray() -> None:
    """Disconnect from Ray for good: threads still inside Ray calls get errors, not a new local cluster
    (Ray would otherwise start one for the next call)."""
    import ray
    from ray._private import auto_init_hook

    auto_init_hook.enable_auto_connect = False
    ray.shutdown()


def run_interruptible(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` in a worker thread, waited for by the main thread, so that Ctrl-C reaches
    the command as KeyboardInterrupt. (Ray Train, driven from the main thread, installs its own SIGINT
    handler, which aborts the run and exits with status 1 and no message.) On Ctrl-C, disconnect from
    Ray, which stops the local cluster, or the driver's actors on a remote one, give ``fn`` a moment to
    clean up, and re-raise."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 (handed to the main thread, which re-raises it)
            outcome["error"] = exc

    worker = threading.Thread(target=target, name=f"brainjepa-{getattr(fn, '__name__', 'run')}", daemon=True)
    try:
        worker.start()
        while worker.is_alive():
            worker.join(0.5)
    except KeyboardInterrupt:
        previous = logging.root.manager.disable
        logging.disable(logging.CRITICAL)  # what the run logs while stopping is about Ray going away under it
        try:
            stop_ray()
            worker.join(STOP_WAIT_S)  # let the run's own clean-up (e.g. its lock file) finish
        finally:
            logging.disable(previous)  # an in-process caller (a notebook, a test) keeps its logging
        raise
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]
