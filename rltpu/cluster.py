"""Connecting to Ray: a local Ray of this machine alone, or the cluster named by
``RAY_ADDRESS``."""
from __future__ import annotations

import logging
import os

import ray


AUTH_OPT_OUT_HINT = "Token authentication is enabled for this Ray cluster"


class _NoAuthOptOutHint(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(AUTH_OPT_OUT_HINT)


def _drop_auth_opt_out_hint() -> None:
    """Drops Ray's "Token authentication is enabled ... opt out" warning (once per process)."""
    logger = logging.getLogger("ray._private.authentication.authentication_token_setup")
    if not any(isinstance(f, _NoAuthOptOutHint) for f in logger.filters):
        logger.addFilter(_NoAuthOptOutHint())


def start_local_ray(num_cpus: int) -> None:
    """Starts a Ray of this machine alone, with every port on loopback and no dashboard.

    Ray rewrites a node address of 127.0.0.1 to the machine's routable address and binds its
    gRPC servers to all interfaces; its switch for single-machine Ray (the default on macOS
    and Windows) keeps every listening socket on loopback instead. The switch is read when
    ``ray`` is imported, hence the module attribute too; the environment carries it to Ray's
    processes.

    Token authentication is Ray's default for a local Ray, and rltpu requires it
    (``plan.validate`` refuses ``RAY_AUTH_MODE=disabled``): Ray's line saying so, with its
    hint "Set RAY_AUTH_MODE=disabled to opt out" (an opt-out rltpu refuses), is dropped
    (``_drop_auth_opt_out_hint``). (Setting ``RAY_AUTH_MODE=token`` instead would silence
    it too, but then Ray 2.60 generates no token when there is none, and its GCS aborts.)
    """
    from ray._private import ray_constants

    _drop_auth_opt_out_hint()
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    ray.init(num_cpus=num_cpus, include_dashboard=False, configure_logging=False)


def keep_ray_up() -> bool:
    """Whether a run leaves the Ray it started running when it ends: yes in a Jupyter
    kernel (a notebook, Colab), where the next ``rltpu.train`` in the same process finds
    it connected and starts none (``connect``), and Ray ends with the kernel (or at
    ``ray.shutdown()``); no elsewhere (the CLI, a script), where a run leaves nothing behind.
    """
    from rltpu.progress import in_jupyter_kernel
    return in_jupyter_kernel()


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
