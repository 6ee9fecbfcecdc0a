"""Preemption end to end with the real CLI, Ray, orbax and JAX: kill -9 then resume, SIGTERM
then resume."""
import json
import os
import re
import signal
import subprocess
import sys
import time


import pytest

from rltpu import agents
from rltpu import envs
from rltpu import checkpoint

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cli_env(tmp_path):
    return {**os.environ, "RAY_ADDRESS": "", "RAY_TMPDIR": (tmp_path / "ray-dir").read_text(),
            "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}


def start(args, tmp_path, log_name):
    """Starts ``rltpu train`` in a session of its own (so kill -9 takes Ray down with it)."""
    log = open(tmp_path / log_name, "w")
    return subprocess.Popen([sys.executable, "-m", "rltpu.cli", "train", *args],
                            env=cli_env(tmp_path), stdout=log, stderr=subprocess.STDOUT,
                            cwd=tmp_path, start_new_session=True), tmp_path / log_name


def wait_for(condition, timeout, proc, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        assert proc.poll() is None, f"training exited ({proc.returncode}) before {what}"
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def metrics_rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def impala_init():
    agent = agents.get("impala")
    return agent.build(envs.make_spec("CartPole-v1"), agent.Config()).init


def resume(run_dir, tmp_path, *flags):
    result = subprocess.run([sys.executable, "-m", "rltpu.cli", "train", "--resume", str(run_dir),
                             "--quiet", *flags], env=cli_env(tmp_path), capture_output=True,
                            text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def resumed_line(stderr):
    match = re.search(r"rltpu: resumed from (\S+) \(update (\d+), ([\d,]+) env steps; "
                      r"params sha256 ([0-9a-f]{64})\)", stderr)
    assert match, stderr[-3000:]
    return match.group(1), int(match.group(2)), int(match.group(3).replace(",", "")), match.group(4)


@pytest.mark.slow
def test_kill_9_mid_run_then_resume_reaches_target(tmp_path, ray_dir):
    (tmp_path / "ray-dir").write_text(ray_dir)
    run_dir = tmp_path / "run"
    proc, log = start(["--run-dir", str(run_dir), "--checkpoint-every-updates", "10",
                       "--target-return", "none", "--total-env-steps", "50000000",
                       "--log-every-s", "0.5", "--quiet"], tmp_path, "first.log")
    try:
        wait_for(lambda: len(checkpoint.list_checkpoints(str(run_dir))[0]) >= 3, 400, proc,
                 "three checkpoints")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    rows_before = metrics_rows(run_dir)
    # The reference: the newest checkpoint that reads back completely, as on disk now.
    reference = checkpoint.restore(str(run_dir), impala_init())
    assert reference.step >= 20 and reference.step % 10 == 0

    result = resume(run_dir, tmp_path, "--target-return", "475", "--total-env-steps", "1000000")
    path, step, env_steps, digest = resumed_line(result.stderr)
    assert path == reference.path and step == reference.step
    assert env_steps == reference.counters["env_steps"] > 0
    assert digest == checkpoint.params_digest(reference.state.params)  # bitwise, via SHA-256

    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["resumed_from_update"] == reference.step
    assert summary["learner_updates"] > reference.step
    assert summary["env_steps"] > reference.counters["env_steps"]
    assert summary["episodes"] > reference.counters["episodes"]
    assert summary["final_return"] >= 475 and summary["time_to_target_s"] is not None
    rows = metrics_rows(run_dir)
    assert rows[:len(rows_before)] == rows_before  # appended, not rewritten
    marker, *after = rows[len(rows_before):]
    assert marker["resumed_from_update"] == reference.step
    assert marker["env_steps"] == reference.counters["env_steps"]
    assert after and after[0]["learner_updates"] > reference.step
    assert after[0]["env_steps"] > reference.counters["env_steps"]
    assert all(a["env_steps"] < b["env_steps"] for a, b in zip(after, after[1:]))
    # the final checkpoint of the resumed leg is complete and newest
    assert checkpoint.restore(str(run_dir), impala_init()).step == summary["learner_updates"]


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stop_signal_writes_a_final_checkpoint_and_exits_0(signum, tmp_path, ray_dir):
    (tmp_path / "ray-dir").write_text(ray_dir)
    run_dir = tmp_path / "run"
    proc, log = start(["--run-dir", str(run_dir), "--checkpoint-every-minutes", "none",
                       "--target-return", "none", "--total-env-steps", "50000000",
                       "--log-every-s", "0.5"], tmp_path, "first.log")
    try:
        wait_for(lambda: (run_dir / "metrics.jsonl").exists()
                 and len(metrics_rows(run_dir)) >= 2, 400, proc, "training to start")
        assert checkpoint.list_checkpoints(str(run_dir)) == ([], [])  # none due by then
        proc.send_signal(signum)
        assert proc.wait(timeout=120) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    output = log.read_text()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["stopped_by"] == signal.Signals(signum).name
    final = summary["learner_updates"]
    assert (f"rltpu: stopped by {signal.Signals(signum).name} after update {final:,}; checkpoint "
            f"{run_dir / 'checkpoints' / str(final)} is complete. "
            f"Resume with: rltpu train --resume {run_dir}") in output
    steps, incomplete = checkpoint.list_checkpoints(str(run_dir))
    assert steps == [final] and incomplete == []
    restored = checkpoint.restore(str(run_dir), impala_init())
    assert restored.counters["env_steps"] == summary["env_steps"]

    result = resume(run_dir, tmp_path, "--total-env-steps", str(summary["env_steps"] + 5000))
    assert resumed_line(result.stderr)[1] == final
    resumed = json.loads((run_dir / "summary.json").read_text())
    assert resumed["stopped_by"] is None and resumed["resumed_from_update"] == final
    assert resumed["learner_updates"] > final
    assert summary["env_steps"] + 5000 <= resumed["env_steps"] < summary["env_steps"] + 20000
