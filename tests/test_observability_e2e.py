"""Real runs (real Ray, real learner) built to be actor-bound and learner-bound: their
bottleneck verdicts, TensorBoard files, summaries, console output and plots.

The runs share the session's local Ray (``ray_local``, 2 CPUs): one Ray start-up for all
of them, which keeps the tests reliable on a small, busy machine.
"""
import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator

from rltpu import agents
import rltpu

REPO = Path(__file__).resolve().parents[1]

# One actor on an env whose steps take 5 ms, a tiny learner: the actors are the bottleneck.
ACTOR_BOUND = dict(env="rltpu.envs.fake:SlowCountingEnv", num_actors=1, envs_per_actor=4,
                   batch_size=4, unroll_length=16, total_env_steps=1500, log_every_s=0.3,
                   plan_steps=100_000)
# Two fast actors, a learner whose every update takes 0.3 s more: the learner is.
LEARNER_BOUND = dict(env="rltpu.envs.fake:CountingEnv", num_actors=2, envs_per_actor=8,
                     batch_size=8, unroll_length=16, total_env_steps=3000, log_every_s=1.0)


def train(run_dir, agent="impala", agent_settings=None, **run_settings):
    """Trains in this process (on one of its CPU devices); returns what the run wrote and
    what it printed on stderr."""
    agent = agents.get(agent)
    config = agent.Config(hidden_sizes=(16,), **(agent_settings or {}))
    run = rltpu.RunConfig(run_dir=str(run_dir), num_devices=1, target_return=None,
                          **run_settings)
    stderr = io.StringIO()  # not a terminal: progress comes as plain lines
    with contextlib.redirect_stderr(stderr):
        summary = rltpu.train(agent, config, run)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {"dir": run_dir, "stderr": stderr.getvalue(), "summary": summary, "rows": rows}


@pytest.fixture(scope="module")
def actor_bound_runs(ray_local, tmp_path_factory):
    base = tmp_path_factory.mktemp("actor_bound")
    return [train(base / f"seed{seed}", seed=seed, **ACTOR_BOUND) for seed in (0, 1)]


@pytest.fixture(scope="module")
def learner_bound_run(ray_local, tmp_path_factory):
    return train(tmp_path_factory.mktemp("learner_bound") / "slow-learner",
                 "tests.fake_agents:SlowLearnerIMPALA", {"update_delay_s": 0.3},
                 **LEARNER_BOUND)


def rltpu_cli(args, cwd):
    env = {**os.environ,
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "rltpu.cli", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=300)


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
    assert report["actors_to_keep_learner_busy"] <= 2


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
    result = rltpu_cli(["plot", *dirs, "--out", str(out)], tmp_path)
    assert result.returncode == 0, result.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(str(out))
    assert image.shape[0] > 300 and image.shape[1] > 1000
    assert image[..., :3].std() > 0.05  # something was drawn

    fig = plot.make_figure([plot.load_run(d) for d in dirs])
    for ax in fig.axes:
        labels = [line.get_label() for line in ax.get_lines()]
        assert sorted(set(labels) - {"mean of 2"}) == ["seed0", "seed1", "slow-learner"]
        assert len(labels) <= 4
    # the seeds share settings (and env steps): drawn with their mean and spread
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    assert sorted(labels) == ["mean of 2", "seed0", "seed1", "slow-learner"]
    seed0 = next(line for line in fig.axes[0].get_lines() if line.get_label() == "seed0")
    np.testing.assert_array_equal(seed0.get_xdata(),
                                  [r["env_steps"] for r in actor_bound_runs[0]["rows"]])

    single = rltpu_cli(["plot", dirs[2]], tmp_path)
    assert single.returncode == 0 and (learner_bound_run["dir"] / "curves.png").exists()
