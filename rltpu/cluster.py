"""Connecting to Ray: a local Ray of this machine alone, or the cluster named by
``RAY_ADDRESS``."""
from __future__ import annotations

import os

import ray


def start_local_ray(num_cpus: int) -> None:
    """Starts a Ray of this machine alone, with every port on loopback and no dashboard.

    Ray rewrites a node address of 127.0.0.1 to the machine's routable address and binds its
    gRPC servers to all interfaces; its switch for single-machine Ray (the default on macOS
    and Windows) keeps every listening socket on loopback instead. The switch is read when
    ``ray`` is imported, hence the module attribute too; the environment carries it to Ray's
    processes.

    Token authentication stays on, as Ray (>= 2.52) sets it for a new local cluster; rltpu
    chooses it explicitly (RAY_AUTH_MODE=token), which is all that keeps Ray from saying so
    on stderr with an invitation to opt out.

    Ray starts its head processes (GCS, raylet) with ``subprocess`` and a ``preexec_fn``, so
    Python runs its fork hooks, and JAX's (installed once its backend is up: validation has
    counted the devices, as it must before any process starts) warns that a fork in a
    multithreaded process may deadlock. Not this one: between fork and exec the child runs
    only Ray's ``preexec_fn``, two system calls (``pthread_sigmask``, and ``prctl`` through
    a ctypes function the parent resolved) that take no lock another thread could hold; so
    that one warning is not shown while Ray starts.
    """
    import warnings

    from ray._private import ray_constants

    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    if os.environ.get("RAY_AUTH_MODE") is None:  # (validation refuses "disabled")
        try:
            from ray._private.authentication import authentication_token_setup as auth
        except ImportError:
            auth = None  # a Ray before token authentication: nothing to choose, nothing said
        if auth is not None:
            # What Ray does when it turns token authentication on: the environment, which
            # its processes inherit, and its config in this process, which read the
            # environment when ``ray`` was imported.
            auth._enable_token_auth()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called",
                                category=RuntimeWarning)
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
