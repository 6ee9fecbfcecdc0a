"""Recurrent actor-critic networks: torso -> LSTM or GRU core -> policy and value heads.

As IMPALA's recurrent agent (Espeholt et al. 2018, figure 3): the torso's output, the
previous action (one-hot for discrete actions) and the previous reward (clipped to
[-1, 1]) are the core's input, and both heads read the core's output. The core resets to
its initial (zero) state where ``context.first`` marks an episode's first observation,
inside ``unroll``'s scan: acting (one step) and learning (a whole unroll) run the same
code on the same inputs, so the learner replays exactly what the actor computed.

Only the three parts (torso, core cell, heads) are written per library (Flax linen and
Haiku); the unroll around them is plain JAX. Params are ``{"torso", "core", "heads"}``.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from rltpu import recurrent, spaces
from rltpu.agents import torsos
from rltpu.agents.config import CORES
from rltpu.agents.networks import ACTIVATION_FNS, _check_lib, _flatten, _head
from rltpu.networks import as_network
from rltpu.types import EnvSpec, StepContext


class RecurrentActorCriticNetworks(NamedTuple):
    """Pure functions of one params pytree.

    Attributes:
      init: ``key -> params``.
      initial_state: ``num_envs -> core state`` (zeros, ``[num_envs, core_size]`` leaves).
      unroll: ``(params, observation [T, B, ...], core_state [B, ...], context [T, B, ...])
        -> ((policy outputs [T, B, ...], values [T, B]), core state after the last step)``.
      step: the same for one step: observation and context ``[B, ...]``.
    """

    init: Callable[[Any], Any]
    initial_state: Callable[[int], Any]
    unroll: Callable
    step: Callable


def _core_inputs(hidden, context: StepContext, num_actions: int, discrete: bool):
    """The core's input: the torso's output, the previous action and the clipped previous
    reward; both are zero at an episode's first step (the autoreset step before it took
    no action of this episode)."""
    keep = jnp.logical_not(context.first)[..., None].astype(jnp.float32)
    if discrete:
        action = jax.nn.one_hot(context.prev_action, num_actions)
    else:
        action = context.prev_action.astype(jnp.float32).reshape(*context.first.shape, -1)
    reward = jnp.clip(context.prev_reward, -1.0, 1.0)[..., None]
    return jnp.concatenate([hidden, action * keep, reward * keep], axis=-1)


class FlaxTorso(nn.Module):
    torso: str
    hidden_sizes: Sequence[int]
    obs_ndim: int | tuple[int, ...]  # per leaf of the observation (rltpu.spaces.leaf_ndims)
    activation: str = "tanh"

    @nn.compact
    def __call__(self, observation):
        if self.torso != "mlp":
            return torsos.FLAX_TORSOS[self.torso]()(observation)
        x = _flatten(observation, self.obs_ndim)
        for width in self.hidden_sizes:
            x = ACTIVATION_FNS[self.activation](nn.Dense(width)(x))
        return x


def haiku_torso(torso: str, hidden_sizes: Sequence[int], obs_ndim: int | tuple[int, ...],
                activation: str = "tanh"):
    def forward(observation):
        import haiku as hk
        if torso != "mlp":
            return torsos.HAIKU_TORSOS[torso](observation)
        x = _flatten(observation, obs_ndim)
        for width in hidden_sizes:
            x = ACTIVATION_FNS[activation](hk.Linear(width)(x))
        return x
    return forward


class FlaxCell(nn.Module):
    """One step of the core: ``(input [B, D], state) -> (output [B, size], state)``."""

    kind: str
    size: int

    @nn.compact
    def __call__(self, inputs):
        x, state = inputs
        if self.kind == "lstm":
            (c, h), out = nn.OptimizedLSTMCell(self.size)((state["c"], state["h"]), x)
            return out, {"c": c, "h": h}
        h, out = nn.GRUCell(self.size)(state["h"], x)
        return out, {"h": h}


def haiku_cell(kind: str, size: int):
    def forward(inputs):
        import haiku as hk
        x, state = inputs
        if kind == "lstm":
            out, new = hk.LSTM(size)(x, hk.LSTMState(hidden=state["h"], cell=state["c"]))
            return out, {"c": new.cell, "h": new.hidden}
        out, h = hk.GRU(size)(x, state["h"])
        return out, {"h": h}
    return forward


class FlaxHeads(nn.Module):
    output_size: int
    gaussian: bool

    @nn.compact
    def __call__(self, hidden):
        last_init = nn.initializers.variance_scaling(0.01 ** 2, "fan_in", "normal")
        out = nn.Dense(self.output_size, kernel_init=last_init)(hidden)
        log_std = (self.param("log_std", nn.initializers.zeros, (self.output_size,))
                   if self.gaussian else None)
        return _head(out, self.gaussian, log_std), nn.Dense(1)(hidden)[..., 0]


def haiku_heads(output_size: int, gaussian: bool):
    def forward(hidden):
        import haiku as hk
        last_init = hk.initializers.VarianceScaling(0.01 ** 2, "fan_in", "truncated_normal")
        out = hk.Linear(output_size, w_init=last_init)(hidden)
        log_std = hk.get_parameter("log_std", (output_size,), init=jnp.zeros) if gaussian else None
        return _head(out, gaussian, log_std), hk.Linear(1)(hidden)[..., 0]
    return forward


class FlaxQHead(nn.Module):
    num_actions: int

    @nn.compact
    def __call__(self, hidden):
        return nn.Dense(self.num_actions)(hidden)


def haiku_q_head(num_actions: int):
    def forward(hidden):
        import haiku as hk
        return hk.Linear(num_actions)(hidden)
    return forward


def recurrent_actor_critic(spec: EnvSpec, hidden_sizes: Sequence[int], lib: str, torso: str,
                           core: str, core_size: int,
                           activation: str = "tanh") -> RecurrentActorCriticNetworks:
    """The recurrent policy and value network for ``spec`` (see the module docstring):
    ``unroll`` and ``step`` return ``(policy outputs, values)``."""
    gaussian = not spec.discrete
    heads = (FlaxHeads(spec.num_actions, gaussian) if lib == "flax"
             else haiku_heads(spec.num_actions, gaussian))
    return _recurrent_network(spec, hidden_sizes, lib, torso, core, core_size, heads, activation)


def recurrent_q_network(spec: EnvSpec, hidden_sizes: Sequence[int], lib: str, torso: str,
                        core: str, core_size: int,
                        activation: str = "tanh") -> RecurrentActorCriticNetworks:
    """The same torso and core with one linear Q-value per action on top (R2D2):
    ``unroll`` and ``step`` return Q-values ``[..., A]``."""
    heads = (FlaxQHead(spec.num_actions) if lib == "flax" else haiku_q_head(spec.num_actions))
    return _recurrent_network(spec, hidden_sizes, lib, torso, core, core_size, heads, activation)


def _recurrent_network(spec, hidden_sizes, lib, torso, core, core_size, heads_module,
                       activation="tanh"):
    torsos.check_torso(torso, spec.observation_space)
    _check_lib(lib)
    if core not in CORES[1:]:
        raise ValueError(f"--core {core!r} is not one of {', '.join(CORES[1:])}")
    obs_ndim = spaces.leaf_ndims(spec.observation_space)
    if lib == "flax":
        torso_net = as_network(FlaxTorso(torso, tuple(hidden_sizes), obs_ndim, activation))
        cell = as_network(FlaxCell(core, core_size))
    else:
        torso_net = as_network(haiku_torso(torso, tuple(hidden_sizes), obs_ndim, activation))
        cell = as_network(haiku_cell(core, core_size))
    heads = as_network(heads_module)
    state_keys = ("c", "h") if core == "lstm" else ("h",)

    def initial_state(num_envs: int):
        return {k: jnp.zeros((num_envs, core_size), jnp.float32) for k in state_keys}

    def embed(params, observation, context):
        hidden = torso_net.apply(params["torso"], observation)
        return _core_inputs(hidden, context, spec.num_actions, spec.discrete)

    def unroll(params, observation, core_state, context: StepContext):
        inputs = embed(params, observation, context)  # the torso sees all T frames at once
        initial = initial_state(context.first.shape[1])

        def core_step(state, xs):
            x_t, first_t = xs
            state = recurrent.reset_where(first_t, initial, state)
            out, state = cell.apply(params["core"], (x_t, state))
            return state, out

        core_state, outputs = jax.lax.scan(core_step, core_state, (inputs, context.first))
        return heads.apply(params["heads"], outputs), core_state

    def step(params, observation, core_state, context: StepContext):
        outputs, core_state = unroll(
            params, jax.tree.map(lambda x: x[None], observation), core_state,
            jax.tree.map(lambda x: x[None], context))
        return jax.tree.map(lambda x: x[0], outputs), core_state

    def init(key):
        torso_key, core_key, heads_key = jax.random.split(key, 3)
        observation = spaces.zeros(spec.observation_space, (1,))
        context = recurrent.initial_context(spec, 1)
        torso_params = torso_net.init(torso_key, observation)
        inputs = _core_inputs(torso_net.apply(torso_params, observation), context,
                              spec.num_actions, spec.discrete)
        core_params = cell.init(core_key, (inputs, initial_state(1)))
        outputs, _ = cell.apply(core_params, (inputs, initial_state(1)))
        return {"torso": torso_params, "core": core_params,
                "heads": heads.init(heads_key, outputs)}

    return RecurrentActorCriticNetworks(init, initial_state, unroll, step)


def actor_critic_networks(spec: EnvSpec, config):
    """The actor-critic networks a ``NetworkConfig`` asks for: feed-forward
    (``ActorCriticNetworks``) with ``core="none"``, else recurrent."""
    from rltpu.agents.networks import actor_critic
    if config.core == "none":
        return actor_critic(spec, config.hidden_sizes, config.network_lib, config.torso,
                            config.activation, config.weight_init)
    return recurrent_actor_critic(spec, config.hidden_sizes, config.network_lib, config.torso,
                                  config.core, config.core_size, config.activation)


def is_recurrent(networks) -> bool:
    return isinstance(networks, RecurrentActorCriticNetworks)


def initial_core_state(networks):
    """``AgentFns.initial_core_state`` for ``networks``: None for feed-forward ones."""
    return networks.initial_state if is_recurrent(networks) else None


def trajectory_outputs(networks, params, trajectory):
    """Policy outputs and values at all ``T + 1`` observations of a trajectory, ``[T + 1, B]``:
    a recurrent network replays the unroll from ``trajectory.start``."""
    if is_recurrent(networks):
        return networks.unroll(params, trajectory.observation,
                               recurrent.start_core_state(trajectory),
                               recurrent.unroll_context(trajectory))[0]
    return networks.policy_and_value(params, trajectory.observation)
