"""Connecting to Ray: a local Ray of this machine alone, or the cluster named by
``RAY_ADDRESS``; either way with token authentication, the token readable by this user alone."""
from __future__ import annotations

import contextlib
import os
import secrets
import signal
import threading
from typing import Callable

import ray


def force_token_auth() -> None:
    """Turns token authentication on for every connection this process (and its children)
    makes to Ray: ``RAY_AUTH_MODE=token`` (``validate`` refuses ``disabled``)."""
    if os.environ.get("RAY_AUTH_MODE") != "token":
        os.environ["RAY_AUTH_MODE"] = "token"
        from ray._raylet import Config
        Config.initialize("")  # Ray read the mode when it was imported: read it again, as
        # Ray's own default for a local start does


def private_token_file() -> str | None:
    """Makes sure the token a local Ray is started with can be read by this user alone, and
    returns its file (None: the token is in ``RAY_AUTH_TOKEN``, no file).

    Ray reads the token from ``RAY_AUTH_TOKEN``, else the file ``RAY_AUTH_TOKEN_PATH``
    names, else ``~/.ray/auth_token``; missing, it writes that last one itself, mode 0644
    in a 0755 folder: any local user could read it and, the local ports being open to every
    local user, run code as this one. So the file is made here first: in a folder of mode
    0700 (``~/.ray``; a folder ``RAY_AUTH_TOKEN_PATH`` names is made 0700 if missing), with
    ``O_CREAT | O_EXCL`` and mode 0600, or, if it exists, tightened to 0600. This process
    then reads the token afresh (``read_token_afresh``).
    """
    read_token_afresh()
    if os.environ.get("RAY_AUTH_TOKEN"):
        return None
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    default = not path
    path = os.path.expanduser(path or os.path.join("~", ".ray", "auth_token"))
    folder = os.path.dirname(os.path.abspath(path))
    if default or not os.path.isdir(folder):
        os.makedirs(folder, mode=0o700, exist_ok=True)
        os.chmod(folder, 0o700)  # (an existing ~/.ray, or the umask, may allow more)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        os.chmod(path, 0o600)
        if os.path.getsize(path) > 0:
            return path
        fd = os.open(path, os.O_WRONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))  # as Ray's own generator: 256 random bits
    return path


def read_token_afresh() -> None:
    """Ray keeps, per process, the token it read first (its ``AuthenticationTokenLoader``):
    a second Ray started in the same process (``rltpu.train`` called again) after
    ``~`` or ``RAY_AUTH_TOKEN_PATH`` changed would start its GCS with the token file's
    token and connect to it with the first one, and fail to start. This makes the next
    connection read the token where it is now (a no-op on a Ray without token
    authentication, which has no such cache)."""
    loader = getattr(ray._raylet, "AuthenticationTokenLoader", None)
    if loader is not None:
        loader.instance().reset_cache()


def start_local_ray(num_cpus: int) -> None:
    """Starts a Ray of this machine alone, with every port on loopback, no dashboard and
    token authentication (its token file private: ``private_token_file``).

    Ray rewrites a node address of 127.0.0.1 to the machine's routable address and binds its
    gRPC servers to all interfaces; its switch for single-machine Ray (the default on macOS
    and Windows) keeps every listening socket on loopback instead. The switch is read when
    ``ray`` is imported, hence the module attribute too; the environment carries it to Ray's
    processes. ``address="local"`` starts a new Ray even where Ray's temp folder names a
    running one (or one that is gone, its file left behind).

    Token authentication is chosen explicitly (``force_token_auth``), as Ray (>= 2.52) would
    for a new local cluster; that is also what keeps Ray from announcing it on stderr with an
    invitation to opt out.

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

    force_token_auth()
    private_token_file()
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called",
                                category=RuntimeWarning)
        with ray_outlives_sigterm(), ray_ends_at_once("raylet", "monitor"):
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False,
                     configure_logging=False)


@contextlib.contextmanager
def _ray_services_wrapped(wrap: Callable[[Callable], Callable], *names: str):
    """For the block's time, each named function of Ray's ``services`` (private: Ray starts
    its processes through them) is ``wrap(function)``; all are left as they are if this Ray
    lacks any of them."""
    from ray._private import services
    originals = {name: getattr(services, name, None) for name in names}
    if None in originals.values():
        yield
        return
    for name, function in originals.items():
        setattr(services, name, wrap(function))
    try:
        yield
    finally:
        for name, function in originals.items():
            setattr(services, name, function)


def ray_outlives_sigterm() -> contextlib.AbstractContextManager:
    """Starts the GCS and the raylet of a local Ray with SIGTERM blocked, so that a SIGTERM
    sent to every process (a preempted VM's shutdown, a signal to the process group) leaves
    them running until this process has saved its checkpoint and exits (they fate-share
    with it and end too; ``ray.shutdown`` ends them with SIGKILL, at once for the raylet:
    ``ray_ends_at_once``).

    Without it the raylet, on that SIGTERM, tells the GCS that its node is gone; if the GCS
    is still up to pass that on, this process's Ray client tries to recover the objects it
    owns that lived there, writes to the dead raylet's object store and ends the process
    (status 1, before the checkpoint), as Ray ends any process that loses its object store.
    And a GCS that ends while ``ray.init`` runs leaves it waiting in a call to the GCS that
    Python cannot interrupt: the signal's handler runs once the call returns, after up to
    30 s (a CI run stopped 31 s after the signal, in a GCS client's connect; 60 s in
    others, which then end the process with status 1). Ray starts its processes from the
    calling thread, with that thread's signal mask: it is set for
    ``services.start_gcs_server`` and ``services.start_raylet`` alone, which run in this
    thread.
    """
    if not hasattr(signal, "pthread_sigmask"):  # (Windows)
        return contextlib.nullcontext()

    def with_sigterm_blocked(start):
        def started(*args, **kwargs):
            blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
            try:
                return start(*args, **kwargs)
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        return started
    return _ray_services_wrapped(with_sigterm_blocked, "start_gcs_server", "start_raylet")


def ray_ends_at_once(*names: str) -> contextlib.AbstractContextManager:
    """Starts the named processes of a local Ray (``services.start_<name>``) so that
    ``ray.shutdown`` ends them with SIGKILL at once, where Ray sends SIGTERM and waits up
    to a second before SIGKILL. For the raylet the second is spent for nothing: it takes
    SIGTERM blocked (``ray_outlives_sigterm``). The autoscaler monitor, on SIGTERM, reports
    its end to the GCS, which ``ray.shutdown`` has ended before it, and so takes the whole
    second. (The GCS keeps its second: the raylet's agents, finding the raylet gone, report
    that to the GCS and exit; with the GCS ended at once they waited a minute for it.)"""
    def ending_at_once(start):
        def started(*args, **kwargs):
            info = start(*args, **kwargs)  # Ray's ProcessInfo
            process = getattr(info, "process", None)
            if process is not None:
                process.terminate = process.kill
            return info
        return started
    return _ray_services_wrapped(ending_at_once, *(f"start_{name}" for name in names))


def ray_init_ends_when(stopping: Callable[[], bool]) -> contextlib.AbstractContextManager:
    """While ``ray.init`` runs, it ends with ``SystemExit(SIGTERM)``, as Ray's own SIGTERM
    handler would end it, once ``stopping()`` says so: checked before and after each time
    Ray starts one of its processes (``services.start_ray_process``) and each time it asks
    the GCS whether this node has registered (``services.get_node``).

    Ray's handler may not end ``ray.init``: Python runs a signal's handler at the next
    instruction, and when that is in an after-fork hook (Ray forks its processes with a
    ``preexec_fn``, so the hooks run; logging has one) the handler's ``SystemExit`` is
    printed as "Exception ignored" and dropped. ``ray.init`` then went on: for the seconds
    the rest of Ray's start takes, and, when the signal had ended the GCS (before
    ``ray_outlives_sigterm`` kept it up; a GCS elsewhere, on a cluster joined, may end
    too), 30 s for its port file, 30 s for the node to register, or 60 s in a GCS client,
    which then ends the process with status 1. The check right after each start comes
    straight after the fork where the exit was dropped.
    """
    def check():
        if stopping():
            raise SystemExit(signal.SIGTERM)

    def checked(function):
        def call(*args, **kwargs):
            check()
            result = function(*args, **kwargs)
            check()
            return result
        return call
    return _ray_services_wrapped(checked, "start_ray_process", "get_node")


def unblock_sigterm() -> None:
    """Lets SIGTERM reach this Ray worker as it reaches any process: the workers of a local
    Ray inherit the mask its raylet was started with (``ray_outlives_sigterm``). Called
    first in each of rltpu's actors, from the worker's main thread (which runs a threadless
    actor's methods, and so starts what they start: an env's subprocesses inherit it)."""
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})


def join_cluster(purpose: str) -> None:
    """Connects to the cluster ``RAY_ADDRESS`` names, with token authentication forced on.

    ``address="auto"`` (which scans this machine's processes for any Ray, another user's or
    another run's among them) only when the user sets ``RAY_ADDRESS=auto``, never by default.

    Raises:
      ValueError: ``RAY_ADDRESS`` is unset, or names no reachable cluster.
    """
    address = os.environ.get("RAY_ADDRESS", "").strip()
    if not address:
        raise ValueError(f"{purpose} joins a running Ray cluster: set RAY_ADDRESS to its "
                         "head's address (e.g. RAY_ADDRESS=10.0.0.2:6379, or RAY_ADDRESS=auto "
                         "for the Ray `ray start` ran on this machine)")
    force_token_auth()
    read_token_afresh()
    try:
        ray.init(address=address, configure_logging=False)
    except ConnectionError as e:
        raise ValueError(f"{purpose}: no Ray cluster at RAY_ADDRESS={address} "
                         f"({' '.join(str(e).split())[:200]})") from None


def keep_ray_up() -> bool:
    """Whether a run leaves the Ray it started running when it ends: yes in a Jupyter
    kernel (a notebook, Colab), where the next ``rltpu.train`` in the same process finds
    it connected and starts none (``connect``), and Ray ends with the kernel (or at
    ``ray.shutdown()``); no elsewhere (the CLI, a script), where a run leaves nothing behind.
    """
    from rltpu.progress import in_jupyter_kernel
    return in_jupyter_kernel()


def connect(num_actors: int) -> bool:
    """Starts a local Ray (loopback only, no dashboard) unless one is already connected, or
    joins the cluster ``RAY_ADDRESS`` names; returns whether this call connected."""
    if ray.is_initialized():
        return False
    if os.environ.get("RAY_ADDRESS"):
        join_cluster("rltpu train with RAY_ADDRESS")
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
