"""n-step double-DQN targets against hand-computed numbers; the exploration ladder."""
import jax.numpy as jnp
import numpy as np
import pytest

from rltpu.agents.dqn import double_q_target, exploration_epsilon, n_step_transitions
from rltpu.types import Trajectory


def trajectory():
    # column 0 terminates at step 1 (step 2 is its autoreset step);
    # column 1 is truncated at step 0 (step 1 is its autoreset step)
    T, B = 4, 2
    obs = np.arange(T + 1, dtype=np.float32)[:, None, None] * 10 + np.array([0, 1])[None, :, None]
    return Trajectory(
        observation=obs, action=np.tile(np.arange(T)[:, None], (1, B)),
        reward=np.tile(np.array([1.0, 2.0, 3.0, 4.0], np.float32)[:, None], (1, B)),
        terminated=np.array([[0, 0], [1, 0], [0, 0], [0, 0]], bool),
        truncated=np.array([[0, 1], [0, 0], [0, 0], [0, 0]], bool),
        valid=np.array([[1, 1], [1, 0], [0, 1], [1, 1]], bool),
        extras={}, policy_version=np.zeros((T, B), np.int32))


def test_n_step_transitions_by_hand():
    t = n_step_transitions(trajectory(), n=2, discount=0.5)
    # order: step 0 (cols 0, 1), step 1 (col 0), step 2 (col 1), step 3 (cols 0, 1)
    np.testing.assert_array_equal(t["observation"][:, 0], [0, 1, 10, 21, 30, 31])
    # col 0, step 0: 1 + .5 * 2, stops at the termination: no bootstrap
    # col 1, step 0: truncated at once: 1, bootstrap .5 from its true last observation (11)
    # col 0, step 1: 2, terminal.  col 1, step 2: 3 + .5 * 4, bootstrap .25 from obs 4
    # step 3: one step left in the unroll: 4, bootstrap .5 from obs 4
    np.testing.assert_allclose(t["n_step_return"], [2, 1, 2, 5, 4, 4])
    np.testing.assert_allclose(t["bootstrap_discount"], [0, 0.5, 0, 0.25, 0.5, 0.5])
    np.testing.assert_array_equal(t["next_observation"][:, 0], [20, 11, 20, 41, 40, 41])
    np.testing.assert_array_equal(t["action"], [0, 0, 1, 2, 3, 3])


def test_double_q_target_by_hand():
    # the online net picks the actions [1, 0]; the target net values them [20, 30]
    y = double_q_target(jnp.array([1.0, 2.0]), jnp.array([0.5, 0.0]),
                        jnp.array([[1.0, 3.0], [2.0, 1.0]]), jnp.array([[10.0, 20.0], [30.0, 40.0]]))
    np.testing.assert_allclose(y, [11.0, 2.0])


def test_exploration_ladder():
    assert exploration_epsilon(0, 8, 0.4, 7.0) == pytest.approx(0.4)
    assert exploration_epsilon(7, 8, 0.4, 7.0) == pytest.approx(0.4 ** 8)
    assert exploration_epsilon(0, 1, 0.4, 7.0) == 0.4
