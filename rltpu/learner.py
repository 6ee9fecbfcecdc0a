"""The learner: an agent's pure update, data-parallel over a device mesh.

Batches arrive as host arrays (this process's share of the global batch), go to the
devices split on the data axis, and the update runs while the next batch is collected.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import numpy as np

from rltpu import devices, recurrent, spaces
from rltpu.agent import AgentFns
from rltpu.types import EnvSpec, RecurrentStart, TrainState, Trajectory, Unroll
from rltpu.validation import skip_nonfinite


def stack_unrolls(unrolls: list[Unroll]) -> Trajectory:
    """Concatenates unrolls along the batch axis (axis 1 of ``[T, B, ...]``)."""
    return jax.tree.map(lambda *xs: np.concatenate(xs, axis=1), *[u.trajectory for u in unrolls])


def example_trajectory(fns: AgentFns, spec: EnvSpec, params, unroll_length: int,
                       batch_size: int) -> Trajectory:
    """Shapes and dtypes (``jax.ShapeDtypeStruct``) of a ``[T, B]`` batch from actors."""
    T, B = unroll_length, batch_size
    obs = spaces.observation_spec(spec.observation_space, (B,))  # a pytree for Dict/Tuple
    over_time = lambda x, n=T: jax.ShapeDtypeStruct((n, *x.shape), x.dtype)
    start = None
    if recurrent.is_recurrent(fns):
        core_state = jax.eval_shape(lambda: fns.initial_core_state(B))
        context = recurrent.initial_context(spec, B)
        out, _ = jax.eval_shape(fns.actor_step, params, obs, jax.random.key(0), core_state,
                                context)
        start = jax.tree.map(lambda x: over_time(x, 1), RecurrentStart(core_state, context))
    else:
        out = jax.eval_shape(fns.actor_step, params, obs, jax.random.key(0))
    flags = jax.ShapeDtypeStruct((T, B), np.bool_)
    return Trajectory(observation=jax.tree.map(lambda x: over_time(x, T + 1), obs),
                      action=over_time(out.action),
                      reward=jax.ShapeDtypeStruct((T, B), np.float32), terminated=flags,
                      truncated=flags, valid=flags,
                      extras=jax.tree.map(over_time, dict(out.extras)),
                      policy_version=jax.ShapeDtypeStruct((T, B), np.int32), start=start)


def example_replay_sample(fns: AgentFns, spec: EnvSpec, params, unroll_length: int):
    """Shapes and dtypes of a replay sample, from the agent's ``to_transitions`` applied to a
    zero trajectory: ``{"transitions": {... [N, ...]}, "weights": [N]}``."""
    example = example_trajectory(fns, spec, params, unroll_length, 1)
    zeros = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), example)
    transitions = fns.replay.to_transitions(zeros._replace(valid=np.ones_like(zeros.valid)))
    n = fns.replay.sample_size
    return {"transitions": jax.tree.map(
                lambda x: jax.ShapeDtypeStruct((n, *x.shape[1:]), x.dtype), transitions),
            "weights": jax.ShapeDtypeStruct((n,), np.float32)}


class LearnerPrograms(NamedTuple):
    """A learner's compiled programs, which a notebook's next run of the same settings
    reuses (``rltpu.session``) instead of compiling them again."""

    init: Any  # jitted ``fns.init``: key -> TrainState
    example: Any  # the global batch's shapes and dtypes
    batch_axis: int  # 1: trajectories [T, B, ...]; 0: replay samples [N, ...]
    update: Any  # the compiled data-parallel update


class Learner:
    """Holds the replicated train state and applies updates on the mesh.

    ``version`` counts updates applied; params of version ``v`` are those after ``v``
    updates, and that is the version actors tag their trajectories with. An update whose
    loss or gradients are not finite keeps the old state (metric ``update_skipped``).

    ``programs``: an earlier learner's of the same agent, settings and devices, to reuse
    (``self.programs`` are this one's).
    """

    def __init__(self, fns: AgentFns, spec: EnvSpec, mesh, seed: int, unroll_length: int,
                 batch_size: int, programs: LearnerPrograms | None = None):
        self.mesh = mesh
        init = jax.jit(fns.init) if programs is None else programs.init
        self.state = devices.replicate(init(jax.random.key(seed)), mesh)
        if programs is None:
            if fns.replay is None:  # trajectories [T, B, ...]: split B
                example = example_trajectory(fns, spec, self.state.params, unroll_length,
                                             batch_size)
                batch_axis = 1
            else:  # replay samples [N, ...]: split N
                example = example_replay_sample(fns, spec, self.state.params, unroll_length)
                batch_axis = 0
            programs = LearnerPrograms(init, example, batch_axis, devices.data_parallel(
                skip_nonfinite(fns.update), mesh, self.state, example, batch_axis))
        self.programs = programs
        self.example, self._batch_axis, self._update = (programs.example, programs.batch_axis,
                                                        programs.update)
        self.version = 0

    def restore(self, state: TrainState, version: int) -> None:
        """Takes a (host) state read from a checkpoint saved after ``version`` updates."""
        self.state = devices.replicate(state, self.mesh)
        self.version = version

    def put(self, host_batch):
        """Starts copying a host batch to the devices; returns the (sharded) device batch."""
        return devices.shard_batch(host_batch, self.mesh, self._batch_axis)

    def update(self, device_batch):
        """Dispatches one update and returns its metrics without waiting for them."""
        self.state, metrics = self._update(self.state, device_batch)
        self.version += 1
        return metrics

    def host_params(self):
        return devices.to_host(self.state.params)
