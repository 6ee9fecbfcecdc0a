"""PPO's learner step: GAE with the current values, then epochs of shuffled minibatches,
all inside one jitted update (``lax.scan`` over epochs and minibatches). A recurrent
agent's minibatches are whole sequences: they split the env axis B, never time."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax

from rltpu import recurrent as rltpu_recurrent
from rltpu.agents import cores
from rltpu.agents.networks import ActorCriticNetworks
from rltpu.agents.ppo.config import PPOConfig
from rltpu.agents.ppo.losses import gae, ppo_loss
from rltpu.types import TrainState, Trajectory


def make_optimizer(config: PPOConfig, num_updates: int) -> optax.GradientTransformation:
    """Adam with global-norm clipping; the step size falls linearly to 0 over
    ``num_updates`` learner updates when ``config.anneal_lr``."""
    steps = num_updates * config.num_epochs * config.num_minibatches
    lr = (optax.linear_schedule(config.learning_rate, 0.0, max(steps, 1))
          if config.anneal_lr else config.learning_rate)
    return optax.chain(optax.clip_by_global_norm(config.max_grad_norm),
                       optax.adam(lr, eps=config.adam_epsilon))


def make_update_fn(networks: ActorCriticNetworks, distribution,
                   optimizer: optax.GradientTransformation, config: PPOConfig):
    """Returns ``update(state, trajectory) -> (state, metrics)``; trajectories ``[T, B]``."""
    trajectory_gae = jax.vmap(functools.partial(gae, lambda_=config.gae_lambda), in_axes=1, out_axes=1)
    minibatch_loss = functools.partial(
        ppo_loss, clip_epsilon=config.clip_epsilon, value_clip_epsilon=config.value_clip_epsilon,
        value_cost=config.value_cost, entropy_cost=config.entropy_cost,
        normalize_advantages=config.normalize_advantages)

    recurrent = cores.is_recurrent(networks)

    def loss_fn(params, samples):
        if recurrent:  # whole sequences [T, b]: replay each from its start state
            (policy_out, value), _ = networks.unroll(
                params, samples["observation"], jax.tree.map(lambda x: x[0], samples["core_state"]),
                samples["context"])
            samples = {k: v for k, v in samples.items() if k not in ("core_state", "context")}
            flat = lambda x: x.reshape(-1, *x.shape[2:])
            policy_out, value, samples = jax.tree.map(flat, (policy_out, value, samples))
        else:
            policy_out, value = networks.policy_and_value(params, samples["observation"])
        return minibatch_loss(
            distribution.log_prob(policy_out, samples["action"]), samples["log_mu"],
            distribution.entropy(policy_out), value, samples["old_value"],
            samples["advantage"], samples["value_target"], samples["valid"])

    def _update_minibatch(carry, minibatch):
        params, opt_state = carry
        grads, metrics = jax.grad(loss_fn, has_aux=True)(params, minibatch)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        metrics = {**metrics, "grad_norm": optax.tree.norm(grads)}
        return (optax.apply_updates(params, updates), opt_state), metrics

    def _shuffle(samples, key):
        """Minibatches ``[num_minibatches, ...]`` of a random permutation of the samples
        (``[N, ...]``); a recurrent agent's samples are whole sequences (``[T, B, ...]``,
        the start state ``[1, B, ...]``), so it permutes and splits B and never T."""
        m = config.num_minibatches
        if not recurrent:
            n = samples["valid"].shape[0]
            permutation = jax.random.permutation(key, n)
            return jax.tree.map(lambda x: x[permutation].reshape(m, n // m, *x.shape[1:]),
                                samples)
        b = samples["valid"].shape[1]
        permutation = jax.random.permutation(key, b)
        return jax.tree.map(
            lambda x: jnp.moveaxis(x[:, permutation].reshape(x.shape[0], m, b // m, *x.shape[2:]),
                                   1, 0), samples)

    def _update_epoch(carry, key):
        samples = carry[2]
        if config.num_minibatches == 1:  # the loss is a mean: the order of samples is moot
            minibatches = jax.tree.map(lambda x: x[None], samples)
        else:
            minibatches = _shuffle(samples, key)
        (params, opt_state), metrics = jax.lax.scan(_update_minibatch, carry[:2], minibatches)
        return (params, opt_state, samples), metrics

    def update(state: TrainState, trajectory: Trajectory):
        observation = trajectory.observation  # [T + 1, B, ...]
        values = cores.trajectory_outputs(networks, state.params, trajectory)[1]  # [T + 1, B]
        discount_t = config.discount * (1.0 - trajectory.terminated.astype(jnp.float32))
        reward = trajectory.reward
        if config.clip_rewards:
            reward = jnp.clip(reward, -1.0, 1.0)
        advantage = trajectory_gae(values[:-1], values[1:], reward, discount_t, trajectory.valid)
        samples = {
            "observation": jax.tree.map(lambda x: x[:-1], observation), "action": trajectory.action,
            "log_mu": distribution.log_prob(trajectory.extras["policy"], trajectory.action),
            "old_value": values[:-1], "advantage": advantage,
            "value_target": advantage + values[:-1], "valid": trajectory.valid,
        }  # [T, B, ...]
        if recurrent:  # sequences stay whole: the loss replays them from their start states
            samples["core_state"] = trajectory.start.core_state  # [1, B, ...]
            samples["context"] = jax.tree.map(lambda x: x[:-1],
                                              rltpu_recurrent.unroll_context(trajectory))
        else:  # [T, B, ...] -> [T * B, ...]
            samples = jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), samples)
        key, epoch_key = jax.random.split(state.key)
        (params, opt_state, _), metrics = jax.lax.scan(
            _update_epoch, (state.params, state.opt_state, samples),
            jax.random.split(epoch_key, config.num_epochs))
        metrics = jax.tree.map(jnp.mean, metrics)
        return TrainState(params, opt_state, key, state.step + 1), metrics

    return update
