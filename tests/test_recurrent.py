"""Recurrent agents: the actor keeps and records core states, the learner replays an unroll
exactly, cores reset at episode starts, Anakin and evaluation carry the state, and the
partially observed CartPoleNoVel-v1 is CartPole without its velocities."""
import dataclasses
import json
import os

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rltpu import agents, checkpoint, checkpointer, devices, envs, evaluate, recurrent
from rltpu.actor import RolloutActor
from rltpu.agents import cores
from rltpu.config import RunConfig
from rltpu.learner import Learner, example_trajectory
from rltpu.types import EnvSpec, StepContext

CORE_CASES = [("flax", "lstm"), ("haiku", "gru"), ("haiku", "lstm"), ("flax", "gru")]


def recurrent_actor(agent_name, lib, core, env_id="rltpu.envs.fake:CountingEnv", B=3, T=7):
    agent = agents.get(agent_name)
    config = agent.Config(network_lib=lib, core=core, core_size=8, hidden_sizes=(16,))
    run = RunConfig(env=env_id, envs_per_actor=B, unroll_length=T, batch_size=B)
    actor = RolloutActor(0, agent, config, run, seed=0)
    spec = EnvSpec("fake", actor.env.single_observation_space, actor.env.single_action_space)
    fns = agent.build(spec, config, run)
    params = devices.to_host(jax.jit(fns.init)(jax.random.key(1)).params)
    actor.set_params(0, params)
    return actor, cores.actor_critic_networks(spec, config), fns, params, spec


@pytest.mark.parametrize("lib,core", CORE_CASES)
def test_learner_replays_the_actors_unrolls_exactly(lib, core):
    # CountingEnv ends episodes after 5 steps, so 3 unrolls of 7 cross several episode
    # starts and carry the core state from one unroll into the next.
    actor, networks, _, params, _ = recurrent_actor("impala", lib, core)
    trajectories = [actor.unroll_with_current().trajectory for _ in range(3)]
    replay = jax.jit(lambda p, t: cores.trajectory_outputs(networks, p, t)[0])
    for trajectory in trajectories:
        np.testing.assert_allclose(replay(params, trajectory)[:-1], trajectory.extras["policy"],
                                   rtol=1e-5, atol=1e-6)
    # The first unroll starts every env's episode with a zero state; each next one starts
    # where the previous ended: its step-0 context is the previous unroll's last step.
    first = trajectories[0].start
    assert first.context.first.tolist() == [[True] * 3]
    assert all((leaf == 0).all() for leaf in jax.tree.leaves(first.core_state))
    for before, after in zip(trajectories, trajectories[1:]):
        context = after.start.context
        np.testing.assert_array_equal(context.first[0], ~before.valid[-1])
        np.testing.assert_array_equal(context.prev_action[0], before.action[-1])
        np.testing.assert_array_equal(context.prev_reward[0], before.reward[-1])
    # The carried state matters: replaying unroll 2 from a zero state gives other policies
    # until its envs' next episode start.
    second = trajectories[1]
    zeroed = second._replace(start=second.start._replace(
        core_state=jax.tree.map(np.zeros_like, second.start.core_state)))
    assert not np.allclose(replay(params, zeroed)[0], second.extras["policy"][0], atol=1e-6)


def test_the_core_resets_where_an_episode_starts():
    spec = envs.make_spec("CartPole-v1")
    config = agents.get("ppo").Config(core="lstm", core_size=8)
    networks = cores.actor_critic_networks(spec, config)
    params = networks.init(jax.random.key(0))
    rng = np.random.default_rng(0)
    T, B = 4, 2
    observation = rng.normal(size=(T, B, 4)).astype(np.float32)
    context = StepContext(first=np.array([[False, True], [False, False], [True, False],
                                          [False, False]]),
                          prev_action=rng.integers(0, 2, (T, B)).astype(np.int32),
                          prev_reward=np.ones((T, B), np.float32))
    noise = jax.tree.map(lambda x: rng.normal(size=x.shape).astype(np.float32),
                         networks.initial_state(B))
    (policy_noise, _), _ = networks.unroll(params, observation, noise, context)
    (policy_zero, _), _ = networks.unroll(params, observation, networks.initial_state(B), context)
    # env 1 starts an episode at step 0: the state before it is forgotten
    np.testing.assert_allclose(policy_noise[:, 1], policy_zero[:, 1], atol=1e-6)
    # env 0 remembers it until its episode start at step 2, and forgets it from there on
    assert not np.allclose(policy_noise[:2, 0], policy_zero[:2, 0], atol=1e-4)
    np.testing.assert_allclose(policy_noise[2:, 0], policy_zero[2:, 0], atol=1e-6)
    # the previous action is an input: other actions before step 1 change its policy
    prev_action = context.prev_action.copy()
    prev_action[1] = 1 - prev_action[1]
    flipped = context._replace(prev_action=prev_action)
    (policy_flipped, _), _ = networks.unroll(params, observation, noise, flipped)
    assert not np.allclose(policy_flipped[1, 0], policy_noise[1, 0], atol=1e-6)


@pytest.mark.parametrize("agent_name", ["impala", "ppo"])
def test_example_trajectory_matches_the_actors(agent_name):
    actor, _, fns, params, spec = recurrent_actor(agent_name, "flax", "gru", "CartPole-v1")
    trajectory = actor.unroll_with_current().trajectory
    example = example_trajectory(fns, spec, params, 7, 3)
    assert jax.tree.structure(example) == jax.tree.structure(trajectory)
    for want, got in zip(jax.tree.leaves(example), jax.tree.leaves(trajectory)):
        assert (want.shape, want.dtype) == (got.shape, got.dtype)
    assert trajectory.start.core_state["h"].shape == (1, 3, 8)


def test_feed_forward_agents_are_unchanged():
    actor = RolloutActor(0, agents.get("impala"), agents.get("impala").Config(),
                         RunConfig(envs_per_actor=2, unroll_length=3, batch_size=2), seed=0)
    fns = agents.get("impala").build(envs.make_spec("CartPole-v1"), agents.get("impala").Config(),
                                     RunConfig())
    assert fns.initial_core_state is None and not recurrent.is_recurrent(fns)
    actor.set_params(0, devices.to_host(jax.jit(fns.init)(jax.random.key(0)).params))
    assert actor.unroll_with_current().trajectory.start is None


def test_cartpole_without_velocities():
    no_vel, spec = envs.make("CartPoleNoVel-v1", 3, seed=4)
    full, _ = envs.make("CartPole-v1", 3, seed=4)
    assert spec.observation_space.shape == (2,) and spec.action_space == gym.spaces.Discrete(2)
    np.testing.assert_array_equal(no_vel.first_observation, full.first_observation[:, [0, 2]])
    rng = np.random.default_rng(0)
    lengths = []
    for _ in range(300):
        action = rng.integers(0, 2, 3)
        obs, reward, term, trunc, info = no_vel.step(action)
        full_obs, full_reward, full_term, full_trunc, _ = full.step(action)
        np.testing.assert_array_equal(obs, full_obs[:, [0, 2]])
        np.testing.assert_array_equal(term, full_term)
        if "_episode" in info:
            lengths += info["episode"]["l"][info["_episode"]].tolist()
    assert len(lengths) > 10  # random play ends episodes
    one = envs.make_one("CartPoleNoVel-v1")
    assert one.reset(seed=0)[0].shape == (2,) and one.spec.max_episode_steps == 500
    assert no_vel.unwrapped.max_episode_steps == 500


def test_jax_cartpole_without_velocities():
    """gymnax:CartPoleNoVel-v1 is gymnax's CartPole-v1 seen through position and angle."""
    pytest.importorskip("gymnax")
    from rltpu.envs import jax_envs
    no_vel, spec = jax_envs.make("gymnax:CartPoleNoVel-v1")
    full, _ = jax_envs.make("gymnax:CartPole-v1")
    assert spec.observation_space.shape == (2,) and spec.action_space == gym.spaces.Discrete(2)
    np.testing.assert_array_equal(spec.observation_space.high, np.float32([4.8, 0.41887903]))
    obs, state = no_vel.reset(jax.random.key(7))
    full_obs, full_state = full.reset(jax.random.key(7))
    np.testing.assert_array_equal(obs, full_obs[jnp.array([0, 2])])
    step, full_step = jax.jit(no_vel.step), jax.jit(full.step)
    ends = 0
    for t in range(120):
        key, action = jax.random.key(t), t % 3 % 2  # a pattern that drops the pole
        s, f = step(key, state, action), full_step(key, full_state, action)
        for mine, theirs in ((s.observation, f.observation),
                             (s.final_observation, f.final_observation)):
            np.testing.assert_array_equal(mine, theirs[jnp.array([0, 2])])
        assert (s.reward, s.terminated, s.truncated) == (f.reward, f.terminated, f.truncated)
        state, full_state, ends = s.state, f.state, ends + int(s.terminated)
    assert ends >= 2  # episodes ended (and restarted) on the way


@pytest.mark.parametrize("lib,core", [("flax", "lstm"), ("haiku", "gru")])
def test_recurrent_anakin_eight_devices_equal_one(lib, core):
    pytest.importorskip("gymnax")
    from rltpu import anakin
    from rltpu.envs import jax_envs
    agent = agents.get("ppo")
    env, spec = jax_envs.make("gymnax:CartPole-v1")
    config = agent.Config(network_lib=lib, core=core, core_size=8, hidden_sizes=(16,),
                          num_epochs=2, num_minibatches=2)
    run = RunConfig(mode="anakin", env="gymnax:CartPole-v1", batch_size=16, unroll_length=8)
    fns = agent.build(spec, config, run)
    programs = [anakin.Program(fns, env, devices.make_mesh(n), seed=3, env_seed=5, num_envs=16,
                               unroll_length=8, updates_per_call=2, spec=spec) for n in (1, 8)]
    outputs = [p.run() for p in programs]
    assert outputs[0].env_steps.tolist() == outputs[1].env_steps.tolist()
    assert int(outputs[0].episodes) == int(outputs[1].episodes)
    one, eight = (jax.tree.map(np.asarray, p.env_batch.acting) for p in programs)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), one, eight)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                 devices.to_host(programs[0].state.params), devices.to_host(programs[1].state.params))
    # the core state moved on from zero, and at least one env has started a new episode
    core_state, context = one
    assert all(np.abs(leaf).max() > 0 for leaf in jax.tree.leaves(core_state))
    for name, value in outputs[1].metrics.items():
        assert np.isfinite(value).all(), name


def test_anakin_trajectories_replay_exactly():
    # The policy the learner recomputes from an Anakin trajectory is the one that acted.
    pytest.importorskip("gymnax")
    from rltpu import anakin
    from rltpu.agent import AgentFns
    from rltpu.envs import jax_envs
    agent = agents.get("impala")
    env, spec = jax_envs.make("gymnax:CartPole-v1")
    config = agent.Config(core="lstm", core_size=8, hidden_sizes=(16,))
    fns = agent.build(spec, config, RunConfig(mode="anakin", batch_size=8, unroll_length=32))
    networks = cores.actor_critic_networks(spec, config)

    def update(state, trajectory):  # measures, learns nothing
        policy = cores.trajectory_outputs(networks, state.params, trajectory)[0][:-1]
        error = jnp.abs(policy - trajectory.extras["policy"]).max()
        return state, {"replay_error": error, "starts": jnp.sum(~trajectory.valid)}

    probe = AgentFns(init=fns.init, actor_step=fns.actor_step, update=update,
                     initial_core_state=fns.initial_core_state)
    program = anakin.Program(probe, env, devices.make_mesh(8), 0, 1, num_envs=8, unroll_length=32,
                             updates_per_call=3, spec=spec)
    metrics = program.run().metrics
    assert metrics["starts"].sum() > 3  # episodes started inside the unrolls
    np.testing.assert_allclose(metrics["replay_error"], 0, atol=1e-5)


def test_evaluate_a_recurrent_checkpoint(tmp_path):
    agent = agents.get("impala")
    config = agent.Config(core="lstm", core_size=8)
    run_dir = tmp_path / "run"
    run = RunConfig(env="CartPoleNoVel-v1", run_dir=str(run_dir))
    saved = {"run": dataclasses.asdict(run), "agent": dataclasses.asdict(config)}
    os.makedirs(run_dir)
    (run_dir / "config.json").write_text(json.dumps(saved))
    spec = envs.make_spec("CartPoleNoVel-v1")
    fns = agent.build(spec, config, run)
    learner = Learner(fns, spec, devices.make_mesh(1), 0, run.unroll_length, run.batch_size)
    saver = checkpointer.Checkpointer(str(run_dir), run, saved)
    saver.save(5, learner.state, {"env_steps": 5}, None)
    saver.wait()
    saver.close()
    result = evaluate.evaluate(agent, config, "CartPoleNoVel-v1", str(run_dir), episodes=2, seed=3,
                               run=run)
    # The reference: the same greedy policy played here, the core carried step to step.
    params = checkpoint.restore(str(run_dir), fns.init, 5).state.params
    greedy = jax.jit(fns.greedy_step)
    env = gym.make("CartPoleNoVel-v1")
    lengths = []
    for i in range(2):
        obs, _ = env.reset(seed=3 + i)
        core, context = fns.initial_core_state(1), recurrent.initial_context(spec, 1)
        done, length = False, 0
        while not done:
            out, core = greedy(params, obs[None], jax.random.key(0), core, context)
            obs, reward, terminated, truncated, _ = env.step(int(out.action[0]))
            context = StepContext(np.zeros(1, bool), np.asarray(out.action, np.int32),
                                  np.float32([reward]))
            done, length = terminated or truncated, length + 1
        lengths.append(length)
    assert result["lengths"] == lengths and result["checkpoint"] == 5


def test_recurrent_example_agent_acts_replays_and_updates():
    from examples.recurrent_a2c import RecurrentA2C
    agent = RecurrentA2C()
    config = agent.Config(hidden_size=16)
    run = RunConfig(env="CartPoleNoVel-v1", envs_per_actor=4, unroll_length=30, batch_size=4)
    actor = RolloutActor(0, agent, config, run, seed=0)
    spec = envs.make_spec("CartPoleNoVel-v1")
    fns = agent.build(spec, config, run)
    state = jax.jit(fns.init)(jax.random.key(0))
    actor.set_params(0, devices.to_host(state.params))
    trajectories = [actor.unroll_with_current().trajectory for _ in range(2)]
    assert not trajectories[1].valid.all()  # random play ends episodes within 60 steps
    network_logits = jax.jit(lambda p, t: agent_logits(fns, p, t))
    for trajectory in trajectories:
        np.testing.assert_allclose(network_logits(state.params, trajectory),
                                   trajectory.extras["logits"], rtol=1e-5, atol=1e-6)
    new_state, metrics = jax.jit(fns.update)(state, trajectories[1])
    assert all(np.isfinite(v) for v in metrics.values()) and int(new_state.step) == 1


def agent_logits(fns, params, trajectory):
    """The example's policy replayed through its own actor step, one step at a time."""
    context = recurrent.unroll_context(trajectory)
    core = recurrent.start_core_state(trajectory)
    logits = []
    for t in range(trajectory.action.shape[0]):
        out, core = fns.actor_step(params, trajectory.observation[t], jax.random.key(0), core,
                                   jax.tree.map(lambda x: x[t], context))
        logits.append(out.extras["logits"])
    return jnp.stack(logits)


@pytest.mark.parametrize("lib,torso", [("flax", "nature"), ("haiku", "impala_resnet")])
def test_recurrent_network_on_atari_frames(lib, torso):
    spec = EnvSpec("frames", gym.spaces.Box(0, 255, (4, 84, 84), np.uint8), gym.spaces.Discrete(6))
    config = agents.get("impala").Config(network_lib=lib, torso=torso, core="lstm", core_size=32)
    networks = cores.actor_critic_networks(spec, config)
    params = networks.init(jax.random.key(0))
    T, B = 3, 2
    frames = np.random.default_rng(0).integers(0, 256, (T, B, 4, 84, 84)).astype(np.uint8)
    context = StepContext(np.zeros((T, B), bool), np.ones((T, B), np.int32),
                          np.full((T, B), 5.0, np.float32))
    (logits, values), state = jax.jit(networks.unroll)(params, frames, networks.initial_state(B),
                                                       context)
    assert logits.shape == (T, B, 6) and values.shape == (T, B) and state["c"].shape == (B, 32)
    assert np.isfinite(logits).all() and np.isfinite(values).all()
