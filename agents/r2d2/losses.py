"""R2D2's targets and priorities, as pure functions of one sequence.

Kapturowski et al. 2019, "Recurrent Experience Replay in Distributed Reinforcement
Learning" (R2D2), section 2 and 3: n-step double Q-learning targets under the invertible
value rescaling h of Pohlen et al. 2018, and sequence priorities mixed from the max and the
mean absolute TD error. Time-major ``[T]``; batch with ``jax.vmap``.
"""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

RESCALE_EPSILON = 1e-3  # the paper's epsilon in h
PRIORITY_ETA = 0.9  # the paper's eta: p = eta max_i |d_i| + (1 - eta) mean_i |d_i|


def value_rescale(x, eps: float = RESCALE_EPSILON):
    """h(x) = sign(x) (sqrt(|x| + 1) - 1) + eps x."""
    return jnp.sign(x) * (jnp.sqrt(jnp.abs(x) + 1.0) - 1.0) + eps * x


def inverse_value_rescale(x, eps: float = RESCALE_EPSILON):
    """h^-1(x) = sign(x) (((sqrt(1 + 4 eps (|x| + 1 + eps)) - 1) / (2 eps))^2 - 1)."""
    root = (jnp.sqrt(1.0 + 4.0 * eps * (jnp.abs(x) + 1.0 + eps)) - 1.0) / (2.0 * eps)
    return jnp.sign(x) * (jnp.square(root) - 1.0)


def sequence_priority(abs_td_error, mask, eta: float = PRIORITY_ETA):
    """eta max |d| + (1 - eta) mean |d| over the masked steps of one sequence ``[T]``
    (0 if none is masked in)."""
    chex.assert_rank([abs_td_error, mask], 1)
    mask = mask.astype(abs_td_error.dtype)
    count = jnp.maximum(mask.sum(), 1.0)
    return eta * jnp.max(abs_td_error * mask) + (1 - eta) * jnp.sum(abs_td_error * mask) / count


def n_step_double_q_targets(q_online, q_target, r_t, terminated_t, ended_t, *, n: int,
                            discount: float, eps: float = RESCALE_EPSILON):
    """Rescaled n-step double-Q targets for each step of one sequence.

    y_t = h(sum_{k<m} gamma^k r_{t+k} + gamma^m h^-1(Q_target(x_{t+m}, argmax_a
    Q_online(x_{t+m}, a)))), with m <= n steps summed: the sum stops at the episode's end
    (a terminated last step does not bootstrap; a truncated one bootstraps from the
    episode's true last observation) and at the sequence's end.

    Args:
      q_online, q_target: ``[T + 1, A]`` (rescaled) Q-values at every observation.
      r_t: ``[T]`` rewards. terminated_t: ``[T]``. ended_t: ``[T]`` terminated or truncated.

    Returns:
      ``[T]`` targets (no gradient).
    """
    chex.assert_rank([q_online, q_target, r_t, terminated_t, ended_t], [2, 2, 1, 1, 1])
    T = r_t.shape[0]
    t = jnp.arange(T)
    n_step_return = jnp.zeros(T)
    scale = jnp.ones(T)  # gamma^m while the sum goes on, frozen once it stops
    running = jnp.ones(T, bool)
    last = t  # the last step summed
    for k in range(n):
        step = jnp.minimum(t + k, T - 1)
        summed = running & (t + k < T)
        n_step_return = n_step_return + jnp.where(summed, scale * r_t[step], 0.0)
        last = jnp.where(summed, step, last)
        scale = jnp.where(summed, scale * discount, scale)
        running = summed & ~ended_t[step]
    bootstrap_discount = jnp.where(terminated_t[last], 0.0, scale)
    best = jnp.argmax(q_online[last + 1], axis=-1)
    q_next = jnp.take_along_axis(q_target[last + 1], best[:, None], axis=-1)[:, 0]
    target = value_rescale(n_step_return + bootstrap_discount * inverse_value_rescale(q_next, eps),
                           eps)
    return jax.lax.stop_gradient(target)
