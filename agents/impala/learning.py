"""IMPALA's learner step: network outputs for the whole batch, the loss per trajectory
under ``vmap``, one optimizer step."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax

from rltpu.agents.cores import trajectory_outputs
from rltpu.agents.impala.config import IMPALAConfig
from rltpu.agents.impala.losses import impala_loss, impala_targets
from rltpu.agents.networks import ActorCriticNetworks
from rltpu.types import TrainState, Trajectory


def make_optimizer(config: IMPALAConfig, num_updates: int = 1) -> optax.GradientTransformation:
    """Global-norm clipping, then Adam or RMSProp; with ``config.anneal_lr`` the step size
    falls linearly to 0 over ``num_updates`` optimizer steps (as in the IMPALA paper)."""
    lr = (optax.linear_schedule(config.learning_rate, 0.0, max(num_updates, 1))
          if config.anneal_lr else config.learning_rate)
    if config.optimizer == "rmsprop":
        # Espeholt et al. 2018 (TensorFlow's RMSProp): epsilon inside the square root's
        # sum, no momentum.
        step = optax.rmsprop(lr, decay=config.rmsprop_decay, eps=config.rmsprop_epsilon,
                             eps_in_sqrt=True)
    else:
        step = optax.adam(lr)
    return optax.chain(optax.clip_by_global_norm(config.max_grad_norm), step)


def make_update_fn(networks: ActorCriticNetworks, distribution,
                   optimizer: optax.GradientTransformation, config: IMPALAConfig):
    """Returns ``update(state, trajectory) -> (state, metrics)``: ``config.num_epochs``
    gradient steps on one batch of trajectories ``[T, B]``; the metrics are the first
    step's, measured on the batch as it arrived."""
    targets = jax.vmap(functools.partial(
        impala_targets, discount=config.discount, lambda_=config.vtrace_lambda,
        clip_rho_threshold=config.clip_rho_threshold,
        clip_pg_rho_threshold=config.clip_pg_rho_threshold), in_axes=1, out_axes=1)

    def loss_fn(params, trajectory: Trajectory):
        # One pass over all T + 1 observations (a shared torso sees each frame once; a
        # recurrent core replays the unroll from its start state); the policy at the
        # bootstrap observation is not used.
        policy_out, values = trajectory_outputs(networks, params, trajectory)
        policy_out = jax.tree.map(lambda x: x[:-1], policy_out)  # [T, B, ...]; values [T + 1, B]
        reward = trajectory.reward
        if config.clip_rewards:
            reward = jnp.clip(reward, -1.0, 1.0)
        log_pi_t = distribution.log_prob(policy_out, trajectory.action)
        log_mu_t = distribution.log_prob(trajectory.extras["policy"], trajectory.action)
        vt, rho = targets(log_pi_t, log_mu_t, values, reward, trajectory.terminated,
                          trajectory.valid)
        loss, metrics = impala_loss(log_pi_t, distribution.entropy(policy_out), vt,
                                    trajectory.valid, baseline_cost=config.baseline_cost,
                                    entropy_cost=config.entropy_cost,
                                    normalize_advantages=config.normalize_advantages)
        return loss, {**metrics, "mean_rho": jnp.mean(rho)}

    def update(state: TrainState, trajectory: Trajectory):
        def gradient_step(carry, _):
            params, opt_state = carry
            grads, metrics = jax.grad(loss_fn, has_aux=True)(params, trajectory)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), {
                **metrics, "grad_norm": optax.tree.norm(grads)}

        (params, opt_state), metrics = jax.lax.scan(
            gradient_step, (state.params, state.opt_state), length=config.num_epochs)
        metrics = jax.tree.map(lambda x: x[0], metrics)
        return TrainState(params, opt_state, state.key, state.step + 1), metrics

    return update
