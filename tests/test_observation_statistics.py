"""--normalize-observations across a run's lifecycle, with real Ray and orbax: the actors
share their running statistics, checkpoints keep them, ``rltpu.load``'s policy and
``rltpu eval`` normalise by them, and a resumed run's actors go on from them instead of
starting afresh."""
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


def restored(run_dir, step=None):
    fns = PPO.build(rltpu.envs.make_spec("Pendulum-v1"), CONFIG, RunConfig())
    return checkpoint.restore(run_dir, fns.init, step)


def statistics_at(run_dir, step=None):
    return restored(run_dir, step).counters.get("observation_statistics")


@pytest.fixture(scope="module")
def first_leg(tmp_path_factory, ray_local):
    """8,192 steps of Pendulum (one actor of 2 envs, 64-step unrolls, observations and
    rewards normalised), then the same run resumed for 2,048 more."""
    run = RunConfig(agent="ppo", env="Pendulum-v1", num_actors=1, envs_per_actor=2,
                    unroll_length=64, batch_size=2, total_env_steps=8192, target_return=None,
                    normalize_observations=True, normalize_rewards=True,
                    checkpoint_every_updates=16, num_devices=1,
                    run_dir=str(tmp_path_factory.mktemp("stats") / "run"), compilation_cache=None)
    rltpu.train(PPO, CONFIG, run, quiet=True)
    first = restored(run.run_dir)
    saved = first.counters["observation_statistics"]
    returns = first.counters["return_statistics"]
    resumed = dataclasses.replace(run, total_env_steps=8192 + 2048)
    fns = PPO.build(rltpu.envs.make_spec("Pendulum-v1"), CONFIG, resumed)
    rltpu.train(PPO, CONFIG, resumed, quiet=True, resume=checkpoint.restore(run.run_dir, fns.init))
    return run, saved, returns, first.step


def test_checkpoints_keep_actor_statistics(first_leg):
    run, saved, returns, updates = first_leg
    assert set(saved) == {"mean", "var", "count"} and len(saved["mean"]) == 3
    # Each of the actor's unrolls adds 2 x 64 observations to the 2 first ones. The actor
    # may be up to max_in_flight unrolls ahead of the learner's updates, and the loop adds
    # what it handed over about every second, so the final checkpoint counts at most this.
    most = 2 * (1 + 64 * (updates + run.max_in_flight))
    assert 2_100 < saved["count"] <= most + 1e-3
    # one discounted return an observation after the first, but for the step after a reset
    # (Pendulum's episodes are 200 steps)
    assert saved["count"] - 2 - saved["count"] // 201 - 2 <= returns["count"] <= saved["count"] - 2
    assert returns["mean"] < 0 and returns["var"] > 0  # (Pendulum's rewards are <= 0)
    # Pendulum's observation is (cos, sin, angular velocity): |cos|, |sin| <= 1
    assert all(abs(m) <= 1 for m in saved["mean"][:2]) and all(v > 0 for v in saved["var"])


def test_resumed_actors_go_on_from_the_saved_statistics(first_leg):
    """Fresh statistics would count at most 2 x (1 + 1024) observations and 2 x 1024
    returns in the second leg; the resumed actor's counts go on from the first leg's."""
    run, saved, returns, _ = first_leg
    after = restored(run.run_dir).counters
    assert after["observation_statistics"]["count"] > saved["count"] > 2 * (1 + 1024) + 1
    assert after["return_statistics"]["count"] > returns["count"] > 2 * 1024


def test_loaded_policy_and_eval_normalise_by_the_checkpoint(first_leg):
    run, _, _, _ = first_leg
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
    assert statistics.frozen and statistics.running.count == 10.0
    with pytest.raises(ValueError, match="do not fit observations of shape"):
        Policy(PPO, CONFIG, RunConfig(env="Pendulum-v1", normalize_observations=True),
               rltpu.envs.make_spec("Pendulum-v1"),
               PPO.build(rltpu.envs.make_spec("Pendulum-v1"), CONFIG, RunConfig()).init(
                   jax.random.key(0)).params,
               observation_statistics={**good, "mean": [1.0]})


def _moments(observations: np.ndarray):
    return observations.mean(0), observations.var(0), len(observations)


def test_exchanged_statistics_are_those_of_every_observation():
    """Two actors' statistics shared as ``SharedStatistics`` shares them, with observations
    normalised between an ask and its answer: each ends with the mean, variance and count of
    every observation either saw, and so does the shared copy; integer leaves stay None."""
    from rltpu.envs.make import ObservationStatistics
    space = gym.spaces.Dict({"x": gym.spaces.Box(-np.inf, np.inf, (3,), np.float64),
                             "b": gym.spaces.MultiBinary(2)})
    rng = np.random.default_rng(0)
    a, b, shared = (ObservationStatistics(space), ObservationStatistics(space),
                    ObservationStatistics(space, count=0.0))
    seen = []

    def feed(statistics, n, loc):
        x = rng.normal(loc, 2.0, (n, 3))
        seen.append(x)
        statistics.normalize({"x": x, "b": rng.integers(0, 2, (n, 2), np.int8)}, batched=True)

    def assert_all_seen(statistics):
        everything = np.concatenate(seen)
        rms = statistics.running["x"]
        np.testing.assert_allclose((rms.mean, rms.var), _moments(everything)[:2], rtol=1e-12)
        assert rms.count == len(everything) and statistics.running["b"] is None

    feed(a, 5, 1.0)
    feed(b, 7, -3.0)
    shared.add(a.exchange(None))  # (nothing shared yet: a keeps its own)
    feed(b, 4, 2.0)
    shared.add(b.exchange(shared.moments()))
    assert_all_seen(b)  # a's 5, handed over, and its own 11
    feed(a, 3, 0.0)
    asked = shared.moments()
    feed(a, 6, 5.0)  # (after the ask, before the answer)
    shared.add(a.exchange(asked))
    assert_all_seen(a)
    assert_all_seen(shared)
    assert shared.state()["b"] is None and shared.state()["x"]["count"] == 25.0
    assert a.exchange(shared.moments())["x"]["count"] == 0  # nothing new since


class _Recorded:
    """Stands in for ``NormalizeReward``'s ``return_rms``: keeps every batch of returns."""

    var = 1.0

    def __init__(self):
        self.batches = []

    def update(self, returns):
        self.batches.append(np.array(returns, np.float64))


def test_ray_actors_share_statistics_of_all_their_observations_and_returns(ray_local):
    """Two real Ray actors stepping Pendulum at different rates, with observations and
    rewards normalised, their statistics shared by the learner loop's ``SharedStatistics``
    while they step: after the last exchange the shared statistics and each actor's are
    those of every observation either normalised and of every discounted return either
    scaled rewards by (replayed by a twin env without normalisation)."""
    import ray

    from rltpu.driver import SharedStatistics
    from rltpu.env_actor import StatisticsAccess

    @ray.remote
    class Stepper(StatisticsAccess):
        def __init__(self, seed):
            self.env, _ = rltpu.envs.make("Pendulum-v1", 2, seed, normalize_observations=True,
                                          reward_discount=0.99)
            twin, _ = rltpu.envs.make("Pendulum-v1", 2, seed)
            self.twin = gym.wrappers.vector.NormalizeReward(twin, gamma=0.99)
            self.twin.return_rms = self.returns = _Recorded()
            self.raw = [twin.first_observation]
            self.rng = np.random.default_rng(seed)

        def step(self, n):
            for _ in range(n):
                action = self.rng.uniform(-2, 2, (2, 1)).astype(np.float32)
                self.env.step(action)
                self.raw.append(self.twin.step(action)[0])
            return np.concatenate(self.raw), np.concatenate(self.returns.batches)

        def return_statistics(self):
            from rltpu.envs.make import _statistics
            return _statistics(self.env)["return_statistics"].state()

    actors = [Stepper.remote(0), Stepper.remote(1)]
    kept = rltpu.envs.shared_statistics(gym.make("Pendulum-v1").observation_space, True, True)
    shared = SharedStatistics(kept, actors, every_s=0.0)
    assert shared.state() == {}
    for n0, n1 in ((130, 5), (10, 240), (0, 25), (70, 0)):  # (past 200 steps: resets too)
        actors[0].step.remote(n0)
        actors[1].step.remote(n1)
        shared.poll()  # (asks between the steps; takes the answers that are in)
    for _ in range(2):  # the last answers in, then one more exchange for both
        ray.get(list(shared._pending))
        shared.poll()
    ray.get(list(shared._pending))
    seen = ray.get([actor.step.remote(0) for actor in actors])
    observations = np.concatenate([o for o, _ in seen])
    assert len(observations) == 2 * (1 + 210) + 2 * (1 + 270)
    returns = np.concatenate([r for _, r in seen])
    assert len(returns) == 2 * (210 - 1 + 270 - 1)  # (the step after a reset adds none)
    everyone = shared.state()
    for kind, values, actor_states in (
            ("observation_statistics", observations.astype(np.float64),
             [a.observation_statistics.remote() for a in actors]),
            ("return_statistics", returns, [a.return_statistics.remote() for a in actors])):
        mean, var, count = _moments(values)
        for state in [everyone[kind], *ray.get(actor_states)]:
            assert state["count"] == count, kind
            np.testing.assert_allclose(state["mean"], mean, rtol=1e-4, atol=1e-6)
            np.testing.assert_allclose(state["var"], var, rtol=1e-4)


def test_resumed_statistics_that_do_not_fit_are_left_out_with_a_warning(capsys):
    """A checkpoint's statistics of one kind that do not fit leave that kind to the actors'
    own, with one warning; the kind that fits is loaded."""
    from rltpu.driver import _resumed_statistics
    kept = rltpu.envs.shared_statistics(gym.make("Pendulum-v1").observation_space, True, True)
    returns = {"mean": -5.0, "var": 4.0, "count": 30.0}
    resume = checkpoint.Restored(
        step=3, state=None, config={}, path="run/checkpoints/3", skipped=(),
        counters={"observation_statistics": {"mean": [0.0] * 2, "var": [1.0] * 2, "count": 9.0},
                  "return_statistics": returns})
    assert _resumed_statistics(kept, resume) == {"return_statistics": returns}
    assert kept["return_statistics"].state() == returns
    assert kept["observation_statistics"].count == 0
    warning = capsys.readouterr().err
    assert "checkpoint run/checkpoints/3: observation statistics of shape (2,)" in warning
    assert "the actors start observation statistics of their own" in warning
    assert _resumed_statistics(kept, None) == {}
