"""V-trace and the IMPALA loss, as pure functions of one trajectory.

Espeholt et al. 2018, "IMPALA: Scalable Distributed Deep-RL with Importance Weighted
Actor-Learner Architectures", section 4. Arrays are time-major ``[T]``; batch them with
``jax.vmap``. Names follow rlax: ``v_tm1`` is V(x_s), ``v_t`` is V(x_{s+1}).
"""
from __future__ import annotations

from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp

from rltpu.agents.normalize import masked_normalize


class VTraceOutput(NamedTuple):
    errors: jax.Array  # v_s - V(x_s): value-target errors, [T]
    pg_advantage: jax.Array  # rho_s (r_s + gamma_s q_{s+1} - V(x_s)), [T]
    q_estimate: jax.Array  # r_s + gamma_s q_{s+1}, [T]


def vtrace(v_tm1, v_t, r_t, discount_t, rho_tm1, lambda_: float = 1.0,
           clip_rho_threshold: float = 1.0, clip_pg_rho_threshold: float = 1.0) -> VTraceOutput:
    """V-trace targets and policy-gradient advantages for one trajectory.

    v_s = V(x_s) + sum_{t>=s} gamma^{t-s} (prod_{i<t} c_i) delta_t, with
    delta_t = rho_t (r_t + gamma_t V(x_{t+1}) - V(x_t)), rho_t = min(rho_bar, pi/mu),
    c_t = lambda min(1, pi/mu); computed backwards with a scan. Targets carry no gradient.

    Args:
      v_tm1: values V(x_s), ``[T]``.
      v_t: values V(x_{s+1}), ``[T]``; ``v_t[-1]`` is the bootstrap value.
      r_t: rewards, ``[T]``.
      discount_t: gamma times 0 where the episode terminated, ``[T]``.
      rho_tm1: importance ratios pi(a_s|x_s) / mu(a_s|x_s), ``[T]``.
    """
    chex.assert_rank([v_tm1, v_t, r_t, discount_t, rho_tm1], 1)
    chex.assert_equal_shape([v_tm1, v_t, r_t, discount_t, rho_tm1])
    c_tm1 = lambda_ * jnp.minimum(1.0, rho_tm1)
    clipped_rho_tm1 = jnp.minimum(clip_rho_threshold, rho_tm1)
    td_error = clipped_rho_tm1 * (r_t + discount_t * v_t - v_tm1)

    def backward(acc, xs):
        td, discount, c = xs
        acc = td + discount * c * acc
        return acc, acc

    _, errors = jax.lax.scan(backward, jnp.zeros_like(v_tm1[0]), (td_error, discount_t, c_tm1),
                             reverse=True)
    targets_tm1 = jax.lax.stop_gradient(errors + v_tm1)
    q_bootstrap = jnp.concatenate([lambda_ * targets_tm1[1:] + (1 - lambda_) * v_tm1[1:], v_t[-1:]])
    q_estimate = jax.lax.stop_gradient(r_t + discount_t * q_bootstrap)
    clipped_pg_rho_tm1 = jnp.minimum(clip_pg_rho_threshold, rho_tm1)
    pg_advantage = jax.lax.stop_gradient(clipped_pg_rho_tm1 * (q_estimate - v_tm1))
    return VTraceOutput(targets_tm1 - v_tm1, pg_advantage, q_estimate)


def impala_targets(log_pi_t, log_mu_t, values, r_t, terminated_t, valid_t, *,
                   discount: float, lambda_: float, clip_rho_threshold: float,
                   clip_pg_rho_threshold: float) -> tuple[VTraceOutput, jax.Array]:
    """V-trace targets and advantages for one trajectory of ``T`` steps.

    Args:
      log_pi_t: log pi(a_s|x_s) under the learner's policy, ``[T]``.
      log_mu_t: log mu(a_s|x_s) under the behaviour policy that acted, ``[T]``.
      values: V(x_s) for s = 0..T, ``[T + 1]`` (the last one bootstraps).
      r_t, terminated_t, valid_t: rewards, terminal flags and the autoreset mask, ``[T]``.

    Returns:
      The V-trace output and the importance ratios ``rho``, ``[T]``.
    """
    chex.assert_rank([log_pi_t, log_mu_t, values, r_t, terminated_t, valid_t], 1)
    valid_t = valid_t.astype(jnp.float32)
    # An autoreset step was not chosen by any policy: weight 0 zeroes its TD error and
    # cuts the trace there, so the step before it bootstraps from V(its next observation).
    # (where, not a product: exp may overflow on a step that is masked anyway, and inf * 0
    # would be NaN.)
    rho_tm1 = jnp.where(valid_t > 0, jnp.exp(jax.lax.stop_gradient(log_pi_t - log_mu_t)), 0.0)
    discount_t = discount * (1.0 - terminated_t.astype(jnp.float32)) * valid_t
    vt = vtrace(values[:-1], values[1:], r_t, discount_t, rho_tm1, lambda_,
                clip_rho_threshold, clip_pg_rho_threshold)
    return vt, rho_tm1


def impala_loss(log_pi, entropy, vt: VTraceOutput, valid, *, baseline_cost: float,
                entropy_cost: float, normalize_advantages: bool = False):
    """IMPALA's actor-critic loss: policy gradient with V-trace advantages, baseline
    regression to the V-trace targets, entropy bonus.

    Args:
      log_pi: log pi(a_s|x_s), any shape (``[T]`` for one trajectory, ``[T, B]`` a batch).
      entropy: entropy of pi(.|x_s), same shape. vt: ``impala_targets``' output, same shape.
      valid: the autoreset mask, same shape.
      normalize_advantages: scale the policy-gradient advantages to zero mean and unit
        variance over the valid entries (not in the paper; it keeps the policy term's size
        independent of the reward scale, so the entropy cost means the same everywhere).

    Returns:
      ``(loss, metrics)``: means over all entries, invalid ones counting as 0.
    """
    valid = valid.astype(jnp.float32)
    advantage = vt.pg_advantage
    if normalize_advantages:
        advantage = masked_normalize(advantage, valid)
    pg_loss = -jnp.mean(log_pi * advantage * valid)
    baseline_loss = 0.5 * jnp.mean(jnp.square(vt.errors) * valid)
    entropy_loss = -jnp.mean(entropy * valid)
    loss = pg_loss + baseline_cost * baseline_loss + entropy_cost * entropy_loss
    return loss, {"loss": loss, "pg_loss": pg_loss, "baseline_loss": baseline_loss,
                  "entropy": -entropy_loss}
