"""GAE and the clipped PPO objective, as pure functions.

Schulman et al. 2016, "High-Dimensional Continuous Control Using Generalized Advantage
Estimation"; Schulman et al. 2017, "Proximal Policy Optimization Algorithms", eq. 7.
"""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from rltpu.agents.normalize import masked_normalize


def gae(v_tm1, v_t, r_t, discount_t, valid_t, lambda_: float):
    """Generalised advantage estimates for one trajectory of ``T`` steps.

    A_s = delta_s + gamma_s lambda A_{s+1}, delta_s = r_s + gamma_s V(x_{s+1}) - V(x_s).
    An invalid (autoreset) step has no TD error and cuts the trace, so the step before it
    bootstraps from V(x_{s+1}) alone.

    Args:
      v_tm1: V(x_s), ``[T]``. v_t: V(x_{s+1}), ``[T]``. r_t: rewards, ``[T]``.
      discount_t: gamma, 0 where the episode terminated, ``[T]``.
      valid_t: False on autoreset steps, ``[T]``.

    Returns:
      Advantages ``[T]`` (0 on invalid steps); value targets are ``advantages + v_tm1``.
    """
    chex.assert_rank([v_tm1, v_t, r_t, discount_t, valid_t], 1)
    valid_t = valid_t.astype(v_tm1.dtype)
    discount_t = discount_t * valid_t
    delta = (r_t + discount_t * v_t - v_tm1) * valid_t

    def backward(acc, xs):
        d, discount = xs
        acc = d + discount * lambda_ * acc
        return acc, acc

    _, advantages = jax.lax.scan(backward, jnp.zeros_like(v_tm1[0]), (delta, discount_t),
                                 reverse=True)
    return jax.lax.stop_gradient(advantages)


def ppo_loss(log_pi, log_mu, entropy, value, old_value, advantage, value_target, valid, *,
             clip_epsilon: float, value_clip_epsilon: float | None, value_cost: float,
             entropy_cost: float, normalize_advantages: bool):
    """The clipped surrogate, value and entropy losses over a minibatch of samples ``[N]``.

    Args:
      log_pi: log pi(a|x) under the params being optimised. log_mu: under the policy that
        acted. entropy: of pi(.|x). value: V(x) being optimised; old_value: V(x) before this
        update. advantage, value_target: from GAE with the old values. valid: sample mask.

    Returns:
      ``(loss, metrics)``; means over the minibatch, invalid samples counting as 0.
    """
    chex.assert_rank([log_pi, log_mu, entropy, value, old_value, advantage, value_target, valid], 1)
    valid = valid.astype(jnp.float32)
    if normalize_advantages:
        advantage = masked_normalize(advantage, valid)
    ratio = jnp.exp(log_pi - log_mu)
    surrogate = jnp.minimum(ratio * advantage,
                            jnp.clip(ratio, 1 - clip_epsilon, 1 + clip_epsilon) * advantage)
    pg_loss = -jnp.mean(surrogate * valid)
    value_error = jnp.square(value - value_target)
    if value_clip_epsilon is not None:
        clipped = old_value + jnp.clip(value - old_value, -value_clip_epsilon, value_clip_epsilon)
        value_error = jnp.maximum(value_error, jnp.square(clipped - value_target))
    value_loss = 0.5 * jnp.mean(value_error * valid)
    entropy_loss = -jnp.mean(entropy * valid)
    loss = pg_loss + value_cost * value_loss + entropy_cost * entropy_loss
    clip_fraction = jnp.mean((jnp.abs(ratio - 1) > clip_epsilon) * valid)
    return loss, {"loss": loss, "pg_loss": pg_loss, "value_loss": value_loss,
                  "entropy": -entropy_loss, "clip_fraction": clip_fraction}
