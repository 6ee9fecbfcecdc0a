"""Real runs (real Ray, real learner, the CLI) built to be actor-bound and learner-bound:
their bottleneck verdicts, TensorBoard files, summaries, console output and plots."""
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator

REPO = Path(__file__).resolve().parents[1]

# One actor on an env whose steps take 5 ms, a tiny learner: the actors are the bottleneck.
ACTOR_BOUND = ["--env", "envs.fake:SlowCountingEnv", "--num-actors", "1", "--envs-per-actor",
               "4", "--batch-size", "4", "--unroll-length", "16", "--hidden-sizes", "16",
               "--total-env-steps", "1500", "--target-return", "none", "--log-every-s", "0.3",
               "--plan-steps", "100000"]
# Three fast actors, a learner whose every update takes 0.3 s more: the learner is.
LEARNER_BOUND = ["--agent", "tests.fake_agents:SlowLearnerIMPALA", "--update-delay-s", "0.3",
                 "--env", "envs.fake:CountingEnv", "--num-actors", "3", "--envs-per-actor", "8",
                 "--batch-size", "8", "--unroll-length", "16", "--hidden-sizes", "16",
                 "--total-env-steps", "3000", "--target-return", "none", "--log-every-s", "1"]


def rltpu(args, cwd, timeout=600):
    # Ray's socket paths must stay under 107 bytes: a short temporary dir, not pytest's.
    with tempfile.TemporaryDirectory(prefix="rltpu-ray-", dir="/tmp",
                                     ignore_cleanup_errors=True) as ray_tmp:
        env = {**os.environ, "RAY_ADDRESS": "", "RAY_TMPDIR": ray_tmp,
               "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
        return subprocess.run([sys.executable, "-m", "rltpu.cli", *args], env=env, cwd=cwd,
                              capture_output=True, text=True, timeout=timeout)


def train(args, base, name):
    run_dir = base / name
    result = rltpu(["train", "--run-dir", str(run_dir), *args], base)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {"dir": run_dir, "stderr": result.stderr, "summary": summary, "rows": rows}


@pytest.fixture(scope="module")
def actor_bound_runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("actor_bound")
    return [train(ACTOR_BOUND + ["--seed", str(seed)], base, f"seed{seed}") for seed in (0, 1)]


@pytest.fixture(scope="module")
def learner_bound_run(tmp_path_factory):
    return train(LEARNER_BOUND, tmp_path_factory.mktemp("learner_bound"), "slow-learner")


@pytest.mark.slow
def test_slow_env_one_actor_is_called_actor_bound(actor_bound_runs):
    for run in actor_bound_runs:
        report = run["summary"]["bottleneck"]
        assert report["verdict"] == "actor-bound", report["message"]
        assert report["message"].startswith("learner waited for data ")
        assert "more actors would keep it busy" in report["message"]
        assert report["learner_time"]["wait_data"] > 0.5
        assert report["actor_time"]["env"] > 0.5  # the env's sleep is where actors spend it
        assert report["actor_time"]["idle"] < 0.25
        assert report["actors_to_keep_learner_busy"] >= 3
        assert report["device_busy"] < 0.25
        assert "bottleneck report:" in run["stderr"]
        assert f"verdict: {report['message']}" in run["stderr"]


@pytest.mark.slow
def test_slow_learner_many_actors_is_called_learner_bound(learner_bound_run):
    report = learner_bound_run["summary"]["bottleneck"]
    assert report["verdict"] == "learner-bound", report["message"]
    assert report["message"].startswith("actors waited for the learner ")
    assert report["learner_time"]["wait_data"] < 0.25
    assert report["actor_time"]["idle"] > 0.25
    assert report["device_busy"] > 0.5  # the update's 0.3 s count as the devices' time
    assert report["device_busy"] == report["learner_time"]["update"]
    assert report["actors_to_keep_learner_busy"] <= 3


@pytest.mark.slow
def test_metrics_rows_carry_the_time_split(actor_bound_runs, learner_bound_run):
    for run, idle_high in [(actor_bound_runs[0], False), (learner_bound_run, True)]:
        rows = run["rows"]
        assert len(rows) >= 3
        for row in rows:
            actor = [row[f"actor/{k}"] for k in ("env", "inference", "params", "send", "idle")]
            learner = [row[f"learner/{k}"] for k in ("wait_data", "host_to_device", "update",
                                                     "publish")]
            assert all(0 <= f <= 1 for f in actor + learner)
            assert sum(actor) == pytest.approx(1.0) and sum(learner) <= 1.0 + 1e-6
        late = rows[len(rows) // 2:]
        assert (np.mean([r["actor/idle"] for r in late]) > 0.25) == idle_high
        assert (np.mean([r["learner/wait_data"] for r in late]) > 0.25) == (not idle_high)


@pytest.mark.slow
def test_tensorboard_file_holds_the_metrics_rows(actor_bound_runs):
    run = actor_bound_runs[0]
    assert len(list(run["dir"].glob("events.out.tfevents.*"))) == 1
    acc = event_accumulator.EventAccumulator(str(run["dir"]), size_guidance={"scalars": 0})
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"mean_return", "env_sps", "policy_lag", "loss", "entropy", "rss_mb",
            "actor/env", "actor/idle", "learner/wait_data", "learner/update"} <= tags
    rows = run["rows"]
    assert [e.step for e in acc.Scalars("env_sps")] == [r["env_steps"] for r in rows]
    np.testing.assert_allclose([e.value for e in acc.Scalars("loss")],
                               [r["loss"] for r in rows], rtol=1e-6)
    with_return = [r for r in rows if r["mean_return"] is not None]
    assert [e.step for e in acc.Scalars("mean_return")] == [r["env_steps"] for r in with_return]


@pytest.mark.slow
def test_summary_gives_rates_and_a_plan_and_the_console_shows_progress(actor_bound_runs):
    run = actor_bound_runs[0]
    summary = run["summary"]
    plan = summary["plan"]
    assert plan["env_steps"] == 100_000
    assert plan["estimated_wall_s"] == pytest.approx(summary["startup_s"]
                                                     + 100_000 / summary["env_sps"])
    # one slow actor makes about what the run made; a 5 ms x 4 envs step caps it at 200/s
    assert 20 < summary["actor_sps_each"] < 200
    assert summary["learner_sps_per_device"] > 5 * summary["actor_sps_each"]
    assert "plan: 100,000 env steps would take about" in run["stderr"]
    progress = [line for line in run["stderr"].splitlines() if "/1,500  sps" in line]
    assert len(progress) == len(run["rows"])  # not a terminal: one plain line per row
    assert "\r" not in run["stderr"]


@pytest.mark.slow
def test_plot_draws_one_curve_per_run(actor_bound_runs, learner_bound_run, tmp_path):
    import matplotlib.image
    from rltpu import plot

    dirs = [str(r["dir"]) for r in actor_bound_runs] + [str(learner_bound_run["dir"])]
    out = tmp_path / "curves.png"
    result = rltpu(["plot", *dirs, "--out", str(out)], tmp_path)
    assert result.returncode == 0, result.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(str(out))
    assert image.shape[0] > 300 and image.shape[1] > 1000
    assert image[..., :3].std() > 0.05  # something was drawn

    fig = plot.make_figure([plot.load_run(d) for d in dirs])
    for ax in fig.axes:
        labels = [line.get_label() for line in ax.get_lines()]
        assert sorted(labels) == sorted(["seed0", "seed1", "slow-learner", "mean of 2"])
    seed0 = next(line for line in fig.axes[0].get_lines() if line.get_label() == "seed0")
    np.testing.assert_array_equal(seed0.get_xdata(), [r["env_steps"] for r in actor_bound_runs[0]["rows"]])

    single = rltpu(["plot", dirs[2]], tmp_path)
    assert single.returncode == 0 and (learner_bound_run["dir"] / "curves.png").exists()
