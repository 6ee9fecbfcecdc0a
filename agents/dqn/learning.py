"""DQN's learner step on a batch of replayed transitions: double-Q n-step targets, weighted
Huber loss, new priorities, and a periodic target-network copy."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from rltpu.agents.dqn.config import DQNConfig
from rltpu.agents.dqn.losses import double_q_target, dqn_loss
from rltpu.networks import Network
from rltpu.types import TrainState


def make_optimizer(config: DQNConfig) -> optax.GradientTransformation:
    return optax.chain(optax.clip_by_global_norm(config.max_grad_norm),
                       optax.adam(config.learning_rate, eps=config.adam_epsilon))


def make_update_fn(network: Network, optimizer: optax.GradientTransformation, config: DQNConfig):
    """Returns ``update(state, batch) -> (state, metrics)``; ``batch`` is a replay sample
    ``{"transitions": {...}, "weights": [N]}``; ``metrics["priorities"]`` is ``[N]``."""

    def loss_fn(online, target_params, batch):
        t = batch["transitions"]
        q = network.apply(online, t["observation"])
        q_taken = jnp.take_along_axis(q, t["action"][:, None].astype(jnp.int32), axis=-1)[:, 0]
        target = double_q_target(t["n_step_return"], t["bootstrap_discount"],
                                 network.apply(online, t["next_observation"]),
                                 network.apply(target_params, t["next_observation"]))
        loss, td_error = dqn_loss(q_taken, target, batch["weights"], config.huber_delta)
        return loss, (td_error, jnp.mean(q_taken))

    def update(state: TrainState, batch):
        params = state.params
        (loss, (td_error, mean_q)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            params["online"], params["target"], batch)
        updates, opt_state = optimizer.update(grads, state.opt_state, params["online"])
        online = optax.apply_updates(params["online"], updates)
        step = state.step + 1
        copy = step % config.target_update_period == 0
        target = jax.tree.map(lambda o, t: jnp.where(copy, o, t), online, params["target"])
        metrics = {"loss": loss, "mean_abs_td_error": jnp.mean(jnp.abs(td_error)), "mean_q": mean_q, "grad_norm": optax.tree.norm(grads),
                   "priorities": jnp.abs(td_error) + 1e-6}
        return TrainState({"online": online, "target": target}, opt_state, state.key, step), metrics

    return update
