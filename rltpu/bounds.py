"""Bounds a run's settings must keep before anything starts: sizes an array can hold, a
reachable target, actors this machine has CPUs for, trajectories its memory holds, batches
that split over the learner devices and processes. ``rltpu.plan.validate`` calls each.
"""
from __future__ import annotations

import math
import os

import jax
import numpy as np
import psutil

from rltpu import devices
from rltpu.agent import Agent, AgentFns
from rltpu.config import RunConfig
from rltpu.types import EnvSpec


# Sizes past which a setting is a typo, not a run: an array dimension JAX indexes with int32.
MAX_SIZE = 2**31 - 1
SIZE_FIELDS = ("num_actors", "envs_per_actor", "unroll_length", "batch_size", "max_in_flight",
               "updates_per_call", "publish_every")


def check_sizes(run: RunConfig) -> None:
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


def check_memory(run: RunConfig, spec: EnvSpec) -> None:
    """Refuses trajectories that would not fit in this machine's available memory."""
    need, available = batch_bytes(run, spec), psutil.virtual_memory().available
    if need > available:
        in_flight = (f" and {run.num_actors} actors x --max-in-flight {run.max_in_flight} "
                     "unrolls in flight") if run.mode == "ray" else ""
        raise ValueError(f"--batch-size {run.batch_size} x --unroll-length {run.unroll_length} "
                         f"of {spec.env_id} steps{in_flight} need about {need / 2**30:,.1f} GiB; "
                         f"this machine has {available / 2**30:,.1f} GiB available; "
                         "give smaller sizes")


def check_devices(agent: Agent, fns: AgentFns, run: RunConfig) -> int:
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
