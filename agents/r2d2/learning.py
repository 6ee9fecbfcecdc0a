"""R2D2's learner step on a batch of replayed sequences: burn-in from the stored start
state, rescaled n-step double-Q targets, squared TD loss weighted by importance, new
sequence priorities, a periodic target-network copy."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax

from rltpu import recurrent
from rltpu.agents.r2d2.config import R2D2Config
from rltpu.agents.r2d2.losses import n_step_double_q_targets, sequence_priority
from rltpu.types import RecurrentStart, TrainState, Trajectory


def make_optimizer(config: R2D2Config) -> optax.GradientTransformation:
    return optax.chain(optax.clip_by_global_norm(config.max_grad_norm),
                       optax.adam(config.learning_rate, eps=config.adam_epsilon))


def _time_major(sequences) -> Trajectory:
    """Replayed sequences (``[N, T, ...]``, start ``[N, ...]``) as a ``[T, N]`` trajectory."""
    swap = lambda x: jnp.swapaxes(x, 0, 1)
    return Trajectory(observation=jax.tree.map(swap, sequences["observation"]),
                      action=swap(sequences["action"]),
                      reward=swap(sequences["reward"]), terminated=swap(sequences["terminated"]),
                      truncated=swap(sequences["truncated"]), valid=swap(sequences["valid"]),
                      extras={}, policy_version=None,
                      start=jax.tree.map(lambda x: x[None], RecurrentStart(*sequences["start"])))


def make_update_fn(network, optimizer: optax.GradientTransformation, config: R2D2Config):
    """Returns ``update(state, batch) -> (state, metrics)``; ``batch`` is a replay sample
    ``{"transitions": sequences [N, ...], "weights": [N]}``; ``metrics["priorities"]`` is
    ``[N]``: eta max |TD| + (1 - eta) mean |TD| over each sequence's learned steps."""
    b = config.burn_in
    targets = jax.vmap(functools.partial(n_step_double_q_targets, n=config.n_step,
                                         discount=config.discount), in_axes=1, out_axes=1)

    def loss_fn(online, target_params, trajectory: Trajectory, weights):
        context = recurrent.unroll_context(trajectory)  # [T + 1, N]
        core_state = recurrent.start_core_state(trajectory)
        observation = trajectory.observation
        at = lambda start, stop: jax.tree.map(lambda x: x[start:stop], context)
        observed = lambda start, stop: jax.tree.map(lambda x: x[start:stop], observation)
        # The target network replays the whole sequence from the stored state.
        q_target, _ = network.unroll(target_params, observation, core_state, context)
        online_state = core_state
        if b:  # burn-in: warm the online core up without gradient (Kapturowski et al. 3.)
            _, online_state = network.unroll(jax.lax.stop_gradient(online), observed(0, b),
                                             core_state, at(0, b))
            online_state = jax.lax.stop_gradient(online_state)
        q_online, _ = network.unroll(online, observed(b, None), online_state, at(b, None))
        action = trajectory.action[b:]
        q_taken = jnp.take_along_axis(q_online[:-1], action[..., None].astype(jnp.int32),
                                      axis=-1)[..., 0]  # [T - b, N]
        ended = trajectory.terminated | trajectory.truncated
        y = targets(jax.lax.stop_gradient(q_online), q_target[b:], trajectory.reward[b:],
                    trajectory.terminated[b:], ended[b:])
        td_error = y - q_taken
        mask = trajectory.valid[b:]
        # A mean over the fixed T - b steps (not the valid ones), so the batch loss is a
        # plain mean and the data-parallel gradient equals the single-device one.
        per_sequence = jnp.mean(0.5 * jnp.square(td_error) * mask, axis=0)  # [N]
        loss = jnp.mean(weights * per_sequence)
        priorities = jax.vmap(sequence_priority, in_axes=1)(jnp.abs(td_error), mask)
        return loss, (priorities, jnp.sum(q_taken * mask) / jnp.maximum(mask.sum(), 1))

    def update(state: TrainState, batch):
        params = state.params
        trajectory = _time_major(batch["transitions"])
        (loss, (priorities, mean_q)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            params["online"], params["target"], trajectory, batch["weights"])
        updates, opt_state = optimizer.update(grads, state.opt_state, params["online"])
        online = optax.apply_updates(params["online"], updates)
        step = state.step + 1
        copy = step % config.target_update_period == 0
        target = jax.tree.map(lambda o, t: jnp.where(copy, o, t), online, params["target"])
        metrics = {"loss": loss, "mean_q": mean_q, "grad_norm": optax.tree.norm(grads),
                   "mean_priority": jnp.mean(priorities), "priorities": priorities + 1e-6}
        return TrainState({"online": online, "target": target}, opt_state, state.key, step), metrics

    return update
