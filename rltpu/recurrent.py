"""Recurrent agents: the acting state the runtime keeps per env, and what learners rebuild.

An agent is recurrent when its ``AgentFns.initial_core_state`` is set. Its policy steps
(``actor_step``, ``greedy_step``, the steps of ``actor_step_for``) then take and return a
core state::

    step(params, observation [B, ...], key, core_state, context: StepContext)
        -> (ActorOutput, core_state)

The runtime (Ray actors, the Anakin loop, evaluation) keeps each env's core state and
``StepContext`` (episode start, previous action and reward) across steps and unrolls, and
records both as they were before each unroll's first step in ``Trajectory.start``. The
agent resets its core itself where ``context.first`` is set, in acting and in its loss
alike, so the two cannot disagree. ``unroll_context`` rebuilds every step's context from a
trajectory: the learner replays the unroll with exactly the inputs the actor had.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rltpu.types import EnvSpec, RecurrentStart, StepContext, Trajectory


def is_recurrent(fns) -> bool:
    """Whether ``fns`` (``rltpu.AgentFns``) is a recurrent agent's."""
    return fns.initial_core_state is not None


def action_dtype(spec: EnvSpec):
    """The dtype of ``StepContext.prev_action``: int32 for discrete actions, else float32
    (whatever dtype an agent's actions have, contexts hold one known dtype)."""
    return np.int32 if spec.discrete else np.float32


def initial_context(spec: EnvSpec, num_envs: int) -> StepContext:
    """The context of ``num_envs`` freshly reset envs of ``spec``: every one starts an
    episode, with no previous action (zeros) or reward (0)."""
    return StepContext(first=np.ones(num_envs, bool),
                       prev_action=np.zeros((num_envs, *spec.action_space.shape),
                                            action_dtype(spec)),
                       prev_reward=np.zeros(num_envs, np.float32))


def next_context(context: StepContext, action, reward, autoreset) -> StepContext:
    """The context of the step after one (whose context was ``context``) that took
    ``action`` and earned ``reward``; ``autoreset`` ([B] bool) marks an autoreset step,
    whose next observation starts an episode (see ``rltpu.types.Trajectory``). Works on
    numpy and JAX arrays."""
    return StepContext(first=autoreset, prev_action=action.astype(context.prev_action.dtype),
                       prev_reward=reward.astype(np.float32))


def start_of(core_state, context: StepContext) -> RecurrentStart:
    """``Trajectory.start`` from the state and context before an unroll's first step:
    every leaf gains the leading axis of length 1 (``[1, B, ...]``)."""
    return jax.tree.map(lambda x: x[None], RecurrentStart(core_state, context))


def unroll_context(trajectory: Trajectory) -> StepContext:
    """The context of each of a trajectory's ``T + 1`` observations, ``[T + 1, B, ...]``.

    Step ``t + 1`` starts an episode exactly when step ``t`` was an autoreset step
    (``valid[t]`` False); its previous action and reward are step ``t``'s. Step 0's come
    from ``trajectory.start``. The last row is the bootstrap observation's context.
    """
    start = trajectory.start.context
    flags = jnp.logical_not(trajectory.valid)
    return StepContext(
        first=jnp.concatenate([start.first, flags]),
        prev_action=jnp.concatenate([start.prev_action, trajectory.action.astype(
            start.prev_action.dtype)]),
        prev_reward=jnp.concatenate([start.prev_reward, trajectory.reward]))


def start_core_state(trajectory: Trajectory) -> Any:
    """The core state before a trajectory's first step, ``[B, ...]`` leaves."""
    return jax.tree.map(lambda x: x[0], trajectory.start.core_state)


def reset_where(first, initial, state):
    """``initial`` where ``first`` ([B] bool) holds, else ``state``; both ``[B, ...]`` pytrees."""
    def pick(init, current):
        condition = first.reshape(first.shape + (1,) * (current.ndim - 1))
        return jnp.where(condition, init, current)
    return jax.tree.map(pick, initial, state)
