"""V-trace against hand-computed numbers and against rlax."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import rlax

from rltpu.agents.impala.losses import vtrace

V_TM1 = jnp.array([1.0, 2.0])
V_T = jnp.array([2.0, 3.0])
R_T = jnp.array([1.0, 1.0])
DISCOUNT = jnp.array([0.9, 0.9])


def test_on_policy_by_hand():
    # delta_0 = 1 + .9*2 - 1 = 1.8; delta_1 = 1 + .9*3 - 2 = 1.7
    # v_1 - V(x_1) = 1.7; v_0 - V(x_0) = 1.8 + .9 * 1.7 = 3.33
    out = vtrace(V_TM1, V_T, R_T, DISCOUNT, jnp.ones(2))
    np.testing.assert_allclose(out.errors, [3.33, 1.7], rtol=1e-6)
    # q_0 = 1 + .9 * v_1 = 1 + .9 * 3.7 = 4.33; q_1 = 1 + .9 * V(x_2) = 3.7
    np.testing.assert_allclose(out.q_estimate, [4.33, 3.7], rtol=1e-6)
    np.testing.assert_allclose(out.pg_advantage, [3.33, 1.7], rtol=1e-6)


def test_clipped_importance_weights_by_hand():
    # rho = [2, .5] -> clipped rho = c = [1, .5]
    # delta_0 = 1.8; delta_1 = .5 * 1.7 = .85; errors = [1.8 + .9 * 1 * .85, .85]
    out = vtrace(V_TM1, V_T, R_T, DISCOUNT, jnp.array([2.0, 0.5]))
    np.testing.assert_allclose(out.errors, [2.565, 0.85], rtol=1e-6)
    # q_0 = 1 + .9 * (2 + .85) = 3.565 -> adv_0 = 1 * (3.565 - 1); adv_1 = .5 * (3.7 - 2)
    np.testing.assert_allclose(out.pg_advantage, [2.565, 0.85], rtol=1e-6)


def test_terminal_step_cuts_the_trace():
    out = vtrace(V_TM1, V_T, R_T, jnp.array([0.0, 0.9]), jnp.ones(2))
    # step 0 ends the episode: its target is its reward alone
    np.testing.assert_allclose(out.errors[0] + V_TM1[0], 1.0, rtol=1e-6)


def direct_vtrace(v_tm1, v_t, r_t, discount_t, rho_tm1, lambda_, rho_bar, pg_rho_bar):
    """The paper's sum, term by term (no recursion)."""
    T = len(r_t)
    rho = np.minimum(rho_bar, rho_tm1)
    c = lambda_ * np.minimum(1.0, rho_tm1)
    delta = rho * (r_t + discount_t * v_t - v_tm1)
    targets = np.zeros(T)
    for s in range(T):
        acc, weight = 0.0, 1.0
        for t in range(s, T):
            acc += weight * delta[t]
            weight *= discount_t[t] * c[t]
        targets[s] = v_tm1[s] + acc
    next_targets = np.append(lambda_ * targets[1:] + (1 - lambda_) * v_tm1[1:], v_t[-1])
    pg = np.minimum(pg_rho_bar, rho_tm1) * (r_t + discount_t * next_targets - v_tm1)
    return targets - v_tm1, pg


@pytest.mark.parametrize("lambda_,rho_bar,pg_rho_bar", [(1.0, 1.0, 1.0), (0.9, 1.5, 0.8)])
def test_matches_direct_sum_and_rlax(lambda_, rho_bar, pg_rho_bar):
    rng = np.random.default_rng(0)
    T = 12
    v = rng.normal(size=T + 1).astype(np.float32)
    r_t = rng.normal(size=T).astype(np.float32)
    discount_t = (0.97 * (rng.random(T) > 0.2)).astype(np.float32)
    rho_tm1 = np.exp(rng.normal(scale=0.7, size=T)).astype(np.float32)
    args = (v[:-1], v[1:], r_t, discount_t, rho_tm1)

    ours = vtrace(*args, lambda_=lambda_, clip_rho_threshold=rho_bar,
                  clip_pg_rho_threshold=pg_rho_bar)
    errors, pg = direct_vtrace(*args, lambda_, rho_bar, pg_rho_bar)
    np.testing.assert_allclose(ours.errors, errors, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ours.pg_advantage, pg, rtol=1e-5, atol=1e-5)

    ref = rlax.vtrace_td_error_and_advantage(*args, lambda_=lambda_,
                                             clip_rho_threshold=rho_bar,
                                             clip_pg_rho_threshold=pg_rho_bar)
    np.testing.assert_allclose(ours.errors, ref.errors, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ours.pg_advantage, ref.pg_advantage, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ours.q_estimate, ref.q_estimate, rtol=1e-5, atol=1e-5)


def test_targets_carry_no_gradient():
    def loss(v):
        out = vtrace(v[:-1], v[1:], R_T, DISCOUNT, jnp.ones(2))
        return jnp.sum(out.errors)
    # errors = stop_gradient(targets) - v_tm1: only -1 per v_tm1, nothing through targets
    np.testing.assert_allclose(jax.grad(loss)(jnp.array([1.0, 2.0, 3.0])), [-1, -1, 0])
