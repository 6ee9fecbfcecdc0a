"""--normalize-observations across a run's lifecycle, with real Ray and orbax: checkpoints
keep actor 0's running statistics, ``rltpu.load``'s policy and ``rltpu eval`` normalise by
them, and a resumed run's actors go on from them instead of starting afresh."""
import dataclasses

import gymnasium as gym
import jax
import numpy as np
import pytest

import rltpu
from rltpu import agents, checkpoint, evaluate
from rltpu.config import RunConfig
from rltpu.policy import Policy

PPO = agents.get("ppo")
CONFIG = PPO.Config(num_epochs=1, num_minibatches=2, hidden_sizes=(16,))


def statistics_at(run_dir, step=None):
    fns = PPO.build(rltpu.envs.make_spec("Pendulum-v1"), CONFIG, RunConfig())
    return checkpoint.restore(run_dir, fns.init, step).counters.get("observation_statistics")


@pytest.fixture(scope="module")
def first_leg(tmp_path_factory, ray_local):
    """8,192 steps of Pendulum (one actor of 2 envs, 64-step unrolls), then the same run
    resumed for 2,048 more."""
    run = RunConfig(agent="ppo", env="Pendulum-v1", num_actors=1, envs_per_actor=2,
                    unroll_length=64, batch_size=2, total_env_steps=8192, target_return=None,
                    normalize_observations=True, checkpoint_every_updates=16, num_devices=1,
                    run_dir=str(tmp_path_factory.mktemp("stats") / "run"), compilation_cache=None)
    rltpu.train(PPO, CONFIG, run, quiet=True)
    saved = statistics_at(run.run_dir)
    resumed = dataclasses.replace(run, total_env_steps=8192 + 2048)
    fns = PPO.build(rltpu.envs.make_spec("Pendulum-v1"), CONFIG, resumed)
    rltpu.train(PPO, CONFIG, resumed, quiet=True, resume=checkpoint.restore(run.run_dir, fns.init))
    return run, saved


def test_checkpoints_keep_actor_statistics(first_leg):
    run, saved = first_leg
    assert set(saved) == {"mean", "var", "count"} and len(saved["mean"]) == 3
    # Actor 0 saw 2 x (1 + 8192 / 2) observations; the loop keeps an answer at most a
    # second old, so the final checkpoint's count is at most that.
    assert 2_100 < saved["count"] <= 2 * (1 + 4096) + 1e-3
    # Pendulum's observation is (cos, sin, angular velocity): |cos|, |sin| <= 1
    assert all(abs(m) <= 1 for m in saved["mean"][:2]) and all(v > 0 for v in saved["var"])


def test_resumed_actors_go_on_from_the_saved_statistics(first_leg):
    """Fresh statistics would count at most 2 x (1 + 1024) observations in the second leg;
    the resumed actor's count goes on from the first leg's."""
    run, saved = first_leg
    after = statistics_at(run.run_dir)
    assert after["count"] > saved["count"] > 2 * (1 + 1024) + 1


def test_loaded_policy_and_eval_normalise_by_the_checkpoint(first_leg):
    run, _ = first_leg
    policy = rltpu.load(run.run_dir)
    stats = policy.observation_statistics
    assert stats == statistics_at(run.run_dir)
    plain = Policy(policy.agent, policy.agent_config, policy.run, policy.spec, policy.params)
    rng = np.random.default_rng(0)
    raw = np.stack([rng.uniform(-1, 1, 3), rng.uniform(-1, 1, 3) * [1, 1, 8]]).astype(np.float32)
    scaled = np.clip((raw - np.array(stats["mean"])) / np.sqrt(np.array(stats["var"]) + 1e-8),
                     -10, 10).astype(np.float32)
    np.testing.assert_allclose(policy.act(raw), plain.act(scaled), rtol=1e-6)
    assert not np.allclose(plain.act(raw), plain.act(scaled))  # normalising changes the action
    # rltpu eval (the env normalised by them) plays as policy.act on the raw env does
    played = evaluate.play(policy, episodes=2, seed=5)
    by_act = evaluate._play_policy(policy, gym.make("Pendulum-v1"), 2, 5)
    np.testing.assert_allclose(played["returns"], by_act[0], rtol=1e-5)


def test_statistics_that_do_not_fit_are_refused():
    from rltpu.envs.make import ObservationStatistics
    statistics = ObservationStatistics(gym.make("Pendulum-v1").observation_space)
    good = {"mean": [0.0, 0.0, 0.0], "var": [1.0, 1.0, 1.0], "count": 10.0}
    for bad, words in (({**good, "mean": [0.0, 0.0]}, "shape (2,)"),
                       ({**good, "count": "x"}, "not {'mean', 'var', 'count'} of numbers"),
                       ({"mean": [0.0] * 3}, "of numbers"),
                       ([good], "of numbers"),
                       ({**good, "count": 0.0}, "count 0.0"),
                       ({**good, "var": [1.0, float("nan"), 1.0]}, "non-finite"),
                       ({**good, "var": [1.0, -1.0, 1.0]}, "negative variance")):
        with pytest.raises(ValueError, match="observation statistics") as e:
            statistics.load(bad)
        assert words in str(e.value), (bad, str(e.value))
    two = ObservationStatistics(gym.spaces.Tuple([gym.make("Pendulum-v1").observation_space] * 2))
    for bad in ([good], [good] * 3, {"a": good}):
        with pytest.raises(ValueError, match="do not have the observations' structure"):
            two.load(bad)
    two.load([good, good])
    assert not statistics.frozen  # nothing was taken
    statistics.load(good)
    assert statistics.frozen and statistics.obs_rms.count == 10.0
    with pytest.raises(ValueError, match="do not fit observations of shape"):
        Policy(PPO, CONFIG, RunConfig(env="Pendulum-v1", normalize_observations=True),
               rltpu.envs.make_spec("Pendulum-v1"),
               PPO.build(rltpu.envs.make_spec("Pendulum-v1"), CONFIG, RunConfig()).init(
                   jax.random.key(0)).params,
               observation_statistics={**good, "mean": [1.0]})
