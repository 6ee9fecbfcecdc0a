"""Connecting to Ray: a local Ray of this machine alone, or the cluster named by
``RAY_ADDRESS``."""
from __future__ import annotations

import os
import threading

import ray


def start_local_ray(num_cpus: int) -> None:
    """Starts a Ray of this machine alone, with every port on loopback and no dashboard.

    Ray rewrites a node address of 127.0.0.1 to the machine's routable address and binds its
    gRPC servers to all interfaces; its switch for single-machine Ray (the default on macOS
    and Windows) keeps every listening socket on loopback instead. The switch is read when
    ``ray`` is imported, hence the module attribute too; the environment carries it to Ray's
    processes.
    """
    from ray._private import ray_constants

    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    ray.init(num_cpus=num_cpus, include_dashboard=False, configure_logging=False)


def connect(num_actors: int) -> bool:
    """Starts a local Ray (loopback only, no dashboard) unless one is already connected;
    returns whether this call started it."""
    if ray.is_initialized():
        return False
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"])
        return True
    start_local_ray(max(num_actors, os.cpu_count() or 1))
    return True


SHUTDOWN_TIMEOUT_S = 10.0
"""The longest ``shutdown`` waits for Ray."""

_stuck = False


def shutdown(timeout_s: float = SHUTDOWN_TIMEOUT_S) -> bool:
    """``ray.shutdown()``, given at most ``timeout_s``: after a signal to the whole process
    group Ray's own processes are gone, and its client would wait a minute for them.
    Returns whether Ray shut down; if not, ``stuck()`` says so and the process should exit
    without waiting for Ray (``os._exit``) once its results are written."""
    global _stuck
    done = threading.Event()

    def stop_ray():
        try:
            ray.shutdown()
        finally:
            done.set()
    threading.Thread(target=stop_ray, name="ray-shutdown", daemon=True).start()
    if not done.wait(timeout_s):
        _stuck = True
    return not _stuck


def stuck() -> bool:
    """Whether a ``shutdown`` timed out (Ray's client may hold the process at exit)."""
    return _stuck
