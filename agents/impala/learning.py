"""IMPALA's learner step: network outputs for the whole batch, the loss per trajectory
under ``vmap``, one optimizer step."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax

from agents.impala.config import IMPALAConfig
from agents.impala.losses import impala_loss
from agents.impala.networks import ActorCritic
from rltpu.types import TrainState, Trajectory


def make_optimizer(config: IMPALAConfig) -> optax.GradientTransformation:
    return optax.chain(optax.clip_by_global_norm(config.max_grad_norm),
                       optax.adam(config.learning_rate))


def make_update_fn(network: ActorCritic, optimizer: optax.GradientTransformation,
                   config: IMPALAConfig):
    """Returns ``update(state, trajectory) -> (state, metrics)``; trajectories ``[T, B]``."""
    trajectory_loss = jax.vmap(functools.partial(
        impala_loss, discount=config.discount, baseline_cost=config.baseline_cost,
        entropy_cost=config.entropy_cost, lambda_=config.vtrace_lambda,
        clip_rho_threshold=config.clip_rho_threshold,
        clip_pg_rho_threshold=config.clip_pg_rho_threshold), in_axes=1)

    def loss_fn(params, trajectory: Trajectory):
        logits, values = network.apply(params, trajectory.observation)  # [T+1, B, A], [T+1, B]
        log_probs = jax.nn.log_softmax(logits[:-1])
        log_mu = jax.nn.log_softmax(trajectory.extras["logits"])
        action = trajectory.action[..., None]
        log_pi_t = jnp.take_along_axis(log_probs, action, axis=-1)[..., 0]
        log_mu_t = jnp.take_along_axis(log_mu, action, axis=-1)[..., 0]
        entropy_t = -jnp.sum(jnp.exp(log_probs) * log_probs, axis=-1)
        losses, metrics = trajectory_loss(log_pi_t, log_mu_t, entropy_t, values,
                                          trajectory.reward, trajectory.terminated,
                                          trajectory.valid)
        return jnp.mean(losses), jax.tree.map(jnp.mean, metrics)

    def update(state: TrainState, trajectory: Trajectory):
        grads, metrics = jax.grad(loss_fn, has_aux=True)(state.params, trajectory)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {**metrics, "grad_norm": optax.tree.norm(grads)}
        return TrainState(params, opt_state, state.key, state.step + 1), metrics

    return update
