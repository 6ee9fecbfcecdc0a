"""Anakin mode: gymnax envs stepped, acted in and learned from in one compiled program.

8 CPU devices give the 1-device result; the trajectories it builds have the Ray actors'
semantics; PPO learns gymnax CartPole-v1; checkpoints resume; bad settings are refused.
"""
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("gymnax")

from rltpu import agents  # noqa: E402
from rltpu.envs import jax_envs  # noqa: E402
import rltpu  # noqa: E402
from rltpu import anakin, checkpoint, devices, evaluate  # noqa: E402
from rltpu.agent import AgentFns  # noqa: E402
from rltpu.config import RunConfig  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL_PPO = dict(num_epochs=2, num_minibatches=2, hidden_sizes=(16,))


def build(agent_name, env_id, num_envs, T, **config):
    agent = agents.get(agent_name)
    env, spec = jax_envs.make(env_id)
    run = RunConfig(mode="anakin", env=env_id, batch_size=num_envs, unroll_length=T)
    return agent.build(spec, agent.Config(**config), run), env


def program(agent_name, num_devices, env_id="gymnax:CartPole-v1", num_envs=16, T=8,
            updates_per_call=1, **config):
    fns, env = build(agent_name, env_id, num_envs, T, **config)
    return anakin.Program(fns, env, devices.make_mesh(num_devices), seed=3, env_seed=5,
                          num_envs=num_envs, unroll_length=T, updates_per_call=updates_per_call)


def test_one_update_on_eight_devices_equals_one_device():
    agent_name, env_id, config = "ppo", "gymnax:CartPole-v1", SMALL_PPO
    assert devices.device_count() == 8, "conftest asks for 8 CPU devices"
    one = program(agent_name, 1, env_id, **config)
    eight = program(agent_name, 8, env_id, **config)
    out_1, out_8 = one.run(), eight.run()
    one_fns, _ = build(agent_name, env_id, 16, 8, **config)

    # The envs really are split: each device steps 2 of the 16.
    shards = eight.env_batch.observation.addressable_shards
    assert len(shards) == 8 and all(s.data.shape[0] == 2 for s in shards)
    # The same envs, actions and episodes (env stepping has no cross-device reduction).
    np.testing.assert_array_equal(devices.to_host(one.env_batch.observation),
                                  np.asarray(eight.env_batch.observation))
    assert out_1.env_steps.tolist() == out_8.env_steps.tolist()
    assert int(out_1.episodes) == int(out_8.episodes)
    # The same update, up to the order of the gradient all-reduce's sums.
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                 devices.to_host(one.state.params), devices.to_host(eight.state.params))
    for name in out_1.metrics:
        np.testing.assert_allclose(out_1.metrics[name], out_8.metrics[name], rtol=1e-4,
                                   atol=1e-6, err_msg=name)
    assert not out_8.metrics["update_skipped"].any()
    initial = devices.to_host(jax.jit(one_fns.init)(jax.random.key(3)).params)
    assert any(not np.allclose(a, b) for a, b in
               zip(jax.tree.leaves(initial), jax.tree.leaves(devices.to_host(eight.state.params))))


class ProbeAgent:
    """A random policy whose ``update`` reports facts about the trajectory it is given."""

    name = "probe"
    Config = agents.get("ppo").Config

    def check_spec(self, spec):
        pass

    def build(self, spec, config, run):
        def init(key):
            from rltpu.types import TrainState
            return TrainState({"w": jnp.zeros(())}, (), key, jnp.zeros((), jnp.int32))

        def actor_step(params, observation, key):
            from rltpu.types import ActorOutput
            action = jax.random.randint(key, observation.shape[:1], 0, spec.action_space.n)
            return ActorOutput(action, {"w": jnp.broadcast_to(params["w"], action.shape)})

        def update(state, trajectory):
            obs, valid = trajectory.observation, trajectory.valid
            done = trajectory.terminated | trajectory.truncated
            ended = done[:-1]
            # CartPole's observation at t + 1 on a valid step moves by tau = 0.02 * x_dot.
            x_moves = obs[1:, :, 0] - obs[:-1, :, 0] - 0.02 * obs[:-1, :, 1]
            metrics = {
                "invalid": jnp.sum(~valid), "done": jnp.sum(done),
                # the step after an episode's end, and only that one, is invalid
                "invalid_after_done": jnp.sum(ended & valid[1:]) + jnp.sum(~ended & ~valid[1:]),
                "reward_on_invalid": jnp.sum(jnp.where(valid, 0.0, trajectory.reward)),
                "successor_error": jnp.max(jnp.where(valid, jnp.abs(x_moves), 0.0)),
                "min_version": trajectory.policy_version.min(),
                "max_version": trajectory.policy_version.max(),
            }
            return state._replace(step=state.step + 1), metrics

        return AgentFns(init=init, actor_step=actor_step, update=update)


def test_trajectories_have_the_ray_actors_semantics():
    env, spec = jax_envs.make("gymnax:CartPole-v1")
    fns = ProbeAgent().build(spec, None, None)
    # A random policy ends CartPole episodes in ~20 steps: many ends in 3 x 64 steps.
    prog = anakin.Program(fns, env, devices.make_mesh(8), 0, 1, num_envs=8, unroll_length=64,
                          updates_per_call=3)
    out = prog.run()
    m = out.metrics
    assert (m["done"] > 10).all()
    assert m["invalid_after_done"].tolist() == [0, 0, 0], "invalid only right after an end"
    assert (m["reward_on_invalid"] == 0).all()
    np.testing.assert_allclose(m["successor_error"], 0, atol=1e-6)  # obs[t + 1] follows obs[t]
    assert m["min_version"].tolist() == m["max_version"].tolist() == [0, 1, 2]
    assert out.env_steps.tolist() == (64 * 8 - m["invalid"]).tolist()
    # Every episode that ended was counted, and its return is its length (reward 1 a step).
    assert int(out.episodes) == int(m["done"].sum())
    returns = anakin.finished_returns(out)
    assert len(returns) == 20 and returns.min() >= 1 and returns.max() <= 500
    assert prog.version == 3


def run_cli(args, tmp_path, timeout=300):
    env = {**os.environ, "RAY_ADDRESS": "", "JAX_NUM_CPU_DEVICES": "8",
           "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "rltpu.cli", "train", "--quiet", *args],
                          env=env, capture_output=True, text=True, timeout=timeout, cwd=tmp_path)


@pytest.mark.slow
def test_ppo_reaches_475_on_gymnax_cartpole(tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli(["--mode", "anakin", "--agent", "ppo", "--env", "gymnax:CartPole-v1",
                      "--batch-size", "16", "--unroll-length", "64", "--num-epochs", "10",
                      "--num-minibatches", "4", "--updates-per-call", "4",
                      "--total-env-steps", "300000", "--run-dir", str(run_dir)], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["mode"] == "anakin" and summary["final_return"] >= 475
    assert summary["time_to_target_s"] is not None and summary["env_steps"] < 300000
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["mean_return"] >= 475 and rows[-1]["env_steps"] == summary["env_steps"]


def small_run(tmp_path, agent_name="ppo", **changes):
    values = dict(mode="anakin", agent=agent_name, env="gymnax:CartPole-v1", batch_size=8,
                  unroll_length=16, updates_per_call=2, target_return=None,
                  total_env_steps=700, checkpoint_every_updates=2,
                  run_dir=str(tmp_path / "run"), num_devices=8)
    return RunConfig(**{**values, **changes})


def test_checkpoint_and_resume(tmp_path, capsys):
    agent = agents.get("ppo")
    config = agent.Config(**SMALL_PPO)
    first = rltpu.train(agent, config, small_run(tmp_path), quiet=True)
    # 700 valid steps take 6 updates of 8 x 16 steps (a few are autoreset steps)
    assert first["learner_updates"] == 6 and 700 <= first["env_steps"] < 6 * 8 * 16
    # config.json and summary.json tie the run to the code and packages that made it
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["provenance"] == first["provenance"] == rltpu.provenance()
    assert saved["provenance"]["jax"] == jax.__version__
    steps, _ = checkpoint.list_checkpoints(first["run_dir"])
    assert steps == [6, 4, 2]

    restored = checkpoint.restore(first["run_dir"], agent.build(
        jax_envs.make("gymnax:CartPole-v1")[1], config, small_run(tmp_path)).init)
    assert restored.step == 6 and restored.counters["env_steps"] == first["env_steps"]
    capsys.readouterr()
    second = rltpu.train(agent, config, small_run(tmp_path, total_env_steps=1100),
                          quiet=True, resume=restored)
    # It went on from checkpoint 6's params (the resume line names their digest).
    assert f"params sha256 {checkpoint.params_digest(restored.state.params)}" in capsys.readouterr().err
    assert second["resumed_from_update"] == 6 and second["learner_updates"] == 10
    assert second["env_steps"] > first["env_steps"]
    assert second["episodes"] >= first["episodes"]
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    markers = [r for r in rows if "resumed_from_update" in r]  # where each resumed leg began
    assert [m["resumed_from_update"] for m in markers] == [6]
    rows = [r for r in rows if r not in markers]
    assert [r["learner_updates"] for r in rows][-1] == 10
    assert rows[0]["learner_updates"] <= 6 < rows[-1]["learner_updates"]
    assert checkpoint.list_checkpoints(first["run_dir"])[0][0] == 10
    # rltpu eval plays the run's own JAX env with the newest checkpoint
    report = evaluate.evaluate(agent, config, "gymnax:CartPole-v1", first["run_dir"], episodes=2)
    assert report["checkpoint"] == 10 and report["returns"] == report["lengths"]  # +1 a step
    assert min(report["lengths"]) >= 1


def test_impala_runs_with_the_ray_modes_outputs(tmp_path):
    agent = agents.get("impala")
    # Pendulum: Gaussian actions, clipped to the env's bounds; 200-step episodes.
    summary = rltpu.train(agent, agent.Config(hidden_sizes=(16,)),
                           small_run(tmp_path, "impala", env="gymnax:Pendulum-v1", num_devices=2,
                                     unroll_length=64, total_env_steps=3000), quiet=True)
    assert summary["agent"] == "impala" and summary["mode"] == "anakin"
    assert summary["learner_updates"] == 6 and summary["skipped_updates"] == 0
    # Pendulum's reward is minus a cost of at most pi^2 + 0.1 * 8^2 + 0.001 * 2^2 per step
    # (angle, speed, clipped torque), at least 0, over 200 steps: a return outside this range
    # is a sum over the wrong steps (or episodes, or envs).
    worst = -200 * (np.pi ** 2 + 0.1 * 8 ** 2 + 0.001 * 2 ** 2)
    assert summary["episodes"] >= 8 and worst <= summary["final_return"] < 0, summary["final_return"]
    on_disk = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert on_disk["env_steps"] == summary["env_steps"]
    row = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    for key in ("env_steps", "env_sps", "mean_return", "learner_updates", "policy_lag", "loss"):
        assert key in row, key
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(tmp_path / "run"))


@pytest.mark.parametrize("changes,message", [
    (dict(env="CartPole-v1"), "--mode anakin needs a JAX env, gymnax:NAME"),
    (dict(env="gymnax:CartPol-v1"), "unknown env 'gymnax:CartPol-v1': 'CartPol-v1' is not a "
                                    "registered gymnax env; did you mean gymnax:CartPole-v1"),
    (dict(mode="ray", envs_per_actor=8), "--env 'gymnax:CartPole-v1' is a JAX env: train it with --mode anakin"),
    (dict(agent="dqn"), "--agent dqn learns from a replay buffer, which --mode anakin does not have"),
    (dict(batch_size=12), "--batch-size 12 is not divisible by the 8 learner devices"),
    (dict(normalize_observations=True), "--normalize-observations is not supported in --mode anakin"),
])
def test_bad_settings_are_refused_before_anything_starts(changes, message, tmp_path):
    run = small_run(tmp_path, **changes)
    agent = agents.get(run.agent)
    with pytest.raises(ValueError) as error:
        rltpu.validate(agent, agent.Config(), run)
    assert message in str(error.value) and "\n" not in str(error.value)
    assert not (tmp_path / "run").exists()


def test_bad_mode_is_one_line_from_the_cli(tmp_path):
    result = run_cli(["--mode", "warp"], tmp_path, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == ("rltpu: error: argument --mode: invalid choice: 'warp' "
                                     "(choose from 'ray', 'anakin')")
