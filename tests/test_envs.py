"""rltpu.envs.make: registered ids, module:Class ids, MuJoCo, observation normalisation."""
import gymnasium
import numpy as np
import pytest

from rltpu import agents
from rltpu import envs
from rltpu.actor import RolloutActor
from rltpu.config import RunConfig


def test_registered_and_module_class_ids():
    env, spec = envs.make("CartPole-v1", 4, seed=0)
    assert env.first_observation.shape == (4, 4) and spec.num_actions == 2 and spec.discrete
    env, spec = envs.make("rltpu.envs.fake:CountingEnv", 3, seed=0)
    assert env.first_observation.shape == (3, 2)


def test_mujoco_half_cheetah_float32_and_clipped_actions():
    env, spec = envs.make("HalfCheetah-v5", 2, seed=0)
    assert spec.observation_space.shape == (17,) and spec.observation_space.dtype == np.float32
    assert env.first_observation.dtype == np.float32
    assert not spec.discrete and spec.num_actions == 6
    obs, reward, *_ = env.step(np.full((2, 6), 5.0, np.float32))
    assert obs.dtype == np.float32 and np.isfinite(reward).all()
    # 5.0 is clipped to the bound (1.0): the same reward as the bound itself from the same
    # start, and not the reward gymnasium's own env gives for 5.0 (its control cost grows
    # with the square of the action: -13.98 against 0.42 here).
    at_bound, _ = envs.make("HalfCheetah-v5", 2, seed=0)
    _, reward_at_bound, *_ = at_bound.step(np.full((2, 6), spec.action_space.high, np.float32))
    np.testing.assert_array_equal(reward, reward_at_bound)
    unclipped = gymnasium.make("HalfCheetah-v5")
    unclipped.reset(seed=0)
    _, reward_unclipped, *_ = unclipped.step(np.full(6, 5.0, np.float32))
    assert abs(reward_unclipped - reward[0]) > 1.0, (reward_unclipped, reward)


def test_observation_normalisation():
    env, _ = envs.make("HalfCheetah-v5", 4, seed=0, normalize_observations=True)
    rng = np.random.default_rng(0)
    seen = []
    for _ in range(300):
        obs, *_ = env.step(rng.uniform(-1, 1, (4, 6)).astype(np.float32))
        seen.append(obs)
    seen = np.concatenate(seen[100:])
    assert np.abs(seen.mean(0)).max() < 0.5 and 0.5 < np.median(seen.std(0)) < 1.5
    raw, _ = envs.make("HalfCheetah-v5", 4, seed=0)
    assert raw.first_observation.std() < 0.2  # raw MuJoCo observations are not unit scale


def test_gaussian_actor_on_half_cheetah():
    agent = agents.get("ppo")
    run = RunConfig(env="HalfCheetah-v5", envs_per_actor=2, unroll_length=5, batch_size=2,
                    normalize_observations=True)
    actor = RolloutActor(0, agent, agent.Config(), run, seed=0)
    import jax
    from rltpu import devices
    fns = agent.build(envs.make_spec("HalfCheetah-v5"), agent.Config(), run)
    actor.set_params(0, devices.to_host(jax.jit(fns.init)(jax.random.key(0)).params))
    traj = actor.unroll_with_current().trajectory
    assert traj.action.shape == (5, 2, 6) and traj.action.dtype == np.float32
    assert set(traj.extras["policy"]) == {"mean", "log_std"}
    assert traj.observation.shape == (6, 2, 17)


def test_unknown_env_suggests_close_ids():
    with pytest.raises(ValueError, match="did you mean CartPole-v1"):
        envs.make_spec("CartPole-v2")
