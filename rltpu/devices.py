"""Every line of rltpu that touches devices, meshes or ``jax.distributed`` lives here.

The learner is data-parallel the way ``pmap`` was: one mesh axis (``DATA_AXIS``) over all
devices of all learner processes, the batch split along it, params and optimizer state
replicated. It is written with ``jax.jit`` and ``NamedSharding``: the update computes a
mean over the global batch, so XLA inserts the cross-device gradient all-reduce itself.
"""
from __future__ import annotations

import atexit
import functools
import inspect
import os
import select
import subprocess
import sys
import time
from typing import Callable

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"

# Environment for processes that must never take the accelerator (rollout actors): JAX on
# the CPU, one compute thread, so N actors on N cores do not fight over threads.
ACTOR_PROCESS_ENV = {
    "JAX_PLATFORMS": "cpu",
    "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
}


def pin_process_to_cpu() -> None:
    """Makes JAX in this process use only the CPU, with one compute thread.

    Called first thing in a rollout actor, before JAX starts a backend: the actor never
    takes the accelerator, which only one process may own. (Setting it here rather than
    through Ray's runtime_env lets actors start in Ray's prestarted workers, seconds sooner.)
    """
    os.environ.update(ACTOR_PROCESS_ENV)
    jax.config.update("jax_platforms", "cpu")


COMPILATION_CACHE_MAX_BYTES = 2**30
"""The compilation cache's bound: past it, the least recently used programs are removed."""


def use_compilation_cache(directory: str | None,
                          max_bytes: int = COMPILATION_CACHE_MAX_BYTES) -> None:
    """Keeps this process's compiled programs in ``directory`` (JAX's persistent compilation
    cache, made if missing), so a later run with the same agent, shapes and devices loads
    the learner's update and the actors' policy step instead of compiling them again:
    seconds of every start-up. ``None`` turns it off. The programs are the same either way,
    and so are the results. The cache holds at most ``max_bytes``, evicting the least
    recently used programs (processes sharing it take turns through a lock file).
    """
    from jax.experimental.compilation_cache import compilation_cache
    path = None if directory is None else os.path.expanduser(directory)
    if (path, max_bytes) != (jax.config.jax_compilation_cache_dir,
                             jax.config.jax_compilation_cache_max_size):
        compilation_cache.reset_cache()  # JAX opens its cache once per process otherwise
        jax.config.update("jax_compilation_cache_dir", path)
        jax.config.update("jax_compilation_cache_max_size", max_bytes)
        if path is not None and os.path.isdir(path):
            _date_undated_programs(path)
    # JAX caches only compiles slower than 1 s by default; an actor's policy takes less.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.1)


def _date_undated_programs(path: str) -> None:
    """Gives each program in the cache without a last-use time (``KEY-cache`` without
    ``KEY-atime``) the time now.

    JAX's bounded cache reads every program's last-use time before it writes a new one, and
    one missing time fails that write, and every later one, with a warning: the cache stops
    caching. A program goes undated when the cache had no bound when it was written (older
    rltpu, or JAX used without rltpu) or when a process was killed between writing a
    program and its time.
    """
    import filelock  # a dependency of JAX's bounded cache, and of rltpu
    programs = [name.removesuffix("-cache") for name in os.listdir(path) if name.endswith("-cache")]
    now = time.time_ns().to_bytes(8, "little")
    with filelock.FileLock(os.path.join(path, ".lockfile"), timeout=30):  # JAX's own lock
        for key in programs:
            atime = os.path.join(path, f"{key}-atime")
            if os.path.exists(os.path.join(path, f"{key}-cache")) and not os.path.exists(atime):
                with open(atime, "wb") as f:
                    f.write(now)


def initialize_distributed(coordinator: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None, cpu_devices: int | None = None,
                           timeout_s: float = 300.0, heartbeat_timeout_s: float = 100.0,
                           service_grace_s: float = 70.0) -> None:
    """Joins this learner process to a multi-process SPMD program.

    On Cloud TPU call it with no arguments (the TPU runtime supplies them); elsewhere pass
    the coordinator's ``host:port``, the process count and this process's id. On CPUs (a
    simulated pod) collectives go over gloo, and ``cpu_devices`` sets the virtual CPU
    devices per process. Call it before anything else touches JAX's devices.

    With a coordinator given, JAX's coordination service (the processes' meeting point and
    key-value store, which rltpu's heartbeats use) runs in a process of its own that learner
    process 0 starts beside itself (``python -m rltpu.coordinator``), not inside process 0
    as ``jax.distributed`` would run it: when process 0 dies, the service outlives it, so
    the others' watchdog names it lost like any other process (``hosts.Watchdog``) instead
    of JAX aborting them at once with pages of its own. Every process, 0 included, is the
    service's client. JAX still starts a service of its own in process 0; it listens on a
    loopback port the system picks, and no one ever joins it. The service process ends
    when process 0 ends its run (``end_coordination_service``), or ``service_grace_s``
    after process 0 died (time for the others to notice and leave), or, after a SIGTERM or
    SIGINT to it, as soon as process 0 has gone.

    With no arguments JAX's own discovery finds the others and its service runs inside
    process 0: there a dead process 0 ends the others through JAX's abort (within a second,
    JAX's message), not rltpu's line. rltpu's ``--distributed auto`` comes here only where
    ``hosts.cloud_tpu_cluster`` cannot read the slice from a TPU VM's metadata (multislice).

    The service (unauthenticated: whoever reaches it can join the program) listens on
    ``coordinator`` alone, not on every interface as JAX's default would; the port must
    stay inside the VPC.

    Args:
      timeout_s: how long to wait for every process to connect (JAX's
        ``initialization_timeout``).
      heartbeat_timeout_s: JAX's own heartbeat bound (after it, JAX's coordination
        service declares a silent process dead and aborts every other with native stack
        traces). JAX's client takes no Python callback instead of that abort (a
        ``missed_heartbeat_callback`` dies converting its status, JAX 0.10.2), so rltpu's
        own watchdog must decide first (``hosts.Watchdog``).
      service_grace_s: how long the service outlives a process 0 that died.

    Raises:
      ValueError: with no arguments, off a Cloud TPU (nothing says where the others are).
      RuntimeError: process 0 could not start the service (its error).
    """
    if cpu_devices is not None:
        jax.config.update("jax_num_cpu_devices", cpu_devices)
    if os.environ.get("JAX_PLATFORMS", "") == "cpu" or cpu_devices is not None:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    timeouts = {"initialization_timeout": max(1, int(timeout_s)),
                "heartbeat_timeout_seconds": max(1, int(heartbeat_timeout_s))}
    if coordinator is None and num_processes is None:
        try:
            jax.distributed.initialize(**timeouts)
        except ValueError as e:  # JAX's "coordinator_address should be defined."
            raise ValueError(f"--distributed auto: the TPU runtime did not say where the other "
                             f"hosts are ({' '.join(str(e).split())}); off a Cloud TPU give "
                             "--coordinator HOST:PORT --num-processes N --process-id I") from None
        return
    # Process 0's own JAX service, never joined, on a loopback port the system picks; the
    # others' bind address is unused (JAX starts a service in process 0 alone).
    unused = "127.0.0.1:0" if process_id == 0 else coordinator
    bind = {}
    if "coordinator_bind_address" in inspect.signature(jax.distributed.initialize).parameters:
        bind["coordinator_bind_address"] = unused
    else:  # (an older JAX reads it from the environment)
        os.environ["JAX_COORDINATOR_BIND_ADDRESS"] = unused
    if process_id == 0:
        _start_coordination_service(coordinator, num_processes, heartbeat_timeout_s,
                                    service_grace_s, timeout_s)
    try:
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                                   process_id=process_id, **bind, **timeouts)
    except BaseException:
        end_coordination_service()
        raise


COORDINATION_SHUTDOWN_S = 300
"""How long the coordination service waits at the end for every process to shut down (JAX's
default)."""

_service: "subprocess.Popen | None" = None  # the coordination service's process (process 0)


def _start_coordination_service(address: str, num_processes: int, heartbeat_timeout_s: float,
                                grace_s: float, timeout_s: float) -> None:
    """Starts ``python -m rltpu.coordinator`` beside this process (learner process 0) and
    waits until its service listens on ``address``."""
    global _service
    env = {**os.environ, **ACTOR_PROCESS_ENV}  # (it never takes a device)
    _service = subprocess.Popen(
        [sys.executable, "-m", "rltpu.coordinator", address, str(num_processes),
         str(max(1, int(heartbeat_timeout_s))), f"{grace_s:g}"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    # It says "serving" once it listens; if it fails, its stdout closes.
    ready = select.select([_service.stdout], [], [], max(1.0, timeout_s))[0]
    if not ready or _service.stdout.readline().strip() != b"serving":
        _service.kill()
        error = _service.stderr.read().decode(errors="replace").strip().splitlines()
        _service.wait()
        _service = None
        raise RuntimeError(f"the coordination service could not start on {address}: "
                           + (error[-1] if error else "(no message)"))
    _service.stdout.close()
    _service.stderr.close()
    # Runs before JAX's own exit handler (registered when jax was imported): every process
    # shuts its client down with the others, then the service may go.
    atexit.register(_leave_at_exit)


def _leave_at_exit() -> None:
    if _service is not None:
        try:
            jax.distributed.shutdown()
        finally:
            end_coordination_service()


def end_coordination_service() -> None:
    """Process 0, its run ended (normally, or leaving on its own after a signal or a lost
    peer): ends the coordination service at once, which ends every other process's
    connection to it. Does nothing elsewhere, or when the service has ended."""
    global _service
    if _service is None:
        return
    service, _service = _service, None
    try:
        service.stdin.write(b"end\n")
        service.stdin.close()
    except OSError:
        pass
    try:
        service.wait(timeout=10)
    except subprocess.TimeoutExpired:
        service.kill()


def serve_coordination(address: str, num_processes: int, heartbeat_timeout_s: int,
                       shutdown_timeout_s: int = COORDINATION_SHUTDOWN_S):
    """JAX's coordination service for ``num_processes`` processes, listening on ``address``
    alone (``rltpu.coordinator`` runs it). Returns the service (it serves until its
    ``shutdown()``, or the end of this process)."""
    from jax._src.lib import _jax  # what jax.distributed.initialize starts in process 0
    return _jax.get_distributed_runtime_service(address, num_processes,
                                                heartbeat_timeout=heartbeat_timeout_s,
                                                shutdown_timeout=shutdown_timeout_s)


def publish(key: str, value: str) -> None:
    """Sets ``key`` to ``value`` in the key-value store of JAX's coordination service (on
    learner process 0), overwriting it. Raises if the service cannot be reached."""
    _client().key_value_set(key, value, allow_overwrite=True)


def published(prefix: str) -> dict[str, str]:
    """Every key under ``prefix`` (a ``/``-ended directory) in that store, with its value.
    Raises if the service cannot be reached."""
    return dict(_client().key_value_dir_get(prefix))


def _client():
    # JAX keeps its distributed client in a private global; multihost_utils reads it too.
    from jax._src import distributed
    client = distributed.global_state.client
    if client is None:
        raise RuntimeError("jax.distributed is not initialized")
    return client


def process_index() -> int:
    return jax.process_index()


def process_count() -> int:
    return jax.process_count()


def device_count() -> int:
    """Devices the learner's mesh spans: every device of every learner process."""
    return jax.device_count()


def all_processes(local):
    """Every learner process's ``local`` pytree (numpy leaves of the same shapes and dtypes
    in each), stacked in process order: each leaf gains a leading ``[num_processes]`` axis.

    A collective: every process must call it, at the same point of the same step, or the
    callers wait for the missing one for ever. With one process it is a reshape.
    """
    if jax.process_count() == 1:
        return jax.tree.map(lambda x: np.asarray(x)[None], local)
    from jax.experimental import multihost_utils
    return jax.tree.map(np.asarray, multihost_utils.process_allgather(local))


def bytes_from_first_process(data: bytes | None) -> bytes:
    """Learner process 0's ``data`` in every learner process (the others pass None).

    A collective, like ``all_processes``. With one process it returns ``data``.
    """
    if jax.process_count() == 1:
        return data
    from jax.experimental import multihost_utils
    first = jax.process_index() == 0
    # Bytes, not typed arrays: the broadcast is a sum with zeros, which would turn -0.0 to 0.0.
    size = multihost_utils.broadcast_one_to_all(np.array([len(data) if first else 0], np.int64))
    buffer = np.frombuffer(data, np.uint8) if first else np.zeros(int(size[0]), np.uint8)
    return np.asarray(multihost_utils.broadcast_one_to_all(buffer)).tobytes()


def local_device_count() -> int:
    return jax.local_device_count()


def platform() -> str:
    return jax.devices()[0].platform


def make_mesh(num_devices: int | None = None) -> Mesh:
    """A one-axis mesh over the first ``num_devices`` devices (all of them by default)."""
    devices = jax.devices()
    n = len(devices) if num_devices is None else num_devices
    if not 1 <= n <= len(devices):
        raise ValueError(f"num_devices={n} but this learner has {len(devices)} devices")
    if n == len(devices):
        kwargs = {}
        axis_type = getattr(jax.sharding, "AxisType", None)
        if axis_type is not None:  # JAX >= 0.6: ask for automatic (GSPMD) sharding explicitly
            kwargs["axis_types"] = (axis_type.Auto,)
        return jax.make_mesh((n,), (DATA_AXIS,), **kwargs)
    return Mesh(np.asarray(devices[:n]), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh, batch_axis: int = 1) -> NamedSharding:
    """Splits axis ``batch_axis`` (1 for time-major ``[T, B, ...]``) over the data axis."""
    return NamedSharding(mesh, PartitionSpec(*([None] * batch_axis), DATA_AXIS))


def replicate(tree, mesh: Mesh):
    """Puts a pytree on every device of the mesh (params, optimizer state); on a
    multi-process mesh every process passes the same values."""
    if jax.process_count() == 1:
        return jax.device_put(tree, replicated(mesh))
    sharding = replicated(mesh)

    def put(x):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):  # typed RNG keys: via their bits
            return jax.random.wrap_key_data(put(jax.random.key_data(x)), impl=jax.random.key_impl(x))
        return jax.make_array_from_process_local_data(sharding, np.asarray(x))
    return jax.tree.map(put, tree)


def shard_batch(host_batch, mesh: Mesh, batch_axis: int = 1):
    """Makes the global batch from this process's share of it.

    Each learner process passes the columns it collected; the global batch is their
    concatenation along ``batch_axis`` in process order. The copy to the devices starts
    at once and runs while the caller goes on.
    """
    sharding = batch_sharding(mesh, batch_axis)
    if jax.process_count() == 1:  # the same result, with less per-leaf overhead
        return jax.device_put(host_batch, sharding)
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), host_batch)


def data_parallel(update: Callable, mesh: Mesh, state, example_batch, batch_axis: int = 1):
    """Compiles ``update(state, batch) -> (state, metrics)`` over the mesh, ahead of time.

    State in and out is replicated, the batch is split on the data axis, and the incoming
    state's buffers are donated (the update owns them). ``example_batch`` gives the global
    batch's shapes and dtypes (``jax.ShapeDtypeStruct`` leaves); a batch of any other shape
    is refused when called.
    """
    jitted = jax.jit(update,
                     in_shardings=(replicated(mesh), batch_sharding(mesh, batch_axis)),
                     out_shardings=(replicated(mesh), replicated(mesh)),
                     donate_argnums=0)
    return jitted.lower(state, example_batch).compile()


def to_host(tree):
    """Copies a replicated (or single-device) pytree to numpy, from this process's first
    shard; works on multi-process meshes where the global array is not addressable."""
    def fetch(x):
        if isinstance(x, jax.Array):
            return np.asarray(x.addressable_data(0))
        return np.asarray(x)
    return jax.tree.map(fetch, tree)


def wait(tree):
    """Blocks until every array in ``tree`` is computed (or copied); returns ``tree``."""
    return jax.block_until_ready(tree)


def ready_at(tree) -> float:
    """Blocks until ``tree`` is computed and returns ``time.perf_counter()`` then; run in a
    thread, it tells when an update finished without the caller waiting for it."""
    jax.block_until_ready(tree)
    return time.perf_counter()


def to_actor_device(tree):
    """Puts params on an actor's (CPU) device once, so each policy step does not copy them."""
    return _copy_to_cpu()(tree)


@functools.cache
def _copy_to_cpu() -> Callable:
    # One jitted call moves every leaf at once: jax.device_put walks the tree in Python,
    # about 50 us a leaf, which an actor would pay each time it takes new params.
    return jax.jit(lambda tree: tree,
                   out_shardings=jax.sharding.SingleDeviceSharding(jax.devices("cpu")[0]))


def to_inference_device(tree):
    """Puts params on the device central inference acts on: this host's first device, one
    of the learner's (a copy, so the update's donated buffers never take it away)."""
    return _copy_to_first_local()(tree)


@functools.cache
def _copy_to_first_local() -> Callable:
    # (as _copy_to_cpu: one jitted call moves every leaf at once)
    return jax.jit(lambda tree: tree,
                   out_shardings=jax.sharding.SingleDeviceSharding(jax.local_devices()[0]))


def anakin_loop(loop: Callable, mesh: Mesh, state, env_batch, runner):
    """Compiles an Anakin loop ``loop(state, env_batch, runner) -> (state, env_batch,
    runner, outputs)`` over the mesh, ahead of time.

    The env batch (env states, observations, per-env episode counters: every leaf
    ``[B, ...]``) is split on the data axis, so each device steps its share of the envs and
    acts and learns on it; the train state, the runner (RNG key, policy version) and the
    outputs (metrics, episode statistics) are replicated. Inputs are donated: the loop
    owns them, and XLA updates the env batch in place.
    """
    envs = batch_sharding(mesh, batch_axis=0)
    jitted = jax.jit(loop,
                     in_shardings=(replicated(mesh), envs, replicated(mesh)),
                     out_shardings=(replicated(mesh), envs, replicated(mesh), replicated(mesh)),
                     donate_argnums=(0, 1, 2))
    return jitted.lower(state, env_batch, runner).compile()
