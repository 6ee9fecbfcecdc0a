"""``validate``: every setting checked against the env, the agent and the devices before
anything starts, producing the ``Plan`` a run is carried out from.

The plan carries what validation had to build anyway (the env's spec, the agent's
functions, a JAX env's functions in Anakin mode), so nothing is built twice: the CLI
restores a checkpoint with ``plan.fns.init`` and both modes' loops take the plan as it is.
"""
from __future__ import annotations

import dataclasses
import datetime
import fcntl
import math
import os
from typing import Any

import jax
import numpy as np
import psutil

from rltpu import devices, envs, storage
from rltpu.agent import Agent, AgentFns
from rltpu.config import RunConfig
from rltpu.envs import jax_envs
from rltpu.types import EnvSpec


@dataclasses.dataclass(frozen=True)
class Plan:
    """What ``validate`` established: everything a run needs before it starts processes."""

    agent: Agent
    agent_config: Any
    run: RunConfig
    spec: EnvSpec
    fns: AgentFns
    """The agent's functions for this spec and config, built once."""
    num_devices: int
    """Learner devices (of every learner process together)."""
    run_dir: str
    """The run directory (on learner processes other than 0, a placeholder: 0 writes it)."""
    jax_env: jax_envs.JaxEnv | None = None
    """Anakin mode: the JAX env's functions."""
    run_dir_lock: "RunDirLock | None" = None
    """Held on the run directory by learner process 0 from validation until the run ends
    (``release``d by ``rltpu.run.train_plan``): no second process resumes it meanwhile."""

    def config(self) -> dict:
        """The run's settings as ``config.json`` keeps them: ``{"run", "agent"}``; ``run.agent``
        names the agent trained (``agent_id``), whatever ``RunConfig.agent`` said."""
        return {"run": {**dataclasses.asdict(self.run), "agent": agent_id(self.agent, self.run.agent)},
                "agent": dataclasses.asdict(self.agent_config)}


def agent_id(agent: Agent, given: str) -> str:
    """How ``config.json`` names ``agent``: its built-in name, else ``given`` when that is a
    ``module:Agent`` path (the CLI's), else the agent's own ``module:Class``. From Python,
    ``rltpu.train(agents.get("ppo"), ..., RunConfig())`` leaves ``RunConfig.agent`` at its
    default, "impala", which ``rltpu.load`` would then build."""
    from rltpu import agents
    if agent.name in agents.BUILTIN and type(agent) is type(agents.get(agent.name)):
        return agent.name
    return given if ":" in given else f"{type(agent).__module__}:{type(agent).__qualname__}"


def check_env_and_agent(agent: Agent, agent_config: Any, run: RunConfig
                        ) -> tuple[EnvSpec, AgentFns, jax_envs.JaxEnv | None]:
    """The env's spec, the agent's functions for it and, in Anakin mode, the JAX env's
    functions (nothing compiles, no device is asked).

    Raises:
      ValueError: naming what does not fit.
    """
    jax_env = None
    if run.mode == "anakin":
        if not jax_envs.is_jax_env(run.env):
            raise ValueError(f"--mode anakin needs a JAX env, {jax_envs.PREFIX}NAME (e.g. "
                             f"{jax_envs.PREFIX}CartPole-v1); got --env {run.env!r}, which "
                             "--mode ray steps")
        if run.normalize_observations:
            raise ValueError("--normalize-observations is not supported in --mode anakin; "
                             "use --mode ray")
        jax_env, spec = jax_envs.make(run.env)
    elif jax_envs.is_jax_env(run.env):
        raise ValueError(f"--env {run.env!r} is a JAX env: train it with --mode anakin "
                         "(--mode ray steps gymnasium envs, e.g. CartPole-v1)")
    else:
        spec = envs.make_spec(run.env, **run.env_options())
    agent.check_spec(spec)
    fns = agent.build(spec, agent_config, run)  # raises on bad combinations
    if run.evaluates and run.eval_policy == "greedy" and fns.greedy_step is None:
        raise ValueError(f"--agent {agent.name} has no greedy_step to evaluate with; use "
                         "--eval-policy sample or no --eval-every-updates/--eval-every-s")
    if run.mode == "anakin" and fns.replay is not None:
        raise ValueError(f"--agent {agent.name} learns from a replay buffer, which --mode anakin "
                         "does not have; train it with --mode ray")
    return spec, fns, jax_env


def validate(agent: Agent, agent_config: Any, run: RunConfig, resume: bool = False) -> Plan:
    """Checks the settings against the env, the agent, the devices and this machine's CPUs
    and memory, then claims the run directory: a new one is made (atomically: two runs never
    get the same), an existing one (``resume``) locked. Starts no process.

    Args:
      resume: the run continues in ``run.run_dir``, which must exist.

    Raises:
      ValueError: naming the bad value and what would be valid (nothing is left behind).
    """
    if os.environ.get("RAY_AUTH_MODE", "").strip().lower() == "disabled":
        raise ValueError("RAY_AUTH_MODE=disabled: rltpu runs Ray only with token authentication "
                         "(anyone who can reach a Ray cluster can run code on it); unset it")
    cache = run.compilation_cache
    if cache is not None and os.path.exists(os.path.expanduser(cache)) and not os.path.isdir(
            os.path.expanduser(cache)):
        raise ValueError(f"--compilation-cache {cache!r} is not a directory; give a directory "
                         "(made if missing) or none")
    _check_sizes(run)
    spec, fns, jax_env = check_env_and_agent(agent, agent_config, run)
    num_devices = _check_devices(agent, fns, run)
    _check_memory(run, spec)
    if run.wandb:
        from rltpu import sinks
        sinks.check_wandb()
    run_dir, lock = _claim_run_dir(agent, run, resume)
    return Plan(agent, agent_config, run, spec, fns, num_devices, run_dir, jax_env, lock)


# Sizes past which a setting is a typo, not a run: an array dimension JAX indexes with int32.
MAX_SIZE = 2**31 - 1
SIZE_FIELDS = ("num_actors", "envs_per_actor", "unroll_length", "batch_size", "max_in_flight",
               "updates_per_call", "publish_every")


def _check_sizes(run: RunConfig) -> None:
    """Refuses absurd sizes, a target that can never be reached, and more actors than this
    machine has CPUs (one actor each) unless ``--oversubscribe``. Before the agent is built:
    building with such sizes would fail anywhere."""
    for name in SIZE_FIELDS:
        if getattr(run, name) > MAX_SIZE:
            raise ValueError(f"--{name.replace('_', '-')} {getattr(run, name)} is larger than "
                             f"{MAX_SIZE:,} (an array dimension); give a realistic size")
    if run.unroll_length * run.batch_size > MAX_SIZE:
        raise ValueError(f"--unroll-length {run.unroll_length} x --batch-size {run.batch_size} "
                         f"is more than {MAX_SIZE:,} transitions per batch; give smaller sizes")
    if run.target_return is not None and not math.isfinite(run.target_return):
        raise ValueError(f"--target-return {run.target_return} can never be reached; give a "
                         "finite return or none")
    # With RAY_ADDRESS the cluster's CPUs are not known before connecting (and an autoscaler
    # may add some): there Ray starts the actors that fit and the others wait for CPUs.
    if run.mode == "ray" and not os.environ.get("RAY_ADDRESS") and not run.oversubscribe:
        processes = devices.process_count()
        per_host = -(-run.num_actors // processes)
        cpus = os.cpu_count() or 1
        if per_host > cpus:
            where = "this machine" if processes == 1 else "each learner host"
            raise ValueError(f"--num-actors {run.num_actors} puts {per_host} actors on {where}, "
                             f"which has {cpus} CPUs (one actor each); give at most "
                             f"{cpus * processes} or pass --oversubscribe")


def batch_bytes(run: RunConfig, spec: EnvSpec) -> int:
    """About how many bytes of host memory a run's trajectories take at once: the learner's
    batch (``[T, B]`` observations and actions) and, in Ray mode, every unroll in flight
    (each actor's ``--max-in-flight`` of ``[T, envs_per_actor]``). Rewards, discounts and
    the agent's extras add a few bytes per step, counted as 16; a replay buffer is not
    counted."""
    def space_bytes(space) -> int:
        shape = getattr(space, "shape", None) or ()
        dtype = getattr(space, "dtype", None) or np.float32
        return int(np.prod(shape, dtype=object)) * np.dtype(dtype).itemsize
    observation = sum(int(np.prod(x.shape, dtype=object)) * np.dtype(x.dtype).itemsize
                      for x in jax.tree.leaves(spec.observation_spec))  # every Dict/Tuple part
    step = observation + space_bytes(spec.action_space) + 16
    steps = run.unroll_length * run.batch_size
    if run.mode == "ray":
        steps += run.num_actors * run.max_in_flight * run.unroll_length * run.envs_per_actor
    return steps * step


def _check_memory(run: RunConfig, spec: EnvSpec) -> None:
    need, available = batch_bytes(run, spec), psutil.virtual_memory().available
    if need > available:
        in_flight = (f" and {run.num_actors} actors x --max-in-flight {run.max_in_flight} "
                     "unrolls in flight") if run.mode == "ray" else ""
        raise ValueError(f"--batch-size {run.batch_size} x --unroll-length {run.unroll_length} "
                         f"of {spec.env_id} steps{in_flight} need about {need / 2**30:,.1f} GiB; "
                         f"this machine has {available / 2**30:,.1f} GiB available; "
                         "give smaller sizes")


def _check_devices(agent: Agent, fns: AgentFns, run: RunConfig) -> int:
    """The learner devices the run uses; checks that its batches split over them."""
    available = devices.device_count()
    num_devices = run.num_devices or available
    if num_devices > available:
        raise ValueError(f"--num-devices {num_devices} but only {available} "
                         f"{devices.platform()} devices are present")
    processes = devices.process_count()
    if processes > 1:
        if run.mode == "anakin":
            raise ValueError(f"--mode anakin runs on one host; {processes} learner processes "
                             "were started (use --mode ray for a multi-host learner)")
        if fns.replay is not None:
            raise ValueError(f"--agent {agent.name} learns from a replay buffer, which is not "
                             "split over learner processes yet; use a trajectory agent "
                             "(impala, ppo) or one learner process")
        if num_devices != available:
            raise ValueError(f"--num-devices {num_devices}: {processes} learner processes use "
                             f"every device of every host, {available}")
        if run.batch_size % (processes * run.envs_per_actor):
            raise ValueError(f"--batch-size {run.batch_size} must be a multiple of "
                             f"{processes} learner processes x --envs-per-actor "
                             f"{run.envs_per_actor} (each host feeds whole unrolls)")
        if run.num_actors < processes:
            raise ValueError(f"--num-actors {run.num_actors} is fewer than the {processes} "
                             f"learner processes; each needs at least one actor")
    if fns.replay is not None and fns.replay.sample_size % num_devices:
        raise ValueError(f"--sample-size {fns.replay.sample_size} is not divisible by the "
                         f"{num_devices} learner devices; use a multiple of {num_devices}")
    if run.batch_size % num_devices:
        raise ValueError(f"--batch-size {run.batch_size} is not divisible by the {num_devices} "
                         f"learner devices; use a multiple of {num_devices}"
                         + (" (in --mode anakin it is the number of envs, split over them)"
                            if run.mode == "anakin" else ""))
    return num_devices


class RunDirLock:
    """An exclusive lock on a run directory for as long as a run uses it: ``flock`` on the
    directory itself (nothing is written into it; the system drops the lock when the
    process ends, however it ends).

    Raises:
      ValueError: another process holds it.
    """

    def __init__(self, path: str, flag: str):
        self._fd: int | None = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.release()
            raise ValueError(f"{flag} {path}: another rltpu process is running it; wait for "
                             "it to end (or stop it) first") from None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _claim_run_dir(agent: Agent, run: RunConfig, resume: bool) -> tuple[str, RunDirLock | None]:
    """The run directory, claimed: an existing one (``resume``) locked, or a new one made
    and locked. Made with ``mkdir``, which fails if the folder exists, so two runs
    starting together never share one: the default name (stamped to the second) gets a
    suffix instead. Learner processes other than 0 claim nothing (process 0 writes it)."""
    if devices.process_index() != 0:
        return run.run_dir or "(process 0's run directory)", None
    if run.run_dir is not None and not run.run_dir.strip():
        raise ValueError(f"--run-dir {run.run_dir!r} is empty; give a path (or leave it out "
                         "for a new folder under runs/)")
    if run.run_dir is not None:
        storage.check_path(run.run_dir, "--resume" if resume else "--run-dir")  # (s3:// ...)
        if storage.is_remote(run.run_dir):
            return _check_remote_run_dir(run.run_dir, resume), None
    if resume:
        if run.run_dir is None:
            raise ValueError("resuming needs the run directory")
        if not os.path.isdir(run.run_dir):
            raise ValueError(f"--resume {run.run_dir}: no such run directory")
        return run.run_dir, RunDirLock(run.run_dir, "--resume")
    if run.run_dir is not None:
        try:
            _make_dir(run.run_dir)
        except FileExistsError:
            raise ValueError(f"--run-dir {run.run_dir} already exists; runs are never "
                             "overwritten, pass a new path") from None
        return run.run_dir, RunDirLock(run.run_dir, "--run-dir")
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    name = f"{agent.name}-{run.env.replace('/', '_').replace(':', '_')}-{stamp}"
    base = run_dir = os.path.join("runs", name)
    for n in range(1, 10_000):
        try:
            _make_dir(run_dir)
            return run_dir, RunDirLock(run_dir, "--run-dir")
        except FileExistsError:
            run_dir = f"{base}-{n}"
    raise ValueError(f"{base}-* : ten thousand run directories of this second exist; pass "
                     "--run-dir")


def _check_remote_run_dir(run_dir: str, resume: bool) -> str:
    """A run directory in Cloud Storage, checked: it can be reached and written (a probe
    write and delete), and exists when resuming, not otherwise. A bucket has no atomic
    ``mkdir`` nor a lock: two runs given the same gs:// path at once are not kept apart."""
    flag = "--resume" if resume else "--run-dir"
    storage.check_writable(run_dir, flag)  # before anything starts
    if resume and not storage.isdir(run_dir):
        raise ValueError(f"--resume {run_dir}: no such run directory")
    if not resume and storage.exists(run_dir):
        raise ValueError(f"--run-dir {run_dir} already exists; runs are never "
                         "overwritten, pass a new path")
    return run_dir


def _make_dir(path: str) -> None:
    """``mkdir`` of ``path`` (its parents made as needed).

    Raises:
      FileExistsError: ``path`` exists.
      ValueError: it cannot be made (under a file, not writable, ...), naming why.
    """
    parent = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(parent, exist_ok=True)
        os.mkdir(path)
    except (FileExistsError, NotADirectoryError) as e:
        if isinstance(e, FileExistsError) and os.path.isdir(parent) and os.path.lexists(path):
            raise
        blocking = parent
        while not os.path.lexists(blocking):
            blocking = os.path.dirname(blocking)
        raise ValueError(f"--run-dir {path}: cannot make it, {blocking} is a file") from None
    except OSError as e:
        raise ValueError(f"--run-dir {path}: cannot make it ({e.strerror}: "
                         f"{e.filename or path})") from None
