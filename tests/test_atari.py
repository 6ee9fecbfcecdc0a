"""Atari on real ALE games: the preprocessing (shape, dtype, frame stacking, sticky actions),
backends that agree, the convolutional torsos, uint8 trajectories, presets."""
import dataclasses
import importlib.util
import os

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("ale_py")

from rltpu import agents  # noqa: E402
from rltpu import envs  # noqa: E402
from rltpu.agents import networks, presets  # noqa: E402
from rltpu.envs import atari  # noqa: E402
from rltpu.config import RunConfig  # noqa: E402

GAME = "ALE/Pong-v5"
NO_STICKY = atari.AtariSettings(sticky_actions=0.0)


def _steps(env, actions):
    """Steps ``env`` through ``actions`` [T, B]; returns observations [T + 1, B, ...], rewards."""
    observations, rewards = [env.reset(seed=0)[0]], []
    for action in actions:
        observation, reward, *_ = env.step(action)
        observations.append(observation)
        rewards.append(reward)
    return np.stack(observations), np.stack(rewards)


@pytest.mark.parametrize("backend", ["ale", "gymnasium"])
def test_observations_are_uint8_stacks_of_84x84_grey_frames(backend):
    env, spec = envs.make(GAME, 2, seed=0, backend=backend)
    assert spec.observation_space.shape == (4, 84, 84) and spec.observation_space.dtype == np.uint8
    assert spec.action_space.n == 6  # Pong's minimal action set
    first = env.first_observation
    assert first.shape == (2, 4, 84, 84) and first.dtype == np.uint8
    # A new episode's stack is zero frames and the first screen, last.
    assert not first[:, :3].any() and first[:, 3].mean() > 50
    previous = first
    for _ in range(5):
        observation, reward, terminated, truncated, info = env.step(np.array([2, 3]))
        assert observation.dtype == np.uint8 and reward.shape == (2,)
        # Frame stacking: each step drops the oldest frame and appends the new screen.
        np.testing.assert_array_equal(observation[:, :3], previous[:, 1:])
        previous = observation
    assert previous.reshape(2, 4, -1).any(axis=-1).all()  # the zero frames are gone
    env.close()
    _, full = envs.make(GAME, 1, seed=0, backend=backend, full_action_space=True)
    assert full.action_space.n == 18


def test_ale_and_gymnasium_backends_give_the_same_observations():
    """Without sticky actions the game is deterministic: the C++ preprocessing must then
    match gymnasium's wrappers pixel for pixel, episode starts included."""
    actions = np.random.default_rng(0).integers(0, 6, (120, 2))
    reference = atari.make_vector(GAME, 2, "gymnasium", NO_STICKY)
    fast = atari.make_vector(GAME, 2, "ale", NO_STICKY)
    ref_obs, ref_rewards = _steps(reference, actions)
    obs, rewards = _steps(fast, actions)
    np.testing.assert_array_equal(obs, ref_obs)
    np.testing.assert_array_equal(rewards, ref_rewards)
    assert ref_obs.dtype == obs.dtype == np.uint8
    assert np.abs(ref_rewards).sum() > 0  # points were scored: the frames changed meaningfully


class _OneNoopFrameReset(gym.Wrapper):
    """Plays one no-op frame after each reset, as EnvPool's reset always does."""

    def reset(self, **kwargs):
        self.env.reset(**kwargs)
        observation, _, _, _, info = self.env.step(0)
        return observation, info


def _reference_with_envpool_reset(settings: atari.AtariSettings, num_envs: int):
    """The gymnasium backend (``atari.make_one``'s wrappers) with EnvPool's start and its
    time limit, which counts agent steps (ALE's counts emulator frames)."""
    def one():
        env = gym.make(GAME, frameskip=1, repeat_action_probability=settings.sticky_actions)
        env = gym.wrappers.AtariPreprocessing(
            _OneNoopFrameReset(env), noop_max=0, frame_skip=settings.frame_skip,
            screen_size=settings.screen_size, terminal_on_life_loss=False)
        env = gym.wrappers.TimeLimit(env, settings.max_episode_frames // settings.frame_skip)
        return gym.wrappers.FrameStackObservation(env, settings.stack, padding_type="zero")
    return gym.vector.SyncVectorEnv([one] * num_envs)


@pytest.mark.filterwarnings("ignore:EnvPool seeds are fixed")
def test_envpool_backend_gives_the_references_observations_bit_for_bit():
    """EnvPool's preprocessing (frame skip, max-pool, grey, resize, stack, zero padding after
    each episode's start) is the reference's exactly; its reset plays one no-op frame,
    which the reference is given here. Episodes are cut at 40 steps so two of them, and
    the autoreset between, are compared."""
    if importlib.util.find_spec("envpool") is None:
        pytest.skip("envpool is not installed")
    settings = dataclasses.replace(NO_STICKY, max_episode_frames=160)
    actions = np.random.default_rng(0).integers(0, 6, (60, 2))
    ref_obs, ref_rewards = _steps(_reference_with_envpool_reset(settings, 2), actions)
    environment = dict(os.environ)
    obs, rewards = _steps(atari.make_vector(GAME, 2, "envpool", settings), actions)
    assert dict(os.environ) == environment  # envpool's import sets MPLBACKEND and more
    assert obs.shape == (61, 2, 4, 84, 84) and obs.dtype == np.uint8
    assert not obs[41, :, :3].any() and obs[41, :, 3].all(axis=(1, 2)).any()  # a new episode
    np.testing.assert_array_equal(obs, ref_obs)
    np.testing.assert_array_equal(rewards, ref_rewards)
    # Without the no-op frame the reference is one emulator frame ahead: not equal.
    plain, _ = _steps(atari.make_vector(GAME, 2, "gymnasium", settings), actions)
    assert not np.array_equal(plain, obs)


@pytest.mark.parametrize("backend", ["ale", "gymnasium"])
def test_sticky_actions_make_the_same_actions_diverge(backend):
    """Two envs with different seeds, given the same actions: identical without sticky
    actions (ALE is deterministic), different with Machado et al.'s 0.25."""
    actions = np.repeat(np.random.default_rng(1).integers(0, 6, (60, 1)), 2, axis=1)
    plain, _ = _steps(atari.make_vector(GAME, 2, backend, NO_STICKY), actions)
    np.testing.assert_array_equal(plain[:, 0], plain[:, 1])
    sticky, _ = _steps(atari.make_vector(GAME, 2, backend, atari.AtariSettings()), actions)
    assert atari.AtariSettings().sticky_actions == 0.25
    assert not np.array_equal(sticky[:, 0], sticky[:, 1])


def test_bad_env_options_are_clear_errors():
    with pytest.raises(ValueError, match="--env-backend ale is for Atari games"):
        envs.make_spec("CartPole-v1", backend="ale")
    with pytest.raises(ValueError, match="--env-backend 'sdl' is not one of auto, gymnasium, ale"):
        envs.make_spec(GAME, backend="sdl")
    with pytest.raises(ValueError, match="--full-action-space is for Atari games"):
        envs.make_spec("CartPole-v1", full_action_space=True)
    with pytest.raises(ValueError, match="unknown env 'ALE/Pongg-v5'.*ALE/Pong-v5"):
        envs.make_spec("ALE/Pongg-v5")


def test_evaluation_env_has_the_training_preprocessing():
    env = envs.make_one(GAME)
    observation, _ = env.reset(seed=0)
    assert observation.shape == (4, 84, 84) and observation.dtype == np.uint8
    env.close()


def _param_count(params) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))


# By hand: Nature torso 4*32*64+32 + 32*64*16+64 + 64*64*9+64 + 3136*512+512 = 1,684,128;
# IMPALA ResNet per section conv c_in*c*9+c and 4 convs c*c*9+c (c = 16, 32, 32 from 4
# frames: 9,872 + 41,632 + 46,240), 84 -> 42 -> 21 -> 11 pixels, dense 11*11*32*256+256:
# 1,089,232. Heads on 6 actions: policy 6*(d+1), value d+1.
EXPECTED_PARAMS = {"nature": 1_684_128 + 7 * 513, "impala_resnet": 1_089_232 + 7 * 257}


@pytest.mark.parametrize("lib", ["flax", "haiku"])
@pytest.mark.parametrize("torso", ["nature", "impala_resnet"])
def test_conv_torsos_have_the_papers_sizes(torso, lib):
    nets = networks.actor_critic(envs.make_spec(GAME), (), lib, torso)
    shapes = jax.eval_shape(nets.init, jax.random.key(0), np.zeros((1, 4, 84, 84), np.uint8))
    assert _param_count(shapes) == EXPECTED_PARAMS[torso]


@pytest.mark.parametrize("torso,lib", [("impala_resnet", "flax"), ("nature", "haiku")])
def test_conv_torsos_share_one_torso_and_scale_uint8_on_device(torso, lib):
    nets = networks.actor_critic(envs.make_spec(GAME), (), lib, torso)
    observation = np.random.default_rng(0).integers(0, 256, (3, 2, 4, 84, 84), np.uint8)
    params = jax.jit(nets.init)(jax.random.key(0), observation[0])

    @jax.jit
    def outputs(params, observation):
        # The network takes uint8 and does the /255 itself: frames already scaled (and
        # divided again) must give something else.
        already_scaled = nets.policy(params, observation.astype(jnp.float32) / 255)
        return nets.policy_and_value(params, observation), nets.policy(params, observation), already_scaled

    (logits, value), policy_only, already_scaled = outputs(params, observation)
    assert logits.shape == (3, 2, 6) and value.shape == (3, 2)
    np.testing.assert_allclose(policy_only, logits, rtol=1e-5)
    assert not np.allclose(already_scaled, logits, atol=1e-6)
    assert jax.make_jaxpr(nets.policy)(params, observation).in_avals[-1].dtype == jnp.uint8


def test_dqn_nature_network_has_the_papers_size():
    q = networks.q_network(envs.make_spec(GAME), (), "flax", "nature")
    shapes = jax.eval_shape(q.init, jax.random.key(0), np.zeros((1, 4, 84, 84), np.uint8))
    assert _param_count(shapes) == 1_684_128 + 6 * 513
    assert jax.eval_shape(q.apply, shapes, np.zeros((5, 4, 84, 84), np.uint8)).shape == (5, 6)


def test_rewards_are_clipped_in_the_agent_not_the_env():
    agent = agents.get("impala")
    run = RunConfig(env="CartPole-v1", unroll_length=4, batch_size=8, envs_per_actor=8)
    spec = envs.make_spec("CartPole-v1")
    from rltpu.learner import example_trajectory
    losses = {}
    for clip in (False, True):
        fns = agent.build(spec, agent.Config(clip_rewards=clip, hidden_sizes=(8,)), run)
        state = jax.jit(fns.init)(jax.random.key(0))
        update = jax.jit(fns.update)
        batch = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype),
                             example_trajectory(fns, spec, state.params, 4, 8))
        batch = batch._replace(reward=np.full((4, 8), 7.0, np.float32),
                               valid=np.ones((4, 8), bool))
        big = batch._replace(reward=np.full((4, 8), 1.0, np.float32))
        losses[clip] = [float(update(state, b)[1]["baseline_loss"]) for b in (batch, big)]
    assert losses[True][0] == pytest.approx(losses[True][1])  # 7 clipped to 1
    assert losses[False][0] > 10 * losses[False][1]


def test_uint8_stays_uint8_from_the_actor_to_the_learners_devices():
    from rltpu import devices
    from rltpu.actor import RolloutActor
    from rltpu.learner import example_trajectory
    agent = agents.get("impala")
    config = agent.Config(torso="nature", clip_rewards=True)
    run = RunConfig(env=GAME, num_actors=1, envs_per_actor=8, unroll_length=3, batch_size=8)
    spec = envs.make_spec(GAME)
    fns = agent.build(spec, config, run)
    params = jax.jit(fns.init)(jax.random.key(0)).params
    actor = RolloutActor(0, agent, config, run, seed=0)
    actor.set_params(0, devices.to_host(params))
    trajectory = actor.unroll_with_current().trajectory
    assert trajectory.observation.dtype == np.uint8
    assert trajectory.observation.shape == (4, 8, 4, 84, 84)
    # What the learner compiles its update for, and the sharded batch it is given.
    assert example_trajectory(fns, spec, params, 3, 8).observation.dtype == np.uint8
    device_batch = devices.shard_batch(trajectory, devices.make_mesh(8), 1)
    assert device_batch.observation.dtype == jnp.uint8
    assert len(device_batch.observation.sharding.device_set) == 8


def test_presets_fill_defaults_and_build():
    for name, preset in presets.PRESETS.items():
        if not name.endswith("-atari"):
            continue  # tests/test_bench.py builds the MinAtar and MuJoCo ones
        agent = agents.get(preset.agent)
        config = agent.Config(**preset.agent_config)
        run = RunConfig(agent=preset.agent, **preset.run)
        assert config.clip_rewards and config.torso != "mlp", name
        assert run.env == GAME and run.target_return is None
        agent.build(envs.make_spec(run.env), config, run)  # valid together
    impala = presets.get("impala-atari")
    assert (impala.run["unroll_length"], impala.run["batch_size"]) == (20, 32)
    assert impala.agent_config["learning_rate"] == 6e-4
    assert (impala.agent_config["core"], impala.agent_config["core_size"]) == ("lstm", 256)
    with pytest.raises(ValueError, match="unknown preset 'atari'; valid: dqn-atari, impala-atari, impala-minatar, ppo-atari, ppo-minatar, ppo-minatar-blines, ppo-mujoco"):
        presets.get("atari")


def test_config_rejects_an_unknown_torso():
    for name in ("impala", "ppo", "dqn"):
        with pytest.raises(ValueError, match="--torso 'resnet50' is not one of mlp, nature, impala_resnet"):
            agents.get(name).Config(torso="resnet50")
        for torso in ("mlp", "nature", "impala_resnet"):  # and takes each valid one
            assert agents.get(name).Config(torso=torso).torso == torso


@pytest.mark.slow
def test_impala_atari_preset_runs_end_to_end_on_ray(tmp_path, ray_tmpdir):
    """The impala-atari preset (RMSProp, clipped rewards, unroll 20) on Pong for a few
    thousand env steps with real Ray; explicit flags shrink the batch and take the Nature
    torso on one learner device: on 8 virtual CPU devices sharing 2 cores a ResNet update
    takes minutes (the ResNet's forward pass is tested above)."""
    import json
    import os
    import subprocess
    import sys
    run_dir = tmp_path / "run"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "JAX_NUM_CPU_DEVICES": "8", "RAY_ADDRESS": "", "RAY_TMPDIR": ray_tmpdir,
           "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, "-m", "rltpu.cli", "train", "--preset", "impala-atari",
         "--env", GAME, "--num-actors", "1", "--envs-per-actor", "8", "--batch-size", "8",
         "--torso", "nature", "--num-devices", "1",
         "--total-env-steps", "2000", "--run-dir", str(run_dir), "--quiet"],
        env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    config = json.loads((run_dir / "config.json").read_text())
    assert config["agent"]["torso"] == "nature" and config["agent"]["clip_rewards"]
    assert config["agent"]["optimizer"] == "rmsprop" and config["run"]["unroll_length"] == 20
    assert config["run"]["batch_size"] == 8  # the flags, not the preset's 32 and ResNet
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["agent"] == "impala" and summary["env"] == GAME
    assert summary["env_steps"] >= 2000 and summary["learner_updates"] >= 2000 // (20 * 8)
    assert summary["rejected_unrolls"] == 0 and summary["skipped_updates"] == 0
    assert os.path.isdir(summary["checkpoint"])
