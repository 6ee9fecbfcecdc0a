"""Actor-critic networks shared by the built-in agents, in Flax (linen) and in Haiku.

``actor_critic(spec, hidden_sizes, lib, torso)`` returns a policy (logits, or a Gaussian's
``{"mean", "log_std"}`` with a state-independent ``log_std``) and a value function, so
agents are written once for both libraries and every torso. With ``torso="mlp"`` policy
and value are separate MLPs (params ``{"policy", "value"}``); with a convolutional torso
(``rltpu.agents.torsos``: ``nature``, ``impala_resnet``) both heads share one torso, as in the
IMPALA and PPO papers' Atari networks.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from rltpu.agents import torsos
from rltpu import spaces
from rltpu.agents.config import NETWORK_LIBS
from rltpu.networks import Network, as_network
from rltpu.types import EnvSpec, TrainState

class ActorCriticNetworks(NamedTuple):
    """Pure functions of one params pytree.

    Attributes:
      init: ``(key, example_observation) -> params``.
      policy: ``(params, observation [..., *obs_shape]) -> policy outputs [..., ...]``.
      value: ``(params, observation) -> values [...]``.
      policy_and_value: both, with one pass through a shared torso.
    """

    init: Callable[[Any, Any], Any]
    policy: Callable[[Any, Any], Any]
    value: Callable[[Any, Any], Any]
    policy_and_value: Callable[[Any, Any], tuple[Any, Any]]


def _flatten(observation, obs_ndim: int | tuple[int, ...]):
    # The encoder of every MLP torso: each leaf of a Dict/Tuple observation flattened and
    # concatenated (rltpu.spaces.flatten); a Box's one leaf is just flattened.
    return spaces.flatten(observation, obs_ndim)


ACTIVATION_FNS = {"tanh": jnp.tanh, "relu": jax.nn.relu}
"""The MLPs' hidden-layer nonlinearities by ``NetworkConfig.activation``."""

HIDDEN_GAIN = 2 ** 0.5
"""The orthogonal hidden layers' gain (``weight_init="orthogonal"``), as in CleanRL's and
OpenAI Baselines' PPO."""


BLINES_BIAS = 0.05
"""``weight_init="blines"`` draws every bias uniformly in [0, this), as gymnax-blines' MLPs."""


def _flax_inits(weight_init: str, output_scale: float):
    """(hidden layers' kernel init, output layer's, every layer's bias init) for
    ``NetworkConfig.weight_init``."""
    if weight_init == "orthogonal":
        return (nn.initializers.orthogonal(HIDDEN_GAIN), nn.initializers.orthogonal(output_scale),
                nn.initializers.zeros)
    if weight_init == "blines":  # the output layer as the others: output_scale not used
        return (nn.initializers.lecun_normal(), nn.initializers.lecun_normal(),
                nn.initializers.uniform(BLINES_BIAS))
    # A small last layer starts the policy near uniform. (Orthogonal weights do the same
    # and did better on Hopper-v5, docs/results.md; the default stays the libraries' own.)
    return (nn.initializers.lecun_normal(),
            nn.initializers.variance_scaling(output_scale ** 2, "fan_in", "normal"),
            nn.initializers.zeros)


def _head(out, gaussian: bool, log_std):
    if not gaussian:
        return out
    return {"mean": out, "log_std": jnp.broadcast_to(log_std, out.shape)}


class FlaxMLP(nn.Module):
    hidden_sizes: Sequence[int]
    output_size: int
    obs_ndim: int | tuple[int, ...]  # per leaf of the observation (rltpu.spaces.leaf_ndims)
    output_scale: float = 1.0
    gaussian: bool = False
    activation: str = "tanh"
    weight_init: str = "lecun"

    @nn.compact
    def __call__(self, observation):
        hidden_init, last_init, bias_init = _flax_inits(self.weight_init, self.output_scale)
        x = _flatten(observation, self.obs_ndim)
        for width in self.hidden_sizes:
            x = ACTIVATION_FNS[self.activation](
                nn.Dense(width, kernel_init=hidden_init, bias_init=bias_init)(x))
        out = nn.Dense(self.output_size, kernel_init=last_init, bias_init=bias_init)(x)
        log_std = self.param("log_std", nn.initializers.zeros, (self.output_size,)) if self.gaussian else None
        return _head(out, self.gaussian, log_std)


def haiku_mlp(hidden_sizes: Sequence[int], output_size: int, obs_ndim: int | tuple[int, ...],
              output_scale: float = 1.0, gaussian: bool = False, activation: str = "tanh",
              weight_init: str = "lecun"):
    def forward(observation):
        import haiku as hk
        bias_init = None  # haiku's own: zeros
        if weight_init == "orthogonal":
            hidden_init = hk.initializers.Orthogonal(HIDDEN_GAIN)
            last_init = hk.initializers.Orthogonal(output_scale)
        elif weight_init == "blines":  # as Flax's LeCun normal (haiku's own is narrower)
            hidden_init = last_init = hk.initializers.VarianceScaling(1.0, "fan_in", "truncated_normal")
            bias_init = hk.initializers.RandomUniform(0, BLINES_BIAS)
        else:  # haiku's own default for the hidden layers: truncated LeCun normal
            hidden_init = None
            last_init = hk.initializers.VarianceScaling(output_scale ** 2, "fan_in", "truncated_normal")
        x = _flatten(observation, obs_ndim)
        for width in hidden_sizes:
            x = ACTIVATION_FNS[activation](hk.Linear(width, w_init=hidden_init, b_init=bias_init)(x))
        out = hk.Linear(output_size, w_init=last_init, b_init=bias_init)(x)
        log_std = hk.get_parameter("log_std", (output_size,), init=jnp.zeros) if gaussian else None
        return _head(out, gaussian, log_std)
    return forward


def mlp(hidden_sizes: Sequence[int], output_size: int, obs_ndim: int | tuple[int, ...],
        lib: str, output_scale: float = 1.0, gaussian: bool = False,
        activation: str = "tanh", weight_init: str = "lecun") -> Network:
    """An MLP on the flattened observation, in ``lib`` ("flax" or "haiku"), with
    ``activation`` (tanh or relu) after each hidden layer; a Dict or Tuple observation's
    leaves are flattened and concatenated first (``obs_ndim`` per leaf,
    ``rltpu.spaces.leaf_ndims``)."""
    if lib == "flax":
        return as_network(FlaxMLP(tuple(hidden_sizes), output_size, obs_ndim, output_scale,
                                  gaussian, activation, weight_init))
    if lib == "haiku":
        return as_network(haiku_mlp(tuple(hidden_sizes), output_size, obs_ndim, output_scale,
                                    gaussian, activation, weight_init))
    raise ValueError(f"unknown network library {lib!r}; valid: {', '.join(NETWORK_LIBS)}")


class FlaxConvHeads(nn.Module):
    """A convolutional torso with a policy head and a value head on top."""

    torso: str
    output_size: int
    gaussian: bool = False

    @nn.compact
    def __call__(self, observation):
        hidden = torsos.FLAX_TORSOS[self.torso]()(observation)
        last_init = nn.initializers.variance_scaling(0.01 ** 2, "fan_in", "normal")
        out = nn.Dense(self.output_size, kernel_init=last_init)(hidden)
        log_std = self.param("log_std", nn.initializers.zeros, (self.output_size,)) if self.gaussian else None
        return _head(out, self.gaussian, log_std), nn.Dense(1)(hidden)[..., 0]


def haiku_conv_heads(torso: str, output_size: int, gaussian: bool = False):
    def forward(observation):
        import haiku as hk
        hidden = torsos.HAIKU_TORSOS[torso](observation)
        last_init = hk.initializers.VarianceScaling(0.01 ** 2, "fan_in", "truncated_normal")
        out = hk.Linear(output_size, w_init=last_init)(hidden)
        log_std = hk.get_parameter("log_std", (output_size,), init=jnp.zeros) if gaussian else None
        return _head(out, gaussian, log_std), hk.Linear(1)(hidden)[..., 0]
    return forward


def _check_lib(lib: str) -> None:
    if lib not in NETWORK_LIBS:
        raise ValueError(f"unknown network library {lib!r}; valid: {', '.join(NETWORK_LIBS)}")


def actor_critic(spec: EnvSpec, hidden_sizes: Sequence[int], lib: str,
                 torso: str = "mlp", activation: str = "tanh",
                 weight_init: str = "lecun") -> ActorCriticNetworks:
    """Policy and value networks for ``spec``'s observations and actions: separate MLPs
    (``torso="mlp"``), or two heads on one convolutional torso."""
    torsos.check_torso(torso, spec.observation_space)
    _check_lib(lib)
    if torso != "mlp":
        module = (FlaxConvHeads(torso, spec.num_actions, not spec.discrete) if lib == "flax"
                  else haiku_conv_heads(torso, spec.num_actions, not spec.discrete))
        network = as_network(module)
        return ActorCriticNetworks(
            init=network.init, policy=lambda params, obs: network.apply(params, obs)[0],
            value=lambda params, obs: network.apply(params, obs)[1],
            policy_and_value=network.apply)
    obs_ndim = spaces.leaf_ndims(spec.observation_space)
    policy_net = mlp(hidden_sizes, spec.num_actions, obs_ndim, lib, output_scale=0.01,
                     gaussian=not spec.discrete, activation=activation, weight_init=weight_init)
    value_net = mlp(hidden_sizes, 1, obs_ndim, lib, activation=activation, weight_init=weight_init)

    def init(key, example_observation):
        policy_key, value_key = jax.random.split(key)
        return {"policy": policy_net.init(policy_key, example_observation),
                "value": value_net.init(value_key, example_observation)}

    def policy(params, observation):
        return policy_net.apply(params["policy"], observation)

    def value(params, observation):
        return value_net.apply(params["value"], observation)[..., 0]

    return ActorCriticNetworks(init, policy, value,
                               lambda params, obs: (policy(params, obs), value(params, obs)))


def make_actor_critic_init(networks: ActorCriticNetworks, optimizer, spec: EnvSpec):
    """``init(key) -> TrainState`` for the actor-critic agents (feed-forward or recurrent)."""
    def init(key) -> TrainState:
        init_key, key = jax.random.split(key)
        if isinstance(networks, ActorCriticNetworks):
            params = networks.init(init_key, spaces.zeros(spec.observation_space, (1,)))
        else:  # recurrent (rltpu.agents.cores): builds its own example inputs
            params = networks.init(init_key)
        return TrainState(params, optimizer.init(params), key, jnp.zeros((), jnp.int32))
    return init


class FlaxConvQ(nn.Module):
    torso: str
    num_actions: int

    @nn.compact
    def __call__(self, observation):
        return nn.Dense(self.num_actions)(torsos.FLAX_TORSOS[self.torso]()(observation))


def q_network(spec: EnvSpec, hidden_sizes: Sequence[int], lib: str, torso: str = "mlp",
              activation: str = "tanh", dueling: bool = False,
              weight_init: str = "lecun") -> Network:
    """Observations -> one value per action: an MLP, or a convolutional torso and a linear
    layer (the Nature DQN network with ``torso="nature"``). With ``dueling`` the last layer
    has one more output, a state value ``V``, and the rest are advantages ``A``:
    ``Q = V + A - mean(A)`` (Wang et al. 2016, as Ape-X uses it), so the large value every
    action shares and the small gaps between actions are learnt by separate weights."""
    torsos.check_torso(torso, spec.observation_space)
    _check_lib(lib)
    outputs = spec.num_actions + 1 if dueling else spec.num_actions
    if torso == "mlp":
        network = mlp(hidden_sizes, outputs, spaces.leaf_ndims(spec.observation_space), lib,
                      activation=activation, weight_init=weight_init)
    elif lib == "flax":
        network = as_network(FlaxConvQ(torso, outputs))
    else:
        def forward(observation):
            import haiku as hk
            return hk.Linear(outputs)(torsos.HAIKU_TORSOS[torso](observation))
        network = as_network(forward)
    if not dueling:
        return network

    def apply(params, observation):
        return dueling_q(network.apply(params, observation))
    return Network(network.init, apply)


def dueling_q(out):
    """``[..., 1 + A]`` (a value, then A advantages) -> ``Q [..., A] = V + A - mean(A)``."""
    value, advantages = out[..., :1], out[..., 1:]
    return value + advantages - jnp.mean(advantages, axis=-1, keepdims=True)
