"""Double DQN with n-step returns and prioritised-replay weights (pure functions).

van Hasselt et al. 2016, "Deep Reinforcement Learning with Double Q-learning"; Horgan et al.
2018, "Distributed Prioritized Experience Replay" (Ape-X).
"""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp


def double_q_target(n_step_return, bootstrap_discount, q_next_online, q_next_target):
    """y = R + gamma^k Q_target(x', argmax_a Q_online(x', a)), for a batch ``[N]``.

    Args:
      n_step_return, bootstrap_discount: ``[N]``. q_next_online, q_next_target: ``[N, A]``.
    """
    chex.assert_rank([n_step_return, bootstrap_discount, q_next_online, q_next_target], [1, 1, 2, 2])
    best = jnp.argmax(q_next_online, axis=-1)
    q_next = jnp.take_along_axis(q_next_target, best[:, None], axis=-1)[:, 0]
    return jax.lax.stop_gradient(n_step_return + bootstrap_discount * q_next)


def huber(x, delta: float):
    abs_x = jnp.abs(x)
    quadratic = jnp.minimum(abs_x, delta)
    return 0.5 * quadratic ** 2 + delta * (abs_x - quadratic)


def dqn_loss(q_taken, target, weights, huber_delta: float):
    """Importance-weighted Huber loss on TD errors; returns ``(loss, td_error [N])``."""
    chex.assert_rank([q_taken, target, weights], 1)
    td_error = target - q_taken
    return jnp.mean(weights * huber(td_error, huber_delta)), td_error
