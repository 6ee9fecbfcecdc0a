"""Faults during training: malformed unrolls, non-finite updates, envs that raise, actors
killed mid-run. Real Ray, real JAX, the real CLI."""
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time

import jax
import numpy as np
import psutil
import pytest

from rltpu import agents
from rltpu import envs
from rltpu import checkpoint, devices
from rltpu.actor import RolloutActor
from rltpu.config import RunConfig
from rltpu.faults import rollout_actor_processes
from rltpu.learner import Learner, example_trajectory, stack_unrolls
from rltpu.validation import (NonFiniteGuard, NonFiniteUpdatesError, UnrollValidator,
                              unroll_example)
from tests.processes import end, ended

IMPALA = agents.get("impala")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
T, B = 7, 3


@pytest.fixture(scope="module")
def parts():
    spec = envs.make_spec("rltpu.envs.fake:CountingEnv")
    fns = IMPALA.build(spec, IMPALA.Config())
    learner = Learner(fns, spec, devices.make_mesh(1), seed=0, unroll_length=T, batch_size=B)
    actor = RolloutActor(0, IMPALA, IMPALA.Config(), RunConfig(env="rltpu.envs.fake:CountingEnv", envs_per_actor=B,
                                                              unroll_length=T, batch_size=B), seed=0)
    actor.set_params(4, learner.host_params())
    return fns, spec, learner, actor


def broken(unroll, **changes):
    return unroll._replace(trajectory=unroll.trajectory._replace(**changes))


def test_malformed_unrolls_are_rejected_counted_and_logged(parts, capsys):
    fns, spec, learner, actor = parts
    example = example_trajectory(fns, spec, learner.state.params, T, 4 * B)
    validator = UnrollValidator(unroll_example(example, B))
    good = actor.unroll_with_current()
    traj = good.trajectory
    nan_reward = traj.reward.copy()
    nan_reward[3, 1] = np.nan
    cases = [
        (broken(good, observation=traj.observation[:, :2]),
         "observation is (8, 2, 2) float32, expected (8, 3, 2) float32"),
        (broken(good, reward=nan_reward), "reward has non-finite values"),
        (broken(good, reward=traj.reward.astype(np.float64)),
         "reward is (7, 3) float64, expected (7, 3) float32"),
        (broken(good, extras={}), "its trajectory's fields differ from the agent's"),
        (broken(good, policy_version=traj.policy_version + 5),
         "policy_version spans 9..9, outside the published 0..4"),
        (good._replace(env_steps=good.env_steps + 1), "valid steps"),
        (good._replace(episode_returns=np.array([np.inf], np.float32)),
         "episode_returns has non-finite values"),
    ]
    assert validator.problem(good, latest_version=4) is None
    for unroll, message in cases:
        assert message in validator.problem(unroll, latest_version=4)
    kept = validator.accept([good] + [u for u, _ in cases] + [good], latest_version=4)
    assert kept == [good, good] and validator.rejected == len(cases)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == len(cases)
    assert lines[1] == ("rltpu: warning: rejected an unroll from actor 0: reward has non-finite "
                        "values (2 rejected so far)")


def test_nonfinite_update_is_skipped_keeping_the_state(parts):
    fns, spec, learner, actor = parts
    batch = stack_unrolls([actor.unroll_with_current()])
    poisoned = batch._replace(reward=np.full_like(batch.reward, np.nan))
    before = jax.tree.leaves(checkpoint.host_state(learner.state))
    metrics = devices.to_host(learner.update(learner.put(poisoned)))
    assert bool(metrics["update_skipped"]) and not np.isfinite(metrics["loss"])
    after = jax.tree.leaves(checkpoint.host_state(learner.state))
    assert all(a.tobytes() == b.tobytes() for a, b in zip(before, after))
    metrics = devices.to_host(learner.update(learner.put(batch)))
    assert not bool(metrics["update_skipped"]) and np.isfinite(metrics["loss"])
    changed = jax.tree.leaves(checkpoint.host_state(learner.state))
    assert any(a.tobytes() != b.tobytes() for a, b in zip(before, changed))
    assert int(learner.state.step) == int(before[-1]) + 1  # step counts applied updates only


def test_nonfinite_guard_stops_after_the_limit_in_a_row():
    guard = NonFiniteGuard(limit=3)
    for skipped in (True, True, False, True, True):
        guard.record(skipped, version=1)
    assert guard.skipped == 4 and guard.in_a_row == 2
    with pytest.raises(NonFiniteUpdatesError, match="3 updates in a row had a non-finite loss"):
        guard.record(True, version=9)


def train_cli(args, tmp_path, ray_dir, timeout=600, **popen):
    env = {**os.environ, "RAY_ADDRESS": "", "RAY_TMPDIR": ray_dir,
           "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen([sys.executable, "-m", "rltpu.cli", "train", "--quiet", *args],
                            env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **popen)


def outputs(proc, timeout=600):
    """``proc``'s stdout and stderr once it exits; past ``timeout``, or if reading fails, it
    and the processes it started are ended, not left running."""
    with ended(proc):
        return proc.communicate(timeout=timeout)


SMALL = ["--env", "rltpu.envs.fake:NaNRewardEnv", "--envs-per-actor", "4", "--batch-size", "4",
         "--unroll-length", "8", "--target-return", "none"]


def test_repeated_nan_losses_stop_the_run_keeping_the_last_good_checkpoint(tmp_path, ray_dir):
    run_dir = tmp_path / "run"
    proc = train_cli(["--agent", "tests.misbehaving_agents:NaNFromUpdate5", *SMALL, "--num-actors", "1",
                      "--run-dir", str(run_dir), "--checkpoint-every-updates", "2",
                      "--max-nonfinite-updates", "3"], tmp_path, ray_dir)
    out, err = outputs(proc)
    assert proc.returncode == 1, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last == ("rltpu: error: 3 updates in a row had a non-finite loss or gradients "
                    "(--max-nonfinite-updates 3); the run stopped; the last good checkpoint is "
                    f"{run_dir / 'checkpoints' / '6'}"), err[-3000:]
    for version in (6, 7, 8):
        assert f"update {version} skipped: non-finite loss or gradients" in err
    # the actor's first unroll carried a NaN reward: rejected before it reached the learner
    assert "rejected an unroll from actor 0: reward has non-finite values" in err
    fns = IMPALA.build(envs.make_spec("rltpu.envs.fake:NaNRewardEnv"), IMPALA.Config())
    restored = checkpoint.restore(str(run_dir), fns.init)
    assert restored.step == 6 and int(restored.state.step) == 5  # 5 applied, 1 skipped
    assert restored.counters["skipped_updates"] == 1
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(restored.state.params))


def test_sporadic_nan_losses_and_bad_unrolls_are_counted_and_the_run_goes_on(tmp_path, ray_dir):
    run_dir = tmp_path / "run"
    proc = train_cli(["--agent", "tests.misbehaving_agents:SometimesNaN", *SMALL, "--num-actors", "2",
                      "--run-dir", str(run_dir), "--total-env-steps", "4000",
                      "--log-every-s", "0.2"], tmp_path, ray_dir)
    out, err = outputs(proc)
    assert proc.returncode == 0, err[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    # each actor's first unroll (a NaN reward) and second (that episode's return is NaN)
    assert summary["rejected_unrolls"] == 4
    assert err.count("reward has non-finite values") == 2
    assert err.count("episode_returns has non-finite values") == 2
    skipped = len(re.findall(r"update \d+ skipped: non-finite", err))
    assert 0 < skipped == summary["skipped_updates"] < summary["learner_updates"]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["skipped_updates"] == skipped and rows[-1]["rejected_unrolls"] == 4
    assert summary["actor_restarts"] == 0 and summary["dropped_unrolls"] == 0
    # Ray's default, kept (Ray says "enabled" when it turns it on by default, and nothing
    # when the environment already asks for it, as after an earlier ray.init in this process)
    assert "Token authentication is disabled" not in err


def test_actors_out_of_restarts_stop_the_run_with_one_line(tmp_path, ray_dir):
    run_dir = tmp_path / "run"
    proc = train_cli(["--env", "rltpu.envs.fake:CrashingEnv", "--num-actors", "1", "--envs-per-actor",
                      "2", "--batch-size", "2", "--max-actor-restarts", "2",
                      "--run-dir", str(run_dir)], tmp_path, ray_dir)
    out, err = outputs(proc)
    assert proc.returncode == 1, err[-3000:]
    assert err.strip().splitlines()[-1] == (
        "rltpu: error: every rollout actor failed more than --max-actor-restarts 2 times; the run "
        "stopped (see the lines above); the last good checkpoint is none")
    # The env crash is reported; the request queued behind it may fail as "died" when the
    # restart takes it down (which Ray counts as the same or the next restart): either way
    # restarts 1 and 2 are reported, then the actor is retired.
    assert re.search(r"actor 0 env raised EnvCrashed: the simulator crashed on step 3 "
                     r"\(rltpu.envs.fake.CrashingEnv\); Ray restarts it \(restart 1 of at most 2\)", err)
    assert re.findall(r"Ray restarts it \(restart (\d) of at most 2\)", err) == ["1", "2"]
    assert re.search(r"actor 0 (env raised EnvCrashed: .*|died .*); it has used its 2 restarts, "
                     r"going on without it \(0 left\)", err)


def test_the_final_row_fixes_the_fault_counts_the_checkpoint_and_summary_keep(
        parts, cli_in_process, tmp_path):
    """Ray may count the restart of an actor killed as the run ends after the loop's final
    row: that row, the final checkpoint and the summary still say the same."""
    from rltpu import run as running
    fns, _, learner, _ = parts
    run_dir = tmp_path / "run"
    status, _, err, plan = cli_in_process(
        ["train", "--agent", "impala", "--env", "rltpu.envs.fake:CountingEnv",
         "--run-dir", str(run_dir), "--quiet"], tmp_path)
    assert status == 0 and plan is not None, err
    faults = {"actor_restarts": 1, "dropped_unrolls": 1, "rejected_unrolls": 0}
    bookkeeping = running.Run(plan, None, time.time(), lambda: dict(faults), quiet=True)
    bookkeeping.started()
    assert bookkeeping.faults()["actor_restarts"] == 1
    faults["actor_restarts"] = 2
    assert bookkeeping.log(5, True, lambda _: {})
    faults["actor_restarts"] = faults["dropped_unrolls"] = 3  # an actor killed as it ends
    bookkeeping.end(5, learner.state)
    summary = bookkeeping.summary(5, None, {})
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    restored = checkpoint.restore(str(run_dir), fns.init)
    for counts in (rows[-1], summary, restored.counters):
        assert (counts["actor_restarts"], counts["dropped_unrolls"]) == (2, 1)


@pytest.mark.slow
def test_cartpole_reaches_475_with_crashing_envs_and_killed_actors(tmp_path, ray_dir):
    run_dir = tmp_path / "run"
    # PPO: its clipped updates keep learning steady through the restarts (IMPALA's small
    # default batches sometimes collapse to a deterministic policy and need ~1M steps back)
    proc = train_cli(["--agent", "ppo", "--env", "rltpu.envs.fake:FlakyCartPole", "--run-dir", str(run_dir),
                      "--max-actor-restarts", "100", "--log-every-s", "1"], tmp_path, ray_dir)
    kills, stop = [], threading.Event()

    def killer():
        # The first kill comes as soon as a rollout actor's process shows (Ray may still be
        # starting it): on a fast machine the run reaches 475 a second or two after the
        # actors begin to act, and a CI run on 2026-12-05 ended before any actor had been up
        # the 3 s the first kill used to wait for. Then a rollout actor that has been up for
        # 3 s (acting, not starting: with its programs in the compilation cache an actor acts
        # within about 2 s) at most every 3 s, 6 times at most: on a loaded machine a
        # restart takes so long that endless kills would starve the run.
        last_kill = 0.0
        while not stop.wait(0.1) and len(kills) < 6:
            if time.time() - last_kill < 3.0:
                continue
            try:
                ready = [p for p in rollout_actor_processes(proc.pid)
                         if not kills or time.time() - p.create_time() > 3]
                if ready:
                    victim = random.choice(ready)
                    victim.send_signal(signal.SIGKILL)
                    kills.append(victim.pid)
                    last_kill = time.time()
            except psutil.Error:
                pass

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    try:
        out, err = proc.communicate(timeout=900)
    finally:
        stop.set()
        thread.join()
        end([proc])
    assert proc.returncode == 0, err[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["final_return"] >= 475
    restarts = re.findall(r"rltpu: actor (\d) (env raised|died) .*; Ray restarts it", err)
    crashes = [r for r in restarts if r[1] == "env raised"]
    deaths = [r for r in restarts if r[1] == "died"]
    assert len(kills) >= 1, "the killer did not get to kill"
    # Every kill and every crash is one restart (a kill as the run ends may not be counted
    # yet); a process killed while Ray was still starting it is counted but has no line.
    assert len(kills) + len(crashes) - 1 <= summary["actor_restarts"] <= len(kills) + len(crashes)
    assert len(deaths) <= len(kills)
    assert all("EnvCrashed: the simulator crashed" in line
               for line in err.splitlines() if "env raised" in line)
    assert summary["dropped_unrolls"] >= len(restarts)  # each failure seen lost a request
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["actor_restarts"] == summary["actor_restarts"]
    assert [r["actor_restarts"] for r in rows] == sorted(r["actor_restarts"] for r in rows)
