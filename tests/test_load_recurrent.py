"""``rltpu.load`` of a recurrent run: ``Policy.act`` keeps the core state per batch row and
acts exactly as the rollout actor does on the same observations and keys; ``reset()``
restores the initial state; ``rltpu eval`` plays a recurrent run through it."""
import dataclasses

import gymnasium as gym
import jax
import numpy as np
import pytest

import rltpu
from rltpu import agents, evaluate, recurrent
from rltpu.actor import RolloutActor
from rltpu.config import RunConfig
from rltpu.types import StepContext

PPO = agents.get("ppo")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, ray_local):
    """A short PPO-LSTM run on CartPoleNoVel-v1 (one actor, a few thousand steps)."""
    run = RunConfig(run_dir=str(tmp_path_factory.mktemp("load") / "run"), env="CartPoleNoVel-v1",
                    num_actors=1, total_env_steps=3000, target_return=None,
                    compilation_cache=None)
    return rltpu.train(PPO, PPO.Config(core="lstm", core_size=16), run, quiet=True)


def test_policy_acts_as_the_rollout_actor_with_the_state_carried(trained):
    policy = rltpu.load(trained["run_dir"], seed=7)
    assert policy.recurrent and policy.core_state is None
    # The actor's path: the same agent, params and seed (its sampling keys split as
    # Policy's do), four CartPoleNoVel envs, two unrolls of 40 steps: episodes end and
    # start inside them, and the state crosses from one unroll into the next.
    run = dataclasses.replace(policy.run, envs_per_actor=4, unroll_length=40, num_actors=1)
    actor = RolloutActor(0, policy.agent, policy.agent_config, run, seed=7)
    actor.set_params(0, policy.params)
    unrolls = [actor.unroll_with_current().trajectory for _ in range(2)]
    starts = 0
    reward, episode_start = None, None
    for trajectory in unrolls:
        for t in range(40):
            actions = policy.act(trajectory.observation[t], greedy=False, reward=reward,
                                 episode_start=episode_start)
            np.testing.assert_array_equal(actions, trajectory.action[t])
            # The next observation starts an episode after an autoreset step (invalid).
            reward, episode_start = trajectory.reward[t], ~trajectory.valid[t]
            starts += int(episode_start.sum())
    assert starts >= 4, "episodes must start inside the unrolls for the test to mean much"
    # What the policy kept is what the actor kept, to the last bit.
    for mine, theirs in zip(jax.tree.leaves(policy.core_state), jax.tree.leaves(actor._core_state)):
        np.testing.assert_array_equal(np.asarray(mine), np.asarray(theirs))


def test_reset_restores_the_initial_state(trained):
    policy = rltpu.load(trained["run_dir"])
    env = gym.make_vec("CartPoleNoVel-v1", num_envs=3, vectorization_mode="sync")
    observation, _ = env.reset(seed=1)
    actions = policy.act(observation)
    initial = policy.fns.initial_core_state(3)
    for _ in range(5):  # (no CartPole episode ends within 6 steps)
        observation, reward, *_ = env.step(actions)
        actions = policy.act(observation, reward=reward)
    assert any((np.asarray(a) != np.asarray(b)).any()
               for a, b in zip(jax.tree.leaves(policy.core_state), jax.tree.leaves(initial)))
    assert not policy.context.first.any()
    policy.reset()
    assert policy.core_state is None and policy.context is None
    fresh = rltpu.load(trained["run_dir"])
    observation, _ = env.reset(seed=2)
    np.testing.assert_array_equal(policy.act(observation), fresh.act(observation))
    for mine, theirs in zip(jax.tree.leaves(policy.core_state), jax.tree.leaves(fresh.core_state)):
        np.testing.assert_array_equal(np.asarray(mine), np.asarray(theirs))
    # After reset() the first act starts from the initial state and context: the same as
    # stepping the agent by hand from fns.initial_core_state.
    policy.reset()
    by_hand, _ = jax.jit(policy.fns.greedy_step)(
        policy.params, observation, jax.random.key(0), initial,
        recurrent.initial_context(policy.spec, 3))
    np.testing.assert_array_equal(policy.act(observation), np.asarray(by_hand.action))
    env.close()


def test_recurrent_act_refuses_what_it_cannot_carry(trained):
    policy = rltpu.load(trained["run_dir"])
    observation = np.zeros((2, 2), np.float32)
    policy.act(observation, greedy=False)
    kept, key = policy.context, policy._key
    with pytest.raises(ValueError, match="is recurrent: pass reward="):
        policy.act(observation, greedy=False)
    assert policy.context is kept and policy._key is key  # a refused call changes nothing
    with pytest.raises(ValueError, match="a batch of 3 observations: this policy keeps the core "
                       "states of 2 envs; call reset()"):
        policy.act(np.zeros((3, 2), np.float32), reward=0.0)
    # Rows that start an episode need no reward; reset() allows another batch size.
    policy.act(observation, episode_start=True)
    policy.reset()
    assert policy.act(np.zeros(2, np.float32)) in (0, 1)


def test_rltpu_eval_plays_a_recurrent_run_with_the_policy(trained):
    policy = rltpu.load(trained["run_dir"])
    report = evaluate.play(policy, episodes=2, seed=5)
    # The reference: the greedy step by hand, the state carried, one episode at a time.
    greedy = jax.jit(policy.fns.greedy_step)
    env = gym.make("CartPoleNoVel-v1")
    lengths = []
    for i in range(2):
        observation, _ = env.reset(seed=5 + i)
        core = policy.fns.initial_core_state(1)
        context = recurrent.initial_context(policy.spec, 1)
        done, length = False, 0
        while not done:
            out, core = greedy(policy.params, observation[None], jax.random.key(0), core, context)
            observation, reward, terminated, truncated, _ = env.step(int(out.action[0]))
            context = StepContext(np.zeros(1, bool), np.asarray(out.action, np.int32),
                                  np.float32([reward]))
            done, length = terminated or truncated, length + 1
        lengths.append(length)
    assert report["lengths"] == lengths and report["checkpoint"] == trained["learner_updates"]
