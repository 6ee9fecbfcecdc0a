"""End to end with a real local Ray: the default run learns CartPole and reports it."""
import json
import os
import subprocess
import sys

import pytest

SUMMARY_KEYS = {"agent", "env", "seed", "num_devices", "num_actors", "env_steps", "wall_s",
                "startup_s", "time_to_target_s", "final_return", "env_sps", "learner_updates",
                "learner_samples_per_s", "mean_policy_lag", "peak_rss_mb"}


@pytest.mark.slow
def test_default_run_reaches_475_on_cartpole(tmp_path, ray_tmpdir):
    run_dir = tmp_path / "run"
    env = {**os.environ, "RAY_ADDRESS": "", "RAY_TMPDIR": ray_tmpdir}
    result = subprocess.run([sys.executable, "-m", "rltpu.cli", "train", "--run-dir", str(run_dir)],
                            env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert os.listdir(ray_tmpdir)  # Ray ran where the CLI tests look for it

    summary = json.loads((run_dir / "summary.json").read_text())
    assert SUMMARY_KEYS <= set(summary)
    assert summary["agent"] == "impala" and summary["env"] == "CartPole-v1"
    assert summary["final_return"] >= 475
    assert 0 < summary["time_to_target_s"] <= summary["wall_s"]
    assert summary["startup_s"] < summary["time_to_target_s"]
    assert summary["env_steps"] > 10_000 and summary["learner_updates"] > 10
    assert summary["env_sps"] > 0 and summary["learner_samples_per_s"] > 0
    assert summary["mean_policy_lag"] >= 0 and summary["peak_rss_mb"] > 100

    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert rows and rows[-1]["env_steps"] == summary["env_steps"]
    assert all(a["env_steps"] < b["env_steps"] for a, b in zip(rows, rows[1:]))
    assert {"loss", "mean_return", "policy_lag", "env_sps"} <= set(rows[-1])
    assert "steps" in result.stderr  # live progress lines
    # rltpu's lines only: not Ray's token-authentication notice nor JAX's fork warning.
    assert "Token authentication" not in result.stderr and "os.fork()" not in result.stderr
