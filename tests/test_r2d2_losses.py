"""R2D2's value rescaling, priority mix and rescaled n-step double-Q targets against hand
computations."""
import math

import jax.numpy as jnp
import numpy as np

from rltpu.agents.r2d2.losses import (inverse_value_rescale, n_step_double_q_targets,
                                      sequence_priority, value_rescale)

EPS = 1e-3


def test_value_rescaling_by_hand():
    x = jnp.array([0.0, 3.0, -8.0, 99.0])
    # h(3) = sqrt(4) - 1 + 0.003 = 1.003; h(-8) = -(3 - 1) - 0.008 = -2.008;
    # h(99) = sqrt(100) - 1 + 0.099 = 9.099
    np.testing.assert_allclose(value_rescale(x), [0.0, 1.003, -2.008, 9.099], rtol=1e-6)
    np.testing.assert_allclose(inverse_value_rescale(jnp.array([0.0, 1.003, -2.008, 9.099])),
                               x, rtol=1e-4, atol=1e-5)
    wide = jnp.linspace(-1000.0, 1000.0, 101)
    np.testing.assert_allclose(inverse_value_rescale(value_rescale(wide)), wide, rtol=1e-4,
                               atol=1e-3)


def test_priority_mixes_max_and_mean():
    td = jnp.array([1.0, -3.0, 2.0, 100.0])
    mask = jnp.array([True, True, True, False])  # the last step is masked out (burn-in, say)
    # 0.9 * 3 + 0.1 * (1 + 3 + 2) / 3 = 2.7 + 0.2 = 2.9
    np.testing.assert_allclose(sequence_priority(jnp.abs(td), mask), 2.9, rtol=1e-6)
    np.testing.assert_allclose(sequence_priority(jnp.abs(td), jnp.zeros(4, bool)), 0.0)


def h(x):
    return math.copysign(math.sqrt(abs(x) + 1) - 1, x) + EPS * x


def test_rescaled_n_step_double_q_targets_by_hand():
    # 4 steps, 2 actions, n = 2, gamma = 0.5. Step 1 terminates; step 2 is the autoreset
    # step; step 3 is cut off by the sequence's end.
    q_online = jnp.array([[0.0, 1.0], [1.0, 0.0], [5.0, 6.0], [0.0, 1.0], [2.0, 1.0]])
    q_target = jnp.array([[9.0, 8.0], [3.0, 4.0], [7.0, 7.0], [1.0, 2.0], [0.5, 3.0]])
    reward = jnp.array([1.0, 2.0, 0.0, 4.0])
    terminated = jnp.array([False, True, False, False])
    ended = terminated
    targets = n_step_double_q_targets(q_online, q_target, reward, terminated, ended, n=2,
                                      discount=0.5)
    inv = lambda y: float(inverse_value_rescale(jnp.float32(y)))
    expected = [
        h(1.0 + 0.5 * 2.0),  # t=0: r0 + g r1, step 1 terminates: no bootstrap
        h(2.0),  # t=1: terminates at once
        # t=2: r2 + g r3 + g^2 Q_target(x4, argmax Q_online(x4) = 0) = 0 + 2 + 0.25 h^-1(0.5)
        h(0.0 + 0.5 * 4.0 + 0.25 * inv(0.5)),
        # t=3: the sequence ends after one step: r3 + g Q_target(x4, 0)
        h(4.0 + 0.5 * inv(0.5)),
    ]
    np.testing.assert_allclose(targets, expected, rtol=1e-5)


def test_truncation_bootstraps_from_the_last_observation():
    q_online = jnp.array([[0.0, 1.0], [1.0, 0.0], [0.0, 0.0]])
    q_target = jnp.array([[0.0, 0.0], [3.0, 4.0], [50.0, 50.0]])
    reward = jnp.array([1.0, 1.0])
    truncated = jnp.array([True, False])
    targets = n_step_double_q_targets(q_online, q_target, reward, jnp.zeros(2, bool), truncated,
                                      n=3, discount=0.9)
    # t=0 stops at its truncation and bootstraps from x1: argmax Q_online(x1) = 0 -> 3
    inv3 = float(inverse_value_rescale(jnp.float32(3.0)))
    np.testing.assert_allclose(targets[0], h(1.0 + 0.9 * inv3), rtol=1e-5)
