"""n-step double-DQN targets, the Huber loss, importance weights and new priorities
against hand-computed numbers; epsilon-greedy acting; the exploration ladder."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rltpu import agents
from rltpu import envs
from rltpu.agents.dqn import (double_q_target, dqn_loss, exploration_epsilon, huber,
                              make_actor_step, n_step_transitions)
from rltpu.config import RunConfig
from rltpu.networks import Network
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


def test_huber_and_the_weighted_loss_by_hand():
    # TD errors 0.5, -3, 4: quadratic inside delta 1 (0.125), linear outside (2.5, 3.5);
    # importance weights 1, 0.5, 0.25 -> (0.125 + 1.25 + 0.875) / 3 = 0.75.
    loss, td_error = dqn_loss(jnp.array([1.0, 2.0, 0.0]), jnp.array([1.5, -1.0, 4.0]),
                              jnp.array([1.0, 0.5, 0.25]), huber_delta=1.0)
    np.testing.assert_allclose(td_error, [0.5, -3.0, 4.0])
    np.testing.assert_allclose(loss, 0.75, rtol=1e-6)
    # delta 2: |td| 3 is 0.5 * 4 + 2 * 1 = 4; 0.5 stays quadratic.
    np.testing.assert_allclose(huber(jnp.array([0.5, -3.0, 2.0]), 2.0), [0.125, 4.0, 2.0])


def numpy_q(params, observation):
    """The Q-network (one tanh hidden layer) in float64 numpy, from Flax's params."""
    layers = params["params"]
    hidden = np.tanh(observation @ np.float64(layers["Dense_0"]["kernel"])
                     + np.float64(layers["Dense_0"]["bias"]))
    return hidden @ np.float64(layers["Dense_1"]["kernel"]) + np.float64(layers["Dense_1"]["bias"])


def test_update_loss_and_priorities_by_hand():
    """One learner update on three replayed transitions: the loss, the new priorities
    (|TD error| + 1e-6) and mean Q against a float64 computation of double Q-learning's
    targets from the online and (different) target params."""
    agent = agents.get("dqn")
    spec = envs.make_spec("CartPole-v1")
    fns = agent.build(spec, agent.Config(hidden_sizes=(3,), sample_size=3, huber_delta=1.0),
                      RunConfig())
    state = fns.init(jax.random.key(0))
    rng = np.random.default_rng(0)
    online = jax.tree.map(lambda x: rng.normal(size=x.shape).astype(np.float32), state.params["online"])
    target = jax.tree.map(lambda x: rng.normal(size=x.shape).astype(np.float32), online)
    state = state._replace(params={"online": online, "target": target})
    obs, next_obs = (rng.normal(size=(3, 4)).astype(np.float32) for _ in range(2))
    batch = {"transitions": {"observation": obs, "action": np.array([0, 1, 1], np.int32),
                             "n_step_return": np.array([0.3, 3.0, -2.0], np.float32),
                             "bootstrap_discount": np.array([0.9, 0.0, 0.81], np.float32),
                             "next_observation": next_obs},
             "weights": np.array([1.0, 0.5, 0.25], np.float32)}
    _, metrics = jax.jit(fns.update)(state, batch)

    q = numpy_q(online, np.float64(obs))
    q_taken = q[np.arange(3), [0, 1, 1]]
    best = np.argmax(numpy_q(online, np.float64(next_obs)), axis=1)  # chosen by the online net
    q_next = numpy_q(target, np.float64(next_obs))[np.arange(3), best]  # valued by the target net
    # (the target net alone would pick another action for a bootstrapped transition: the
    # numbers tell double Q-learning from plain)
    assert (best != np.argmax(numpy_q(target, np.float64(next_obs)), axis=1))[[0, 2]].any()
    td_error = np.array([0.3, 3.0, -2.0]) + np.array([0.9, 0.0, 0.81]) * q_next - q_taken
    abs_td = np.abs(td_error)
    huber_np = np.where(abs_td <= 1.0, 0.5 * td_error ** 2, abs_td - 0.5)
    assert (abs_td > 1.0).any() and (abs_td < 1.0).any(), td_error  # both branches are used
    np.testing.assert_allclose(metrics["loss"], np.mean([1.0, 0.5, 0.25] * huber_np), rtol=1e-5)
    np.testing.assert_allclose(metrics["priorities"], abs_td + 1e-6, rtol=1e-5)
    np.testing.assert_allclose(metrics["mean_q"], q_taken.mean(), rtol=1e-5, atol=1e-6)


def q_values_network():
    """A "network" whose Q-values are its input, so the greedy action is known."""
    return Network(init=lambda key, x: {}, apply=lambda params, observation: observation)


@pytest.mark.parametrize("epsilon", [0.0, 0.3, 1.0])
def test_epsilon_greedy_acting(epsilon):
    """With probability epsilon a uniformly random action (the greedy one among them),
    otherwise the greedy one: the greedy action's share is 1 - epsilon + epsilon / A, each
    other action's epsilon / A (20,000 draws: within 4 standard deviations)."""
    n, num_actions = 20_000, 4
    q = np.zeros((n, num_actions), np.float32)
    greedy = np.arange(n) % num_actions
    q[np.arange(n), greedy] = 1.0
    step = jax.jit(make_actor_step(q_values_network(), epsilon))
    out = step({"online": {}}, q, jax.random.key(1))
    action = np.asarray(out.action)
    assert action.shape == (n,) and out.extras == {}
    assert set(np.unique(action)) <= set(range(num_actions))
    shares = [np.mean(action == (greedy + k) % num_actions) for k in range(num_actions)]
    expected = [1 - epsilon + epsilon / num_actions] + [epsilon / num_actions] * (num_actions - 1)
    for share, p in zip(shares, expected):
        assert abs(share - p) <= 4 * np.sqrt(p * (1 - p) / n) + 1e-12, (shares, expected)
    # a different key draws different exploration (when there is any)
    again = np.asarray(step({"online": {}}, q, jax.random.key(2)).action)
    assert (again != action).any() == (epsilon > 0)


@pytest.mark.parametrize("agent", ["dqn", "r2d2"])
@pytest.mark.parametrize("adam_epsilon", [1e-8, 1e-2])
def test_adam_epsilon_scales_the_first_step_by_hand(agent, adam_epsilon):
    """Adam's first step is -lr g / (|g| + eps) per weight (its bias-corrected moments are g
    and g^2): a large epsilon shrinks small gradients' steps, where eps 1e-8 moves every
    weight by the full step size whatever its gradient's size. (R2D2's Q-learning takes
    --adam-epsilon too.)"""
    from rltpu.agents.dqn import learning as dqn_learning
    from rltpu.agents.r2d2 import learning as r2d2_learning
    make_optimizer = {"dqn": dqn_learning, "r2d2": r2d2_learning}[agent].make_optimizer
    config = agents.get(agent).Config(learning_rate=0.1, adam_epsilon=adam_epsilon,
                                      max_grad_norm=100.0)
    optimizer = make_optimizer(config)
    params = jnp.zeros(3)
    grads = np.array([1e-3, -1e-2, 1.0], np.float32)
    updates, _ = optimizer.update(jnp.asarray(grads), optimizer.init(params), params)
    np.testing.assert_allclose(updates, -0.1 * grads / (np.abs(grads) + adam_epsilon), rtol=1e-5)


def test_dueling_head_by_hand():
    """Q = V + A - mean(A) from a last layer of 1 + A outputs."""
    from rltpu.agents.networks import dueling_q
    out = np.array([[10.0, 1.0, 2.0, 6.0], [-1.0, 0.0, 0.0, 0.0]], np.float32)
    np.testing.assert_allclose(dueling_q(out), [[8.0, 9.0, 13.0], [-1.0, -1.0, -1.0]])


@pytest.mark.parametrize("lib", ["flax", "haiku"])
@pytest.mark.parametrize("torso", ["mlp", "nature"])
def test_dueling_q_network_gives_one_value_per_action(lib, torso):
    """--dueling: the network's last layer has 1 + A outputs and ``apply`` returns A Q-values,
    the dueling combination of that layer's outputs, for MLP and convolutional torsos."""
    import gymnasium as gym
    from rltpu.agents.networks import q_network
    from rltpu.types import EnvSpec
    shape, dtype = ((4,), np.float32) if torso == "mlp" else ((4, 84, 84), np.uint8)
    spec = EnvSpec("test", gym.spaces.Box(0, 255, shape, dtype), gym.spaces.Discrete(3))
    x = np.asarray(jax.random.uniform(jax.random.key(1), (2, *shape)) * 255, dtype)
    dueling = q_network(spec, (8,), lib, torso, dueling=True)
    params = dueling.init(jax.random.key(0), x)
    # a plain network with 1 + A actions has the same params and gives the raw outputs
    wider = EnvSpec("test", spec.observation_space, gym.spaces.Discrete(4))
    raw = np.asarray(q_network(wider, (8,), lib, torso).apply(params, x))
    q = np.asarray(dueling.apply(params, x))
    assert q.shape == (2, 3)
    np.testing.assert_allclose(q, raw[:, :1] + raw[:, 1:] - raw[:, 1:].mean(-1, keepdims=True),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(q.mean(-1), raw[:, 0], rtol=1e-5, atol=1e-5)  # V is Q's mean
