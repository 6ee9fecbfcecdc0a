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


def test_normalised_observations_are_clipped_to_ten():
    """gymnasium's running normalisation, clipped to [-10, 10] (CleanRL's and SB3's bound),
    in a vector env, leaf by leaf and in evaluation's single env: CountingEnv's episode
    number sits at 0 for 200 steps, so its first 1 normalises to about 14 before the clip."""
    from rltpu.envs.fake import CountingEnv
    from rltpu.envs.make import ObservationStatistics, normalize_one
    ours, _ = envs.make("rltpu.envs.fake:CountingEnv", 1, seed=0, normalize_observations=True,
                        env_kwargs={"terminate_at": 200})
    raw = gymnasium.vector.SyncVectorEnv([lambda: CountingEnv(terminate_at=200)])
    plain = gymnasium.wrappers.vector.NormalizeObservation(
        gymnasium.vector.SyncVectorEnv([lambda: CountingEnv(terminate_at=200)]))
    space = gymnasium.spaces.Dict({"count": CountingEnv().observation_space})
    leaves = ObservationStatistics(space)
    got, got_leaves, expected = [ours.first_observation], [], [plain.reset(seed=0)[0]]
    got_leaves.append(leaves.normalize({"count": raw.reset(seed=0)[0]}, batched=True)["count"])
    for _ in range(210):
        action = np.ones(1, np.int64)
        got.append(ours.step(action)[0])
        expected.append(plain.step(action)[0])
        got_leaves.append(leaves.normalize({"count": raw.step(action)[0]}, batched=True)["count"])
    expected = np.stack(expected)
    assert expected.max() > 12.0  # the clip is reached
    np.testing.assert_allclose(np.stack(got), np.clip(expected, -10, 10), rtol=1e-6)
    np.testing.assert_allclose(np.stack(got_leaves), np.clip(expected, -10, 10), rtol=1e-6)

    single = normalize_one(CountingEnv(terminate_at=200))
    single_plain = gymnasium.wrappers.NormalizeObservation(CountingEnv(terminate_at=200))
    got, expected = [single.reset(seed=0)[0]], [single_plain.reset(seed=0)[0]]
    for _ in range(210):
        observation, _, terminated, _, _ = single.step(1)
        plain_observation, *_ = single_plain.step(1)
        if terminated:
            observation, plain_observation = single.reset()[0], single_plain.reset()[0]
        got.append(observation)
        expected.append(plain_observation)
    expected = np.stack(expected)
    assert expected.max() > 12.0
    np.testing.assert_allclose(np.stack(got), np.clip(expected, -10, 10), rtol=1e-6)


def test_observation_statistics_carry_to_a_frozen_single_env():
    """An actor's statistics (``observation_statistics``) loaded into evaluation's single
    env: it normalises by them exactly, clipped, and no longer updates them."""
    from rltpu.envs.make import normalize_one
    env, _ = envs.make("HalfCheetah-v5", 2, seed=0, normalize_observations=True)
    rng = np.random.default_rng(0)
    for _ in range(50):
        env.step(rng.uniform(-1, 1, (2, 6)).astype(np.float32))
    state = envs.observation_statistics(env)
    assert state["count"] == pytest.approx(2 * 51 + 1e-4)
    assert envs.observation_statistics(envs.make("HalfCheetah-v5", 2, seed=0)[0]) is None
    single = normalize_one(gymnasium.make("HalfCheetah-v5"))
    raw = gymnasium.make("HalfCheetah-v5")
    single.statistics.load(state)
    observations = [(single.reset(seed=3)[0], raw.reset(seed=3)[0])]
    for _ in range(20):
        action = rng.uniform(-1, 1, 6).astype(np.float32)
        observations.append((single.step(action)[0], raw.step(action)[0]))
    for normalised, plain in observations:
        mean, var = np.asarray(state["mean"]), np.asarray(state["var"])
        expected = np.clip((plain - mean) / np.sqrt(var + 1e-8), -10, 10)
        np.testing.assert_allclose(normalised, expected, rtol=1e-5, atol=1e-5)
    after = single.statistics.state()
    np.testing.assert_array_equal(after["mean"], state["mean"])
    assert after["count"] == state["count"]


def test_reward_normalisation():
    """Rewards divided by the running standard deviation of the discounted return (autoreset
    steps left out; as in CleanRL's and SB3's, a terminal step's return is its reward
    alone), clipped to 10; episode returns stay raw."""
    env, _ = envs.make("rltpu.envs.fake:CountingEnv", 1, seed=0, reward_discount=0.9)
    returns, accumulated, episode_returns = [], 0.0, []
    for t in range(60):
        _, reward, terminated, _, info = env.step(np.ones(1, np.int64))
        if t % 6 == 5:  # the autoreset step after each 5-step episode: no reward, no update
            assert reward[0] == 0.0 and not terminated[0]
            continue
        # (CountingEnv pays 2 for action 1)
        accumulated = 0.9 * accumulated * (1 - terminated[0]) + 2.0
        returns.append(accumulated)
        # gymnasium's running statistics start from variance 1 at a weight of 1e-4
        expected = min(2.0 / np.sqrt(np.var(returns)) if len(returns) > 1 else np.inf, 10.0)
        np.testing.assert_allclose(reward[0], expected, rtol=1e-3 if len(returns) > 5 else 0.1)
        if terminated[0]:
            episode_returns.append(float(info["episode"]["r"][0]))
    assert reward[0] < 1.0  # past the first steps, well inside the clip
    assert episode_returns == [10.0] * 10  # in the env's units


def test_reward_normalisation_is_gymnasiums():
    """``make``'s reward scaling, whose statistics actors can share, scales as gymnasium's
    ``NormalizeReward`` and ``ClipReward`` do, to the bit (Pendulum's 200-step episodes:
    the steps after resets too)."""
    env, _ = envs.make("Pendulum-v1", 3, seed=4, reward_discount=0.99)
    plain, _ = envs.make("Pendulum-v1", 3, seed=4)
    plain = gymnasium.wrappers.vector.ClipReward(
        gymnasium.wrappers.vector.NormalizeReward(plain, gamma=0.99), -10.0, 10.0)
    rng = np.random.default_rng(0)
    for _ in range(450):
        action = rng.uniform(-2, 2, (3, 1)).astype(np.float32)
        np.testing.assert_array_equal(env.step(action)[1], plain.step(action)[1])


def test_actors_learn_from_normalised_rewards_and_report_raw_returns():
    """--normalize-rewards reaches both kinds of actor with the agent's discount: the
    trajectory carries scaled rewards, the finished episodes' returns are the env's."""
    import jax
    from rltpu import devices
    from rltpu.env_actor import EnvActor
    agent, env = agents.get("impala"), "rltpu.envs.fake:CountingEnv"
    unrolls = []
    for normalize in (False, True):
        run = RunConfig(env=env, envs_per_actor=2, unroll_length=12, batch_size=2,
                        normalize_rewards=normalize)
        actor = RolloutActor(0, agent, agent.Config(), run, seed=3)
        fns = agent.build(envs.make_spec(env), agent.Config(), run)
        actor.set_params(0, devices.to_host(jax.jit(fns.init)(jax.random.key(0)).params))
        unrolls.append(actor.unroll_with_current())
    raw, scaled = unrolls
    np.testing.assert_array_equal(raw.trajectory.action, scaled.trajectory.action)
    assert len(raw.episode_returns) == 4
    np.testing.assert_array_equal(raw.episode_returns, scaled.episode_returns)
    assert set(raw.trajectory.reward[raw.trajectory.valid]) <= {1.0, 2.0}
    np.testing.assert_array_equal(scaled.trajectory.reward[0], [10.0, 10.0])  # clipped
    # one scale for both envs at each step (one running estimate per actor), below 1 once
    # the returns have spread
    both = raw.trajectory.valid.all(axis=1)
    ratio = scaled.trajectory.reward[both] / raw.trajectory.reward[both]
    np.testing.assert_allclose(ratio[:, 0], ratio[:, 1], rtol=1e-6)
    assert ratio[-1, 0] < 1.0, ratio
    run = RunConfig(env=env, envs_per_actor=2, normalize_rewards=True)
    env_actor = EnvActor(0, run, seed=3, reward_discount=envs.reward_discount(run, agent.Config()))
    assert env_actor.env.env.gamma == agent.Config().discount
    np.testing.assert_array_equal(env_actor.step(np.ones(2, np.int64)).reward, [10.0, 10.0])
    assert env_actor.observation_statistics() is None  # (observations not normalised)
    env_actor = EnvActor(0, RunConfig(env=env, envs_per_actor=2, normalize_observations=True),
                         seed=3)
    env_actor.step(np.ones(2, np.int64))
    assert env_actor.observation_statistics()["count"] == pytest.approx(4 + 1e-4)


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
