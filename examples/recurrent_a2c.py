"""A recurrent custom agent written only against rltpu's public API: A2C (as
``examples/a2c.py``) with a GRU core in Haiku, for partially observed tasks.

Train it on CartPole without velocities (a memory task: the policy must infer them)::

    rltpu train --agent examples.recurrent_a2c:RecurrentA2C --on-policy --env CartPoleNoVel-v1

What makes an agent recurrent (``rltpu.recurrent``):

* ``AgentFns.initial_core_state(num_envs)`` returns the core state of fresh envs;
* ``actor_step(params, observation, key, core_state, context)`` returns the action and the
  next core state. ``context.first`` marks an episode's first observation: reset the core
  there (the runtime keeps each env's state across steps and unrolls; it never resets it);
* the update replays each trajectory from ``trajectory.start`` with the contexts
  ``rltpu.recurrent.unroll_context`` rebuilds, so it recomputes exactly what the actor did.
"""
from __future__ import annotations


import gymnasium as gym
import haiku as hk
import jax
import jax.numpy as jnp
import optax

import rltpu
from rltpu import recurrent
from examples.a2c import A2CConfig, a2c_loss


class RecurrentA2C:
    name = "recurrent-a2c"
    Config = A2CConfig  # A2C's hyperparameters; hidden_size is also the GRU state's width

    def check_spec(self, spec: rltpu.EnvSpec) -> None:
        if not isinstance(spec.action_space, gym.spaces.Discrete):
            raise ValueError(f"agent 'recurrent-a2c' needs a Discrete action space; "
                             f"{spec.env_id} has {spec.action_space}")

    def build(self, spec: rltpu.EnvSpec, config: A2CConfig,
              run: rltpu.RunConfig) -> rltpu.AgentFns:
        num_actions, size = spec.action_space.n, config.hidden_size

        def forward(inputs):
            """Observations and contexts [T, B, ...] from the core state [B, size]:
            logits [T, B, A], values [T, B] and the state after the last step."""
            observation, first, core_state = inputs
            x = observation.reshape(*observation.shape[:2], -1).astype(jnp.float32)
            x = jax.nn.relu(hk.Linear(size)(x))
            gru = hk.GRU(size)

            def step(state, xs):
                x_t, first_t = xs
                state = jnp.where(first_t[:, None], 0.0, state)  # a new episode: forget
                out, state = gru(x_t, state)
                return state, out

            # hk.scan: a lax.scan that may hold Haiku modules.
            core_state, hidden = hk.scan(step, core_state, (x, first))
            return hk.Linear(num_actions)(hidden), hk.Linear(1)(hidden)[..., 0], core_state

        network = rltpu.networks.as_network(forward)
        optimizer = optax.adam(config.learning_rate)

        def initial_core_state(num_envs):
            return jnp.zeros((num_envs, size), jnp.float32)

        def init(key) -> rltpu.TrainState:
            dummy = jnp.zeros((1, 1, *spec.observation_space.shape), spec.observation_space.dtype)
            params = network.init(key, (dummy, jnp.ones((1, 1), bool), initial_core_state(1)))
            return rltpu.TrainState(params, optimizer.init(params), key, jnp.zeros((), jnp.int32))

        def actor_step(params, observation, key, core_state, context):
            logits, _, core_state = network.apply(
                params, (observation[None], context.first[None], core_state))
            logits = logits[0]
            return rltpu.ActorOutput(jax.random.categorical(key, logits), {"logits": logits}), core_state

        def loss_fn(params, traj: rltpu.Trajectory):
            context = recurrent.unroll_context(traj)  # [T + 1, B]: episode starts included
            logits, values, _ = network.apply(
                params, (traj.observation, context.first, recurrent.start_core_state(traj)))
            return a2c_loss(config, logits, values, traj)

        def update(state: rltpu.TrainState, traj: rltpu.Trajectory):
            grads, metrics = jax.grad(loss_fn, has_aux=True)(state.params, traj)
            updates, opt_state = optimizer.update(grads, state.opt_state)
            return rltpu.TrainState(optax.apply_updates(state.params, updates), opt_state,
                                    state.key, state.step + 1), metrics

        return rltpu.AgentFns(init=init, actor_step=actor_step, update=update,
                              initial_core_state=initial_core_state)
