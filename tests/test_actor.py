"""Rollout actors on small fake envs: shapes, dtypes, episode boundaries, versions."""
import jax
import numpy as np
import pytest

from rltpu import agents
from rltpu import devices
from rltpu.actor import RayRolloutActor, RolloutActor
from rltpu.config import RunConfig
from rltpu.transport import ParamStore, UnrollQueue

IMPALA = agents.get("impala")


def run_config(env_id, num_envs, unroll_length):
    return RunConfig(env=env_id, envs_per_actor=num_envs, unroll_length=unroll_length,
                     batch_size=num_envs)


def make_actor(env_id, num_envs=3, unroll_length=7, seed=0):
    run = run_config(env_id, num_envs, unroll_length)
    actor = RolloutActor(0, IMPALA, IMPALA.Config(), run, seed)
    fns = IMPALA.build(actor_spec(actor), IMPALA.Config(), run)
    params = devices.to_host(jax.jit(fns.init)(jax.random.key(0)).params)
    actor.set_params(4, params)
    return actor


def actor_spec(actor):
    from rltpu.types import EnvSpec
    return EnvSpec("fake", actor.env.single_observation_space, actor.env.single_action_space)


def test_shapes_dtypes_and_version():
    unroll = make_actor("rltpu.envs.fake:CountingEnv").unroll_with_current()
    traj = unroll.trajectory
    assert traj.observation.shape == (8, 3, 2) and traj.observation.dtype == np.float32
    assert traj.action.shape == (7, 3) and np.issubdtype(traj.action.dtype, np.integer)
    assert traj.reward.shape == (7, 3) and traj.reward.dtype == np.float32
    for flags in (traj.terminated, traj.truncated, traj.valid):
        assert flags.shape == (7, 3) and flags.dtype == np.bool_
    assert traj.extras["policy"].shape == (7, 3, 2)  # the behaviour policy's logits
    assert traj.policy_version.shape == (7, 3) and (traj.policy_version == 4).all()


def test_termination_and_autoreset_step():
    # CountingEnv terminates after 5 steps; step 5 of the unroll is the autoreset step.
    traj = make_actor("rltpu.envs.fake:CountingEnv").unroll_with_current().trajectory
    step_in_episode = traj.observation[:, 0, 0]
    np.testing.assert_array_equal(step_in_episode, [0, 1, 2, 3, 4, 5, 0, 1])
    np.testing.assert_array_equal(traj.terminated[:, 0], [0, 0, 0, 0, 1, 0, 0])
    np.testing.assert_array_equal(traj.truncated[:, 0], [0] * 7)
    np.testing.assert_array_equal(traj.valid[:, 0], [1, 1, 1, 1, 1, 0, 1])
    # valid rewards are action + 1; the autoreset step's reward is 0
    np.testing.assert_array_equal(traj.reward[:, 0], np.where(traj.valid[:, 0], traj.action[:, 0] + 1, 0))


def test_truncation_is_kept_apart_from_termination():
    traj = make_actor("rltpu.envs.fake:truncated_counting_env").unroll_with_current().trajectory
    np.testing.assert_array_equal(traj.truncated[:, 0], [0, 0, 0, 1, 0, 0, 0])
    np.testing.assert_array_equal(traj.terminated[:, 0], [0] * 7)
    np.testing.assert_array_equal(traj.valid[:, 0], [1, 1, 1, 1, 0, 1, 1])
    # the observation after the truncated step is the episode's true last one (bootstrap)
    assert traj.observation[4, 0, 0] == 4 and traj.observation[5, 0, 0] == 0


def test_episode_stats_and_continuity_across_unrolls():
    actor = make_actor("rltpu.envs.fake:CountingEnv", num_envs=2, unroll_length=4)
    first, second = actor.unroll_with_current(), actor.unroll_with_current()
    # the next unroll starts where the last one ended
    np.testing.assert_array_equal(second.trajectory.observation[0], first.trajectory.observation[-1])
    returns = np.concatenate([first.episode_returns, second.episode_returns])
    lengths = np.concatenate([first.episode_lengths, second.episode_lengths])
    assert len(returns) == 2 and (lengths == 5).all()  # one episode per env finished
    # a return is 5 rewards of action + 1
    valid_rewards = np.concatenate([first.trajectory.reward, second.trajectory.reward])[:5, 0]
    assert returns[0] == pytest.approx(valid_rewards.sum())
    assert first.env_steps + second.env_steps == 2 * 8 - 2  # minus the autoreset steps


def test_ray_actors_tag_versions_and_queue_is_bounded(ray_local):
    ray = ray_local
    run = run_config("rltpu.envs.fake:CountingEnv", 2, 5)
    actors = [RayRolloutActor.remote(i, IMPALA, IMPALA.Config(), run, i) for i in range(2)]
    fns = IMPALA.build(actor_spec(make_actor("rltpu.envs.fake:CountingEnv")), IMPALA.Config(), run)
    params = devices.to_host(jax.jit(fns.init)(jax.random.key(0)).params)
    store = ParamStore()
    store.publish(0, params)
    queue = UnrollQueue(actors, store, max_in_flight=2)
    assert queue.in_flight == 4
    first = queue.get(2)
    assert {int(u.trajectory.policy_version[0, 0]) for u in first} == {0}
    assert queue.in_flight == 4  # each unroll taken is replaced by one request, no more
    store.publish(7, params)
    # the two requests outstanding per actor still carry version 0; later ones carry 7
    by_actor = {0: [], 1: []}
    for _ in range(8):
        (u,) = queue.get(1)
        by_actor[u.actor_id].append(int(u.trajectory.policy_version[0, 0]))
    for versions in by_actor.values():
        assert versions == sorted(versions) and versions.count(0) <= 2
        assert set(versions) <= {0, 7}
    assert 7 in by_actor[0] + by_actor[1]
    assert ray.get(actors[0].pid.remote()) != ray.get(actors[1].pid.remote())
    for a in actors:
        ray.kill(a)
