"""The nouns every module shares: env spec, trajectories, train state, actor output.

Arrays are time-major: ``[T, B, ...]`` with ``T`` the unroll length and ``B`` the
number of environments (trajectory columns).
"""
from __future__ import annotations

from typing import Any, Mapping, NamedTuple

import numpy as np

from rltpu.envs.spec import EnvSpec  # noqa: F401 -- the envs' noun, re-exported: every module speaks it

Params = Any  # a pytree of arrays
Metrics = Mapping[str, Any]


class ActorOutput(NamedTuple):
    """What a policy step returns for a batch of observations."""

    action: Any  # [B, ...]
    extras: Mapping[str, Any]  # behaviour-policy outputs kept for the learner, e.g. logits


class StepContext(NamedTuple):
    """What a recurrent policy step reads besides the observation, per env (``[B, ...]``).

    The runtime keeps it for every env, so an agent's network can take the previous action
    and reward as inputs (as IMPALA's LSTM agent does) and reset its core where an episode
    starts, and the learner rebuilds the same inputs from a trajectory
    (``rltpu.recurrent.unroll_context``).
    """

    first: Any  # bool: this observation starts an episode (the core resets before reading it)
    prev_action: Any  # [*action_shape]: the action taken before it (zeros at the run's start)
    prev_reward: Any  # float32: the reward that action earned (0 on autoreset steps)


class RecurrentStart(NamedTuple):
    """A recurrent agent's acting state at the start of an unroll, so the learner can replay
    the unroll exactly. Every leaf is ``[1, B, ...]``: like the other trajectory fields it
    has the env axis ``B`` second, so stacking unrolls, validating them, splitting a batch
    over the mesh and PPO's minibatches treat it like any other leaf."""

    core_state: Any  # the agent's core state before step 0, [1, B, ...] leaves
    context: StepContext  # step 0's context, [1, B, ...] leaves


class Trajectory(NamedTuple):
    """A time-major unroll of ``T`` steps over ``B`` environments.

    Gymnasium vector envs reset an episode on the step *after* it ends (autoreset
    "next step"): that step ignores the action, returns the first observation of the new
    episode and reward 0. It is kept (so observations stay contiguous) and marked
    ``valid = False``; losses mask it out. Because of it ``observation[t + 1]`` is always the
    true successor of ``observation[t]`` on a valid step, so a truncated episode can
    bootstrap from its last observation while a terminated one does not.
    """

    observation: Any  # [T + 1, B, *obs_shape]; the last one is the bootstrap observation
    action: Any  # [T, B, *action_shape]
    reward: Any  # [T, B] float32
    terminated: Any  # [T, B] bool: the episode ended in a terminal state (no bootstrap)
    truncated: Any  # [T, B] bool: the episode was cut by a time limit (bootstrap)
    valid: Any  # [T, B] bool: False on autoreset steps
    extras: Mapping[str, Any]  # behaviour-policy outputs, [T, B, ...]
    policy_version: Any  # [T, B] int32: version of the params that chose each action
    start: RecurrentStart | None = None  # recurrent agents only: the acting state at step 0


class TrainState(NamedTuple):
    """The learner's whole state; a small pytree, replicated over the device mesh."""

    params: Params
    opt_state: Any
    key: Any
    step: Any  # int32 scalar: updates applied so far


class ActorTimings(NamedTuple):
    """Where one actor's wall time went while it produced one unroll, in seconds.

    Measured with ``time.perf_counter`` inside the actor; the driver sums them into the
    bottleneck report (``rltpu.report``, whose ``ACTOR_PHASES`` follow this order).
    """

    env_s: float = 0.0  # stepping the envs and recording what they returned
    inference_s: float = 0.0  # the policy step, until its action is on the host
    params_s: float = 0.0  # fetching and placing newer params before the unroll
    send_s: float = 0.0  # packing the trajectory into the Unroll that Ray sends
    idle_s: float = 0.0  # from returning the previous unroll to starting this one: Ray
    # serialising it and the actor waiting for a request (back-pressure from the learner)


class Unroll(NamedTuple):
    """What one actor sends per request: a trajectory and what happened during it."""

    trajectory: Trajectory
    episode_returns: np.ndarray  # [n] returns of the episodes that finished in this unroll
    episode_lengths: np.ndarray  # [n]
    actor_id: int
    env_steps: int  # valid transitions in the trajectory
    acting_s: float  # wall seconds the actor spent producing it
    timings: ActorTimings = ActorTimings()
