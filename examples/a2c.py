"""A complete custom agent written only against rltpu's public API: advantage actor-critic
(A2C; Mnih et al. 2016, synchronous form) with Haiku networks.

Train it from the command line::

    PYTHONPATH=. rltpu train --agent examples.a2c:A2C --on-policy

or from Python::

    import rltpu
    from examples.a2c import A2C
    rltpu.train(A2C(), A2C.Config(), rltpu.RunConfig(on_policy=True))

An agent is a config dataclass and two methods: ``check_spec`` (can it act here?) and
``build`` (its pure functions: init, actor step, update). The runtime jits the actor step
on the actors' CPUs and the update over the learner's device mesh.
"""
from __future__ import annotations

import dataclasses

import gymnasium as gym
import haiku as hk
import jax
import jax.numpy as jnp
import optax

import rltpu


@dataclasses.dataclass(frozen=True)
class A2CConfig:
    learning_rate: float = 2e-3
    """Adam step size."""
    discount: float = 0.98
    """Per-step discount gamma."""
    entropy_cost: float = 0.01
    """Weight of the entropy bonus."""
    value_cost: float = 0.5
    """Weight of the value loss."""
    hidden_size: int = 64
    """Width of the two hidden layers of each network."""

    def __post_init__(self):
        if not self.learning_rate > 0:
            raise ValueError(f"--learning-rate must be > 0, got {self.learning_rate}")
        if not 0 <= self.discount <= 1:
            raise ValueError(f"--discount must be in [0, 1], got {self.discount}")


class A2C:
    name = "a2c"
    Config = A2CConfig

    def check_spec(self, spec: rltpu.EnvSpec) -> None:
        if not isinstance(spec.action_space, gym.spaces.Discrete):
            raise ValueError(f"agent 'a2c' needs a Discrete action space; {spec.env_id} has "
                             f"{spec.action_space}")

    def network(self, spec: rltpu.EnvSpec, config: A2CConfig) -> rltpu.networks.Network:
        """``observation [..., *obs_shape] -> (logits [..., A], value [...])`` as init/apply
        (``examples/nnx_a2c.py`` swaps in a Flax NNX module here)."""
        num_actions = spec.action_space.n

        def forward(observation):
            x = observation.reshape(*observation.shape[:-1], -1).astype(jnp.float32)
            logits = hk.nets.MLP([config.hidden_size, config.hidden_size, num_actions],
                                 activation=jnp.tanh, name="policy")(x)
            value = hk.nets.MLP([config.hidden_size, config.hidden_size, 1],
                                activation=jnp.tanh, name="value")(x)[..., 0]
            return logits, value

        return rltpu.networks.as_network(forward)  # a Haiku function -> init/apply

    def build(self, spec: rltpu.EnvSpec, config: A2CConfig, run: rltpu.RunConfig) -> rltpu.AgentFns:
        network = self.network(spec, config)
        optimizer = optax.adam(config.learning_rate)

        def init(key) -> rltpu.TrainState:
            dummy = jnp.zeros((1, *spec.observation_space.shape), spec.observation_space.dtype)
            params = network.init(key, dummy)
            return rltpu.TrainState(params, optimizer.init(params), key, jnp.zeros((), jnp.int32))

        def actor_step(params, observation, key) -> rltpu.ActorOutput:
            logits, _ = network.apply(params, observation)
            return rltpu.ActorOutput(jax.random.categorical(key, logits), {"logits": logits})

        def loss_fn(params, traj: rltpu.Trajectory):
            logits, values = network.apply(params, traj.observation)  # [T+1, B, A], [T+1, B]
            return a2c_loss(config, logits, values, traj)

        def update(state: rltpu.TrainState, traj: rltpu.Trajectory):
            grads, metrics = jax.grad(loss_fn, has_aux=True)(state.params, traj)
            updates, opt_state = optimizer.update(grads, state.opt_state)
            return rltpu.TrainState(optax.apply_updates(state.params, updates), opt_state,
                                    state.key, state.step + 1), metrics

        return rltpu.AgentFns(init=init, actor_step=actor_step, update=update)


def a2c_loss(config: A2CConfig, logits, values, traj: rltpu.Trajectory):
    """A2C's loss from the policy's ``logits`` ``[T + 1, B, A]`` and the ``values``
    ``[T + 1, B]`` at every observation of ``traj``; ``(loss, metrics)``."""
    discount_t = config.discount * (1.0 - traj.terminated)
    # where step t+1 is an autoreset step, step t bootstraps from V(x_{t+1})
    returns = jax.vmap(_returns, in_axes=1, out_axes=1)(
        traj.reward, discount_t, traj.valid, jax.lax.stop_gradient(values))
    valid = traj.valid.astype(jnp.float32)
    advantage = jax.lax.stop_gradient(returns - values[:-1])
    log_p = jax.nn.log_softmax(logits[:-1])
    log_pi = jnp.take_along_axis(log_p, traj.action[..., None], axis=-1)[..., 0]
    entropy = -jnp.sum(jnp.exp(log_p) * log_p, axis=-1)
    pg_loss = -jnp.mean(log_pi * advantage * valid)
    value_loss = 0.5 * jnp.mean(jnp.square(returns - values[:-1]) * valid)
    loss = pg_loss + config.value_cost * value_loss - config.entropy_cost * jnp.mean(entropy * valid)
    return loss, {"loss": loss, "pg_loss": pg_loss, "value_loss": value_loss}


def _returns(r_t, discount_t, valid_t, values):
    """n-step returns of one trajectory; ``values`` is ``[T + 1]``."""
    def backward(next_return, xs):
        r, discount, valid_next, v_next = xs
        # if the next step is an autoreset step, this step's successor is the episode's
        # last observation: bootstrap from its value instead of carrying the return on
        g = r + discount * jnp.where(valid_next, next_return, v_next)
        return g, g
    valid_next = jnp.append(valid_t[1:], True)
    g, returns = jax.lax.scan(backward, values[-1], (r_t, discount_t, valid_next, values[1:]),
                              reverse=True)
    return returns
