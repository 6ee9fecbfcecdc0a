"""The IMPALA loss against hand-computed numbers; autoreset masking; the full update."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rltpu import agents
from rltpu.config import RunConfig
from rltpu import envs
from rltpu.agents.impala import impala_loss, impala_targets
from rltpu.learner import example_trajectory

HALF = math.log(0.5)
TARGETS = dict(discount=0.9, lambda_=1.0, clip_rho_threshold=1.0, clip_pg_rho_threshold=1.0)
COSTS = dict(baseline_cost=0.5, entropy_cost=0.01)


def loss_of(values, reward, terminated, valid, entropy):
    T = len(reward)
    vt, _ = impala_targets(jnp.full(T, HALF), jnp.full(T, HALF), jnp.array(values),
                           jnp.array(reward), jnp.array(terminated), jnp.array(valid), **TARGETS)
    return impala_loss(jnp.full(T, HALF), jnp.array(entropy), vt, jnp.array(valid), **COSTS)


def test_loss_by_hand():
    loss, m = loss_of([1.0, 2.0, 3.0], [1.0, 1.0], [False, False], [True, True], [0.6, 0.7])
    # on-policy V-trace (see test_vtrace): errors = advantages = [3.33, 1.7]
    pg = -(HALF * 3.33 + HALF * 1.7) / 2
    baseline = 0.5 * (3.33 ** 2 + 1.7 ** 2) / 2
    entropy = -(0.6 + 0.7) / 2
    np.testing.assert_allclose(m["pg_loss"], pg, rtol=1e-6)
    np.testing.assert_allclose(m["baseline_loss"], baseline, rtol=1e-6)
    np.testing.assert_allclose(loss, pg + 0.5 * baseline + 0.01 * entropy, rtol=1e-6)


def test_truncation_bootstraps_and_autoreset_step_is_masked():
    # Step 1 is cut by a time limit; step 2 is the autoreset step (valid False) whose
    # transition crosses into the next episode. Step 1 bootstraps from V(x_2) = 3 and
    # nothing of step 2 leaks back: errors = [1.8 + .9 * 1.7, 1 + .9*3 - 2, 0].
    _, m = loss_of([1.0, 2.0, 3.0, 50.0], [1.0, 1.0, 0.0], [False, False, False],
                   [True, True, False], [0.6, 0.7, 0.8])
    np.testing.assert_allclose(m["baseline_loss"], 0.5 * (3.33 ** 2 + 1.7 ** 2) / 3, rtol=1e-6)
    np.testing.assert_allclose(m["pg_loss"], -(HALF * 3.33 + HALF * 1.7) / 3, rtol=1e-6)


def test_termination_does_not_bootstrap():
    # Step 1 terminates: its target is its reward, 1; errors = [1.8 + .9 * (1 - 2), 1 - 2, 0].
    _, m = loss_of([1.0, 2.0, 3.0, 50.0], [1.0, 1.0, 0.0], [False, True, False],
                   [True, True, False], [0.6, 0.7, 0.8])
    np.testing.assert_allclose(m["baseline_loss"], 0.5 * (0.9 ** 2 + 1.0) / 3, rtol=1e-6)


def random_batch(fns, spec, params, T, B, seed=0):
    rng = np.random.default_rng(seed)
    example = example_trajectory(fns, spec, params, T, B)

    def fill(s):
        if s.dtype == np.bool_:
            return rng.random(s.shape) < 0.1
        if np.issubdtype(s.dtype, np.integer):
            return rng.integers(0, 2, s.shape).astype(s.dtype)
        return (0.5 * rng.normal(size=s.shape)).astype(s.dtype)  # behaviour outputs near the policy's
    batch = jax.tree.map(fill, example)
    return batch._replace(valid=~batch.valid, policy_version=np.zeros((T, B), np.int32))


def test_update_metrics_are_finite_scalars():
    agent = agents.get("impala")
    spec = envs.make_spec("CartPole-v1")
    fns = agent.build(spec, agent.Config(), RunConfig())
    state = jax.jit(fns.init)(jax.random.key(0))
    batch = random_batch(fns, spec, state.params, T=8, B=4)
    new_state, metrics = jax.jit(fns.update)(state, batch)
    assert set(metrics) >= {"loss", "pg_loss", "baseline_loss", "entropy", "grad_norm"}
    for name, value in metrics.items():
        assert value.shape == () and np.isfinite(value), name
    assert int(new_state.step) == 1
    changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), state.params, new_state.params)
    assert all(jax.tree.leaves(changed))


def test_agent_refuses_action_spaces_it_cannot_act_in():
    with pytest.raises(ValueError, match="Discrete or Box"):
        agents.get("impala").check_spec(envs.make_spec("rltpu.envs.fake:MultiBinaryActionEnv"))


def test_normalised_advantages_by_hand():
    # advantages [3.33, 1.7] (valid) normalise to [1, -1]; the masked step stays out
    T = 3
    vt, _ = impala_targets(jnp.full(T, HALF), jnp.full(T, HALF), jnp.array([1.0, 2.0, 3.0, 50.0]),
                           jnp.array([1.0, 1.0, 0.0]), jnp.zeros(T, bool),
                           jnp.array([True, True, False]), **TARGETS)
    _, m = impala_loss(jnp.full(T, HALF), jnp.ones(T), vt, jnp.array([True, True, False]),
                       normalize_advantages=True, **COSTS)
    np.testing.assert_allclose(m["pg_loss"], -(HALF * 1 + HALF * -1) / 3, atol=1e-6)


def test_num_epochs_takes_that_many_gradient_steps_on_the_batch():
    # Two epochs on a batch are two one-epoch updates on it, one after the other; the
    # metrics are the first step's (on the batch as the actors acted it).
    spec = envs.make_spec("CartPole-v1")
    agent = agents.get("impala")
    one = agent.build(spec, agent.Config(num_epochs=1), RunConfig())
    two = agent.build(spec, agent.Config(num_epochs=2), RunConfig())
    state = jax.jit(one.init)(jax.random.key(0))
    batch = random_batch(one, spec, state.params, T=8, B=4)
    first, first_metrics = jax.jit(one.update)(state, batch)
    second, _ = jax.jit(one.update)(first, batch)
    both, metrics = jax.jit(two.update)(state, batch)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
                 second.params, both.params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
                 first_metrics, metrics)
    assert int(both.step) == 1  # one learner update, whatever its epochs
    with pytest.raises(ValueError, match="--num-epochs must be a positive integer, got 0"):
        agent.Config(num_epochs=0)
