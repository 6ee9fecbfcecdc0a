"""``rltpu.load``: a trained run's policy acts as the agent's greedy step on the restored
params, for one observation and for a batch; a run directory never decides what code is
imported; and the run's config.json passed back as ``--config`` gives the same settings."""
import dataclasses
import json
import os
import shutil
import subprocess
import sys

import gymnasium as gym
import jax
import numpy as np
import pytest

import rltpu
from rltpu import agents, checkpoint, envs
from rltpu.config import RunConfig

IMPALA = agents.get("impala")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, ray_local):
    """A short CartPole run (one actor, a few thousand steps): its summary."""
    run = RunConfig(run_dir=str(tmp_path_factory.mktemp("load") / "run"), num_actors=1,
                    total_env_steps=3000, target_return=None, compilation_cache=None)
    return rltpu.train(IMPALA, IMPALA.Config(), run, quiet=True)


def observations(count: int) -> np.ndarray:
    env = gym.make("CartPole-v1")
    batch = [env.reset(seed=i)[0] for i in range(count)]
    # States the learner has seen little of, so that the two actions' logits differ more.
    batch += [np.array([0.5, -1.0, 0.15, 1.5], np.float32), np.array([-2.0, 1.5, -0.2, -2.0], np.float32)]
    return np.stack(batch)


def test_load_acts_as_greedy_step_on_the_restored_params(trained):
    policy = rltpu.load(trained["run_dir"])
    spec = envs.make_spec("CartPole-v1")
    fns = IMPALA.build(spec, IMPALA.Config(), RunConfig())
    restored = checkpoint.restore(trained["run_dir"], fns.init)
    assert policy.checkpoint == restored.step == trained["learner_updates"]
    for mine, theirs in zip(jax.tree.leaves(policy.params), jax.tree.leaves(restored.state.params)):
        np.testing.assert_array_equal(np.asarray(mine), np.asarray(theirs))

    batch = observations(30)
    expected = np.asarray(fns.greedy_step(restored.state.params, batch, jax.random.key(0)).action)
    actions = policy.act(batch)
    assert actions.shape == (32,) and actions.dtype == expected.dtype
    np.testing.assert_array_equal(actions, expected)
    assert len(set(expected.tolist())) == 2, "a policy that always pushes one way tests less"
    for observation, action in zip(batch, expected):
        single = policy.act(observation)
        assert np.shape(single) == () and single == action
    # float64 observations (a raw env's) are cast to the spec's float32.
    np.testing.assert_array_equal(policy.act(batch.astype(np.float64)), expected)
    # Sampled actions: valid ones, from the behaviour policy, reproducible with the seed
    # (greedy actions draw nothing from it), different for another seed.
    sampled = policy.act(batch, greedy=False)
    assert sampled.shape == (32,) and set(sampled.tolist()) <= {0, 1}
    np.testing.assert_array_equal(rltpu.load(trained["run_dir"]).act(batch, greedy=False), sampled)
    assert (rltpu.load(trained["run_dir"], seed=1).act(batch, greedy=False) != sampled).any()
    assert (policy.act(batch, greedy=False) != sampled).any()  # the key moves on
    with pytest.raises(ValueError, match=r"observation of shape \(3,\): the policy takes \(4,\)"):
        policy.act(np.zeros(3))


def test_load_of_an_older_checkpoint(trained):
    steps, _ = checkpoint.list_checkpoints(trained["run_dir"])
    assert rltpu.load(trained["run_dir"], checkpoint=steps[-1]).checkpoint == steps[-1]
    with pytest.raises(ValueError, match="no checkpoint 123456"):
        rltpu.load(trained["run_dir"], checkpoint=123456)


def copy_with(run_dir: str, tmp_path, **run_values) -> str:
    """A copy of a run directory whose config.json's run settings are changed."""
    copy = str(tmp_path / "copy")
    shutil.copytree(run_dir, copy)
    path = os.path.join(copy, "config.json")
    with open(path) as f:
        config = json.load(f)
    config["run"].update(run_values)
    with open(path, "w") as f:
        json.dump(config, f)
    return copy


def test_a_run_directory_never_decides_what_code_is_imported(trained, tmp_path):
    sentinel = "tests.load_sentinel_never_imported"
    copy = copy_with(trained["run_dir"], tmp_path, agent=f"{sentinel}:Agent")
    with pytest.raises(ValueError, match=f"agent '{sentinel}:Agent' is not a built-in agent, and a "
                       "run directory never decides what code is imported: pass it"):
        rltpu.load(copy)
    assert sentinel not in sys.modules
    # Passed by the caller, the agent is used.
    policy = rltpu.load(copy, agent=IMPALA)
    np.testing.assert_array_equal(policy.act(observations(4)),
                                  rltpu.load(trained["run_dir"]).act(observations(4)))

    copy_env = copy_with(trained["run_dir"], tmp_path / "env", env=f"{sentinel}:Env")
    with pytest.raises(ValueError, match=f"env '{sentinel}:Env' is a module path"):
        rltpu.load(copy_env)
    assert sentinel not in sys.modules
    assert rltpu.load(copy_env, env="CartPole-v1").spec.env_id == "CartPole-v1"


def test_config_json_passed_back_repeats_the_run(trained, tmp_path):
    env = {**os.environ, "RAY_ADDRESS": "",
           "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}
    config_json = os.path.join(trained["run_dir"], "config.json")
    result = subprocess.run([sys.executable, "-m", "rltpu.cli", "train", "--config", config_json,
                             "--print-config"], env=env, capture_output=True, text=True,
                            timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    with open(config_json) as f:
        saved = json.load(f)
    printed = json.loads(result.stdout)
    # Every setting but the run directory, which each run chooses anew.
    assert printed["agent"] == saved["agent"]
    assert printed["run"] == {**saved["run"], "run_dir": None}
    assert dataclasses.asdict(RunConfig(**{**saved["run"], "run_dir": None})) == printed["run"]


def test_rltpu_eval_of_a_run_of_an_agent_that_is_not_built_in(trained, tmp_path):
    copy = copy_with(trained["run_dir"], tmp_path, agent="tests.load_sentinel_never_imported:A")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}

    def rltpu_eval(*args):
        return subprocess.run([sys.executable, "-m", "rltpu.cli", "eval", copy, "--episodes", "2",
                               *args], env=env, capture_output=True, text=True, timeout=300,
                              cwd=tmp_path)

    refused = rltpu_eval()
    assert refused.returncode == 2, refused.stderr
    (line,) = refused.stderr.strip().splitlines()
    assert line.startswith(f"rltpu: error: {copy}: its config.json names agent "
                           "'tests.load_sentinel_never_imported:A'") and "--trust-run-code" in line
    played = rltpu_eval("--agent", "rltpu.agents.impala:IMPALA")
    assert played.returncode == 0, played.stderr[-3000:]
    report = json.loads(played.stdout)
    assert report["checkpoint"] == trained["learner_updates"] and len(report["returns"]) == 2
def test_config_json_names_the_agent_trained_not_runconfigs_default(tmp_path):
    """From Python the agent is an object and RunConfig.agent stays "impala" unless set:
    config.json must name the agent trained, or rltpu.load builds the wrong one."""
    from examples.a2c import A2C
    ppo = agents.get("ppo")
    # (validate claims and locks each run directory: one each, released after)
    for agent, run, named in [(ppo, RunConfig(run_dir=str(tmp_path / "ppo")), "ppo"),
                              (A2C(), RunConfig(run_dir=str(tmp_path / "a2c")), "examples.a2c:A2C"),
                              (A2C(), RunConfig(agent="examples.a2c:A2C",
                                                run_dir=str(tmp_path / "a2c-named")),
                               "examples.a2c:A2C")]:
        plan = rltpu.validate(agent, agent.Config(), run)
        assert plan.run.agent == run.agent and plan.config()["run"]["agent"] == named
        plan.run_dir_lock.release()
