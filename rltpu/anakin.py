"""Anakin mode: env steps, acting and learning in one compiled program, no Ray.

For JAX-native envs (``rltpu.envs.jax_envs``: gymnax). The env batch is vmapped and split over
the device mesh; each update unrolls ``T`` steps with ``lax.scan``, building the same
``Trajectory`` the Ray actors send, and applies the agent's own ``update`` to it; one
compiled call runs ``updates_per_call`` updates (``lax.scan`` again), so Python runs once
per call. (Hessel et al. 2021, "Podracer architectures for scalable RL": Anakin.)

The runtime knows nothing about the algorithm: it uses the agent's ``init``,
``actor_step`` and ``update`` (``rltpu.agent.AgentFns``), as the Ray mode does.

gymnax resets an ended episode within the step that ended it. Ray mode's trajectories
follow gymnasium's "next step" autoreset instead (the step after an episode's end ignores
its action, shows the new episode's first observation and is marked invalid), and agents
rely on ``observation[t + 1]`` being the true successor on every valid step. The loop
keeps those semantics: it records the true last observation and shows the reset one on an
extra, invalid step. That costs one env step per episode (as it does in Ray mode) and
makes the agents' ``update`` consume Anakin trajectories unchanged.

The host loop around the program (run directory, stops, checkpoints, metrics) is
``rltpu.anakin_host``.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rltpu import devices, recurrent
from rltpu.agent import AgentFns
from rltpu.envs import jax_envs
from rltpu.metrics import EPISODE_WINDOW
from rltpu.types import Trajectory
from rltpu.validation import skip_nonfinite


class EnvBatch(NamedTuple):
    """The envs' side of the loop; every leaf is ``[B, ...]``, split over the mesh."""

    state: Any  # the JAX env's states
    observation: Any  # what the policy acts on next
    reset_observation: Any  # the first observation of the next episode, shown after its autoreset step
    episode_ended: Any  # bool: the next step is the autoreset step (invalid)
    episode_return: Any  # float32: return of the running episode so far
    episode_length: Any  # int32
    acting: Any = None  # a recurrent agent's (core state, StepContext) per env; None otherwise


class Runner(NamedTuple):
    """Replicated loop state besides the agent's: the acting/env RNG key and the version of
    the params (updates applied), which every trajectory step carries."""

    key: Any
    version: Any  # int32 scalar


class CallOutputs(NamedTuple):
    """What one compiled call returns to the host (replicated)."""

    metrics: Any  # the agent's metrics and ``update_skipped``, each [K]
    env_steps: Any  # [K] int32: valid transitions of each update's trajectory
    episodes: Any  # int32: episodes that finished during the call
    recent_returns: Any  # [EPISODE_WINDOW] float32 ring: returns of the last episodes of the call
    recent_lengths: Any  # [EPISODE_WINDOW] int32


def _where(condition, old, new):
    """``old`` where ``condition`` ([B]) holds, else ``new``; any trailing shape."""
    condition = condition.reshape(condition.shape + (1,) * (jnp.ndim(new) - 1))
    return jnp.where(condition, old, new).astype(jnp.asarray(new).dtype)


def make_reset(env: jax_envs.JaxEnv, num_envs: int, fns: AgentFns | None = None,
               spec=None) -> Callable[[Any], EnvBatch]:
    """``key -> EnvBatch`` of ``num_envs`` freshly reset envs; for a recurrent agent
    (``fns`` and the env's ``spec`` given) with its initial core states and contexts."""
    def reset(key) -> EnvBatch:
        observation, state = jax.vmap(env.reset)(jax.random.split(key, num_envs))
        acting = None
        if fns is not None and recurrent.is_recurrent(fns):
            acting = (fns.initial_core_state(num_envs),
                      jax.tree.map(jnp.asarray, recurrent.initial_context(spec, num_envs)))
        return EnvBatch(state, observation, observation, jnp.zeros(num_envs, bool),
                        jnp.zeros(num_envs, jnp.float32), jnp.zeros(num_envs, jnp.int32), acting)
    return reset


def _record_episodes(ring, count, done, value):
    """Writes ``value[done]`` (env order) into the ring after ``count`` episodes; only the
    last ``len(ring)`` of them, so no two writes land on the same slot."""
    window = ring.shape[0]
    position = count + jnp.cumsum(done) - 1
    total = count + done.sum()
    slot = jnp.where(done & (position >= total - window), position % window, window)
    return ring.at[slot].set(value.astype(ring.dtype), mode="drop")


def make_loop(fns: AgentFns, env: jax_envs.JaxEnv, unroll_length: int, updates_per_call: int):
    """Returns ``loop(state, env_batch, runner) -> (state, env_batch, runner, CallOutputs)``:
    ``updates_per_call`` times, unroll ``unroll_length`` steps and apply ``fns.update``.

    An update whose loss or gradients are not finite keeps the old state (as in Ray mode).
    """
    update = skip_nonfinite(fns.update)
    step_envs = jax.vmap(env.step)
    is_recurrent = recurrent.is_recurrent(fns)
    window = EPISODE_WINDOW

    def _env_step(carry, _):
        params, version, key, batch, episodes = carry
        acted_on = batch.observation
        key, act_key, env_key = jax.random.split(key, 3)
        if is_recurrent:
            core_state, context = batch.acting
            out, core_state = fns.actor_step(params, batch.observation, act_key, core_state, context)
        else:
            out = fns.actor_step(params, batch.observation, act_key)
        num_envs = batch.episode_ended.shape[0]
        step = step_envs(jax.random.split(env_key, num_envs), batch.state, out.action)
        autoreset = batch.episode_ended  # this step ignores its action (see the module doc)
        valid = ~autoreset
        reward = jnp.where(autoreset, 0.0, step.reward)
        terminated = valid & step.terminated
        truncated = valid & step.truncated
        done = terminated | truncated
        acting = None
        if is_recurrent:  # the next observation starts an episode after an autoreset step
            acting = (core_state, recurrent.next_context(context, out.action, reward, autoreset))
        episode_return = batch.episode_return + reward
        episode_length = batch.episode_length + valid.astype(jnp.int32)
        returns, lengths, count = episodes
        returns = _record_episodes(returns, count, done, episode_return)
        lengths = _record_episodes(lengths, count, done, episode_length)
        batch = EnvBatch(
            # On the autoreset step the env was reset already (by gymnax, a step ago).
            state=jax.tree.map(lambda old, new: _where(autoreset, old, new), batch.state, step.state),
            observation=_where(autoreset, batch.reset_observation, step.final_observation),
            reset_observation=_where(done, step.observation, batch.reset_observation),
            episode_ended=done,
            episode_return=jnp.where(done, 0.0, episode_return),
            episode_length=jnp.where(done, 0, episode_length), acting=acting)
        record = {"observation": acted_on, "action": out.action, "reward": reward,
                  "terminated": terminated, "truncated": truncated, "valid": valid,
                  "extras": dict(out.extras),
                  "policy_version": jnp.full(num_envs, version, jnp.int32)}
        return (params, version, key, batch, (returns, lengths, count + done.sum())), record

    def _update(carry, _):
        state, batch, runner, episodes = carry
        start = None if batch.acting is None else recurrent.start_of(*batch.acting)
        (_, _, key, batch, episodes), steps = jax.lax.scan(
            _env_step, (state.params, runner.version, runner.key, batch, episodes), None,
            length=unroll_length)
        observation = jnp.concatenate([steps["observation"], batch.observation[None]])
        trajectory = Trajectory(observation=observation, action=steps["action"],
                                reward=steps["reward"], terminated=steps["terminated"],
                                truncated=steps["truncated"], valid=steps["valid"],
                                extras=steps["extras"], policy_version=steps["policy_version"],
                                start=start)
        state, metrics = update(state, trajectory)
        runner = Runner(key, runner.version + 1)
        return (state, batch, runner, episodes), (metrics, steps["valid"].sum(dtype=jnp.int32))

    def loop(state, batch: EnvBatch, runner: Runner):
        episodes = (jnp.zeros(window, jnp.float32), jnp.zeros(window, jnp.int32),
                    jnp.zeros((), jnp.int32))
        (state, batch, runner, (returns, lengths, count)), (metrics, env_steps) = jax.lax.scan(
            _update, (state, batch, runner, episodes), None, length=updates_per_call)
        return state, batch, runner, CallOutputs(metrics, env_steps, count, returns, lengths)

    return loop


def finished_returns(outputs: CallOutputs) -> np.ndarray:
    """The returns of the last (at most ``EPISODE_WINDOW``) episodes of a call, oldest first."""
    count = int(outputs.episodes)
    first = max(count - EPISODE_WINDOW, 0)
    return np.asarray([outputs.recent_returns[i % EPISODE_WINDOW] for i in range(first, count)],
                      np.float32)


class Program:
    """The compiled Anakin loop and its state on the mesh.

    Args:
      fns: the agent's functions.
      env: the JAX env's functions.
      mesh: the devices (``devices.make_mesh``).
      seed: seeds the initial train state (as the Ray learner does).
      env_seed: seeds the envs' resets and the acting keys.
      num_envs: envs in the batch (trajectory columns ``B``), split over the mesh.
      unroll_length: ``T``.
      updates_per_call: updates per compiled call.
      spec: the env's spec; needed for a recurrent agent (its initial step contexts).
    """

    def __init__(self, fns: AgentFns, env: jax_envs.JaxEnv, mesh, seed: int, env_seed: int,
                 num_envs: int, unroll_length: int, updates_per_call: int, spec=None):
        self.mesh = mesh
        self.state = devices.replicate(jax.jit(fns.init)(jax.random.key(seed)), mesh)
        reset_key, run_key = jax.random.split(jax.random.key(env_seed))
        self.env_batch = devices.shard_batch(jax.jit(make_reset(env, num_envs, fns, spec))(reset_key),
                                             mesh, batch_axis=0)
        self.runner = devices.replicate(Runner(run_key, jnp.zeros((), jnp.int32)), mesh)
        self._loop = devices.anakin_loop(make_loop(fns, env, unroll_length, updates_per_call),
                                         mesh, self.state, self.env_batch, self.runner)
        self.version = 0

    def restore(self, state, version: int) -> None:
        """Takes a (host) train state read from a checkpoint saved after ``version`` updates."""
        self.state = devices.replicate(state, self.mesh)
        self.runner = devices.replicate(Runner(self.runner.key, jnp.asarray(version, jnp.int32)),
                                        self.mesh)
        self.version = version

    def run(self) -> CallOutputs:
        """Runs one compiled call (``updates_per_call`` updates); returns its outputs on the host."""
        self.state, self.env_batch, self.runner, outputs = self._loop(
            self.state, self.env_batch, self.runner)
        outputs = devices.to_host(outputs)
        self.version += len(outputs.env_steps)
        return outputs
