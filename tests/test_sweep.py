"""``rltpu sweep``: SPECs checked before anything starts, trials built from them, results
and plots read from the trials' run directories, the metrics-row hook that reports to Ray
Tune and stops a run cleanly, and (slow) real sweeps on Ray Tune: 2 learning rates x 2
seeds queued on 2 CPUs, a sweep stopped by SIGTERM and resumed, ASHA stopping a
configuration that cannot learn."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import rltpu
from rltpu import cli, sweeps
from tests.processes import ended, said

pytest.importorskip("pyarrow")  # Ray Tune's

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALLEST = """\
base: {env: CartPole-v1, total_env_steps: 60000, target_return: null}
space:
  learning_rate: {grid: [0.001, 0.005]}
  entropy_cost: {grid: [0.0, 0.01]}
seeds: [0, 1]
metric: return
mode: max
"""
# Small and quick trials: one actor (a trial then needs 2 CPUs: its learner and the actor).
TINY = {"env": "CartPole-v1", "target_return": None, "num_actors": 1, "envs_per_actor": 8,
        "batch_size": 8, "log_every_s": 1.0, "checkpoint_every_updates": 4}


def write(tmp_path, text, name="spec.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


# --- SPECs --------------------------------------------------------------------------------

def test_the_issues_smallest_spec_makes_4_configurations_of_2_seeds(tmp_path):
    sweep = sweeps.load(sweeps.read_spec(write(tmp_path, SMALLEST)), "spec.yaml")
    assert sweep.agent == "impala" and sweep.budget == 60000
    assert sweep.base == {"env": "CartPole-v1", "target_return": None, "agent": "impala"}
    assert sweep.varied == ("learning_rate", "entropy_cost")
    assert [(t["index"], t["config"], t["values"], t["seed"]) for t in sweep.trials] == [
        (0, 0, {"learning_rate": 0.001, "entropy_cost": 0.0}, 0),
        (1, 0, {"learning_rate": 0.001, "entropy_cost": 0.0}, 1),
        (2, 1, {"learning_rate": 0.001, "entropy_cost": 0.01}, 0),
        (3, 1, {"learning_rate": 0.001, "entropy_cost": 0.01}, 1),
        (4, 2, {"learning_rate": 0.005, "entropy_cost": 0.0}, 0),
        (5, 2, {"learning_rate": 0.005, "entropy_cost": 0.0}, 1),
        (6, 3, {"learning_rate": 0.005, "entropy_cost": 0.01}, 0),
        (7, 3, {"learning_rate": 0.005, "entropy_cost": 0.01}, 1)]
    assert sweep.trial_values(sweep.trials[5]) == {
        "env": "CartPole-v1", "target_return": None, "agent": "impala", "learning_rate": 0.005,
        "entropy_cost": 0.0, "seed": 1, "total_env_steps": 60000}
    assert sweep.run_dir("/s", sweep.trials[5]) == (
        "/s/runs/0005-learning_rate=0.005-entropy_cost=0-seed=1")
    # One CPU for the learner and one for each of the default 2 actors.
    assert sweeps.trial_bundles(sweep, sweep.trials[0], {}) == [{"CPU": 1.0}] * 3
    assert sweeps.trial_bundles(sweep, sweep.trials[0], {"GPU": 8}) == [
        {"CPU": 1.0, "GPU": 1.0}, {"CPU": 1.0}, {"CPU": 1.0}]


def test_values_are_read_as_their_flags_read_them(tmp_path):
    # YAML reads 1e-3 (no dot) as a string; the flag's type makes it a float.
    spec = "base: {learning_rate: 1e-3, mode: anakin, env: 'gymnax:CartPole-v1'}\n" \
           "space: {entropy_cost: {grid: [1e-2]}}\nbudget: 5000\n"
    sweep = sweeps.load(sweeps.read_spec(write(tmp_path, spec)), "spec.yaml")
    assert sweep.base["learning_rate"] == 0.001
    assert sweep.trials[0]["values"] == {"entropy_cost": "1e-2"}  # as given ...
    assert sweep.budget == 5000
    # ... and checked as a float when the trial's config was built (see the bad cases).
    assert sweeps.trial_bundles(sweep, sweep.trials[0], {}) == [{"CPU": 1.0}]  # Anakin: no actors


def test_the_metric_is_the_evaluation_return_when_the_base_evaluates(tmp_path):
    sweep = sweeps.load(sweeps.read_spec(write(tmp_path, SMALLEST)), "spec.yaml")
    assert sweep.metric == "return"
    spec = SMALLEST.replace("base: {", "base: {eval_every_updates: 10, ").replace("metric: return\n", "")
    sweep = sweeps.load(sweeps.read_spec(write(tmp_path, spec)), "spec.yaml")
    assert sweep.metric == "eval_return" and sweeps.METRICS["eval_return"] == "eval/return"
    run_dir = tmp_path / "trial"
    run_dir.mkdir()
    rows = [{"env_steps": 100, "mean_return": 20.0}, {"env_steps": 150, "eval/return": 30.0},
            {"env_steps": 200, "mean_return": 25.0}]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert sweeps.trial_result(str(run_dir), "eval_return")["value"] == 30.0
    assert sweeps.trial_result(str(run_dir), "return")["value"] == 25.0


def test_base_starts_from_a_config_file_next_to_the_spec(tmp_path, monkeypatch):
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "config.yaml").write_text(
        "run: {num_actors: 3, seed: 5, run_dir: old}\nagent: {learning_rate: 0.002, discount: 0.9}\n")
    spec = write(tmp_path / "specs", "base: {config: config.yaml, discount: 0.95}\n")
    monkeypatch.chdir(tmp_path)  # the file is found next to the SPEC, not here
    sweep = sweeps.load(sweeps.read_spec(spec), spec)
    # The file's settings, then the base's; a config's seed and run_dir are the sweep's.
    assert sweep.base == {"num_actors": 3, "learning_rate": 0.002, "discount": 0.95,
                          "agent": "impala"}
    assert sweep.spec["base"]["config"] == str(tmp_path / "specs" / "config.yaml")
    (tmp_path / "specs" / "config.yaml").write_text("run: {env: 'evil:Env'}\n")
    with pytest.raises(ValueError, match="env 'evil:Env' is a module path; a file never"):
        sweeps.load(sweeps.read_spec(spec), spec)


def test_random_dimensions_are_drawn_once_per_configuration_for_all_its_seeds():
    spec = {"space": {"learning_rate": {"loguniform": [1e-4, 1e-2]},
                      "entropy_cost": {"uniform": [0.0, 0.05]},
                      "unroll_length": {"randint": [8, 33]},
                      "discount": {"choice": [0.97, 0.99]},
                      "batch_size": {"grid": [16, 32]}},
            "seeds": 2, "num_samples": 3, "search_seed": 7}
    sweep = sweeps.load(spec)
    assert len(sweep.trials) == 3 * 2 * 2
    for c in range(6):
        seeds = [t for t in sweep.trials if t["config"] == c]
        assert [t["seed"] for t in seeds] == [0, 1]
        assert seeds[0]["values"] == seeds[1]["values"]
        v = seeds[0]["values"]
        assert 1e-4 <= v["learning_rate"] <= 1e-2 and 0.0 <= v["entropy_cost"] <= 0.05
        assert 8 <= v["unroll_length"] < 33 and v["discount"] in (0.97, 0.99)
    # The grid varies within a draw; the draws differ; the same search_seed draws the same.
    configs = [sweep.trials[2 * c]["values"] for c in range(6)]
    assert [c["batch_size"] for c in configs] == [16, 32] * 3
    assert configs[0]["learning_rate"] == configs[1]["learning_rate"] != configs[2]["learning_rate"]
    assert sweeps.load(spec).trials == sweep.trials
    assert sweeps.load({**spec, "search_seed": 8}).trials != sweep.trials


BAD = [
    ("seed: [0, 1]\n", "SPEC {spec}: unknown key 'seed'; did you mean 'seeds'?"),
    ("space: {learning_rat: {grid: [0.1]}}\n",
     "SPEC {spec}: space: unknown key 'learning_rat'; did you mean 'learning_rate'?"),
    ("base: {num_actor: 2}\n", "SPEC {spec}: base: unknown key 'num_actor'; did you mean "
     "'num_actors'?"),
    ("space: {learning_rate: {grid: [0.001, -0.1]}}\n",
     "SPEC {spec}: configuration learning_rate=-0.1, seed=0: --learning-rate must be"),
    ("space: {entropy_cost: {grid: [abc]}}\n",
     "SPEC {spec}: configuration entropy_cost=abc: argument --entropy-cost: invalid float value"),
    ("base: {num_actors: 0}\n", "SPEC {spec}: configuration seed=0: --num-actors must "
     "be a positive integer, got 0"),
    ("space: {}\n", "SPEC {spec}: 'space' is empty"),
    ("space: {learning_rate: {grid: []}}\n", "SPEC {spec}: space 'learning_rate': grid is empty"),
    ("space: {learning_rate: {normal: [0, 1]}}\n",
     "SPEC {spec}: space 'learning_rate': unknown distribution 'normal'; valid: grid, choice, "
     "uniform, loguniform, randint"),
    ("space: {learning_rate: {uniform: [0.1, 0.01]}}\n",
     "SPEC {spec}: space 'learning_rate': uniform takes [low, high] with low < high"),
    ("space: {learning_rate: {loguniform: [0, 0.01]}}\n",
     "SPEC {spec}: space 'learning_rate': loguniform needs 0 < low"),
    ("space: {seed: {grid: [1, 2]}}\n", "SPEC {spec}: space 'seed' cannot vary: seeds are"),
    ("seeds: []\n", "SPEC {spec}: seeds must be a non-empty list"),
    ("metric: eval\n", "SPEC {spec}: metric 'eval' is not one of return, eval_return (the "
     "training return, or the evaluation return)"),
    ("metric: eval_return\n", "SPEC {spec}: metric eval_return needs evaluation during "
     "training: set eval_every_updates or eval_every_s in base"),
    ("mode: maximise\n", "SPEC {spec}: mode 'maximise' is not one of max, min"),
    ("scheduler: {name: asha, reduction: 1}\n", "SPEC {spec}: scheduler reduction must be a "
     "number > 1, got 1"),
    ("scheduler: hyperband\n", "SPEC {spec}: scheduler 'hyperband' is not one of asha"),
    ("base: {learner_hosts: 2}\n", "SPEC {spec}: base 'learner_hosts': a multi-host learner per "
     "trial is out of scope of rltpu sweep"),
    ("base: {agent: 'evil_module:Agent'}\n", "SPEC {spec}: agent 'evil_module:Agent' is not a "
     "built-in agent; a file never decides what code is imported"),
    ("base: {env: 'gymnax:CartPole-v1'}\n", "SPEC {spec}: configuration (base): --env "
     "'gymnax:CartPole-v1' is a JAX env: train it with --mode anakin"),
    ("num_samples: 3\nspace: {learning_rate: {grid: [0.1]}}\n",
     "SPEC {spec}: num_samples 3 would repeat the same configurations"),
]


@pytest.mark.parametrize("text,message", BAD, ids=[m.split(": ", 1)[1][:40] for _, m in BAD])
def test_a_bad_spec_is_one_line_and_exit_2_before_anything_starts(text, message, tmp_path,
                                                                   capsys):
    spec = write(tmp_path, text)
    status = cli.main(["sweep", spec, "--dir", str(tmp_path / "sweep")])
    err = capsys.readouterr().err
    assert status == 2
    assert err.count("\n") == 1 and err.startswith("rltpu: error: " + message.format(spec=spec)), err
    assert not (tmp_path / "sweep").exists()


def test_cli_refusals_exit_2(tmp_path, capsys):
    spec = write(tmp_path, SMALLEST)
    (tmp_path / "taken").mkdir()
    assert cli.main(["sweep", spec, "--dir", str(tmp_path / "taken")]) == 2
    assert "already exists; sweeps are never overwritten" in capsys.readouterr().err
    assert cli.main(["sweep"]) == 2
    assert "give a SPEC file, or --resume SWEEP_DIR" in capsys.readouterr().err
    assert cli.main(["sweep", "--resume", str(tmp_path / "taken")]) == 2
    assert capsys.readouterr().err == (f"rltpu: error: --resume {tmp_path / 'taken'}: not a "
                                       "sweep directory (it has no sweep.json)\n")
    assert cli.main(["sweep", str(tmp_path / "missing.yaml")]) == 2
    assert "SPEC " in capsys.readouterr().err


def test_the_cli_exits_2_through_its_entry_point(tmp_path):
    spec = write(tmp_path, "space: {learning_rate: {grid: []}}\n")
    result = subprocess.run([sys.executable, "-m", "rltpu.cli", "sweep", spec], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": REPO})
    assert result.returncode == 2, result.stderr
    assert result.stderr == (f"rltpu: error: SPEC {spec}: space 'learning_rate': grid is empty; "
                             "give at least one value\n")
    assert not (tmp_path / "sweeps").exists()


# --- Results and plots, from run directories written here ---------------------------------

def fake_sweep(tmp_path, returns, finished=True, mode="max"):
    """A sweep directory whose trials' run directories hold metrics rows ending in
    ``returns[config][seed]``."""
    spec = {"base": {"total_env_steps": 1000}, "seeds": [0, 1], "mode": mode,
            "space": {"learning_rate": {"grid": [0.001, 0.002, 0.003]}}}
    sweep = sweeps.load(spec)
    sweep_dir = tmp_path / "sweep"
    os.makedirs(sweep_dir / "runs")
    (sweep_dir / "sweep.json").write_text(json.dumps(sweep.to_json()))
    for t in sweep.trials:
        final = returns[t["config"]][t["seed"]]
        run_dir = sweep.run_dir(str(sweep_dir), t)
        if final is None:
            continue
        os.makedirs(run_dir)
        rows = [{"env_steps": s, "time_s": s / 100, "mean_return": r}
                for s, r in ((200, None), (600, final / 2), (1000, final))]
        with open(os.path.join(run_dir, "metrics.jsonl"), "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
        with open(os.path.join(run_dir, "config.json"), "w") as f:
            json.dump({"run": {**sweep.trial_values(t)}, "agent": {}}, f)
        if finished:
            with open(os.path.join(run_dir, "summary.json"), "w") as f:
                json.dump({"stopped_by": None}, f)
    return sweep, str(sweep_dir)


def test_results_per_configuration_best_first(tmp_path, capsys):
    sweep, sweep_dir = fake_sweep(tmp_path, {0: [10.0, 20.0], 1: [100.0, 50.0], 2: [30.0, None]})
    configs = sweeps.write_results(sweep, sweep_dir, {0: "TERMINATED"})
    assert [(c["learning_rate"], c["mean"], c["std"], c["min"], c["max"], c["with_metric"])
            for c in configs] == [(0.002, 75.0, 25.0, 50.0, 100.0, 2),
                                  (0.003, 30.0, 0.0, 30.0, 30.0, 1),
                                  (0.001, 15.0, 5.0, 10.0, 20.0, 2)]
    assert [c["status"] for c in configs] == ["finished", "finished/not run", "finished"]
    assert not sweeps.complete(configs)
    table = capsys.readouterr().out.splitlines()
    assert table[0] == "| rank | learning_rate | seeds | return mean | std | min | max | status |"
    assert table[2] == "| 1 | 0.002 | 2/2 | 75 | 25 | 50 | 100 | finished |"
    assert table[4] == "| 3 | 0.001 | 2/2 | 15 | 5 | 10 | 20 | finished |"
    with open(os.path.join(sweep_dir, "trials.csv")) as f:
        lines = f.read().splitlines()
    assert lines[0] == "trial,config,learning_rate,seed,return,env_steps,status,run_dir"
    assert lines[3] == "2,1,0.002,0,100.0,1000,finished,runs/0002-learning_rate=0.002-seed=0"
    with open(os.path.join(sweep_dir, "results.csv")) as f:
        assert f.read().splitlines()[1] == "1,0.002,2,2,75.0,25.0,50.0,100.0,finished"
    # mode: min puts the lowest mean first.
    sweep, sweep_dir = fake_sweep(tmp_path / "min", {0: [10.0, 20.0], 1: [100.0, 50.0],
                                                     2: [30.0, 40.0]}, mode="min")
    assert [c["mean"] for c in sweeps.write_results(sweep, sweep_dir, {}, quiet=True)] == [
        15.0, 35.0, 75.0]


def test_unfinished_trials_read_as_interrupted_or_stopped_early(tmp_path):
    sweep, sweep_dir = fake_sweep(tmp_path, {0: [1.0, 2.0], 1: [3.0, 4.0], 2: [5.0, 6.0]},
                                  finished=False)
    for t in sweep.trials[:2]:  # ended by the sweep: ASHA when Tune says TERMINATED
        with open(os.path.join(sweep.run_dir(sweep_dir, t), "summary.json"), "w") as f:
            json.dump({"stopped_by": sweeps.SWEEP_STOP}, f)
    _, configs = sweeps.results(sweep, sweep_dir, {0: "TERMINATED", 1: "RUNNING", 4: "ERROR"})
    by_config = {c["config"]: c["status"] for c in configs}
    assert by_config == {0: "interrupted/stopped early", 1: "interrupted",
                         2: "error/interrupted"}


def test_plot_of_a_sweep_groups_configurations_and_names_the_best(tmp_path):
    from rltpu import plot
    _, sweep_dir = fake_sweep(tmp_path, {0: [10.0, 20.0], 1: [100.0, 50.0], 2: [30.0, None]})
    runs, best = plot.sweep_runs(sweep_dir)
    assert best == "learning_rate=0.002"
    assert sorted({r.group for r in runs}) == ["learning_rate=0.001", "learning_rate=0.002",
                                               "learning_rate=0.003"]
    assert len(runs) == 5 and {r.name for r in runs} == {"seed 0", "seed 1"}
    fig = plot.make_figure(runs, best=best)
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert labels == ["learning_rate=0.001", "learning_rate=0.002 (best)",
                      "learning_rate=0.003"]  # a label per configuration, its colour
    out = tmp_path / "curves.png"
    assert cli.main(["plot", sweep_dir, "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --- The metrics-row hook ------------------------------------------------------------------

def test_a_row_hook_sees_every_row_and_stops_the_run_cleanly(tmp_path):
    pytest.importorskip("gymnax")
    from rltpu import agents, checkpoint
    rows = []

    def on_row(row):
        rows.append(row)
        return "the test" if len(rows) == 2 else None

    agent = agents.get("ppo")
    run = rltpu.RunConfig(mode="anakin", agent="ppo", env="gymnax:CartPole-v1", batch_size=8,
                          unroll_length=8, updates_per_call=2, total_env_steps=10_000_000,
                          target_return=None, log_every_s=0.01, run_dir=str(tmp_path / "run"),
                          compilation_cache=None)
    summary = rltpu.train(agent, agent.Config(), run, quiet=True, on_row=on_row)
    assert summary["stopped_by"] == "the test"
    # Asked at the second row, the run stops after its next compiled call, with a row of it.
    assert len(rows) == 3 and summary["learner_updates"] == 6
    with open(tmp_path / "run" / "metrics.jsonl") as f:
        assert [json.loads(line)["env_steps"] for line in f] == [r["env_steps"] for r in rows]
    assert checkpoint.list_checkpoints(str(tmp_path / "run"))[0][0] == 6


# --- Real sweeps on Ray Tune (slow) ------------------------------------------------------

def spec_for(tmp_path, space, seeds, budget, **more):
    return {"base": TINY, "space": space, "seeds": seeds, "budget": budget, **more}


def trial_times(run_dir):
    """When a trial's run started (its config.json) and ended (its summary.json)."""
    return (os.stat(os.path.join(run_dir, "config.json")).st_mtime,
            os.stat(os.path.join(run_dir, "summary.json")).st_mtime)


@pytest.mark.slow
def test_a_grid_of_2_seeds_is_queued_on_2_cpus_and_completes(tmp_path, ray_local, capsys):
    # 2 configurations x 2 seeds: 4 trials queue for 2 CPUs (the 2 x 2 grid's product is
    # checked without Ray, test_the_issues_smallest_spec_makes_4_configurations_of_2_seeds).
    assert ray_local.cluster_resources()["CPU"] == 2  # room for one trial (learner + actor)
    spec = spec_for(tmp_path, {"learning_rate": {"grid": [0.001, 0.005]}}, [0, 1], 1500)
    t0 = time.time()
    configs = rltpu.sweep(spec, str(tmp_path / "sweep"))
    print(f"4 trials in {time.time() - t0:.0f} s; load {os.getloadavg()}", file=sys.stderr)
    assert len(configs) == 2 and sweeps.complete(configs)
    assert {c["status"] for c in configs} == {"finished"} and {c["seeds"] for c in configs} == {2}
    out = capsys.readouterr().out
    assert "| rank | learning_rate | seeds | return mean |" in out
    sweep = sweeps.read_sweep(str(tmp_path / "sweep"))
    run_dirs = [sweep.run_dir(str(tmp_path / "sweep"), t) for t in sweep.trials]
    for run_dir, t in zip(run_dirs, sweep.trials):
        with open(os.path.join(run_dir, "config.json")) as f:
            config = json.load(f)
        assert config["run"]["seed"] == t["seed"] and config["run"]["num_actors"] == 1
        assert config["agent"]["learning_rate"] == t["values"]["learning_rate"]
        with open(os.path.join(run_dir, "summary.json")) as f:
            summary = json.load(f)
        assert summary["stopped_by"] is None and summary["env_steps"] >= 1500
    # Queued: each trial needs both CPUs, so no two ran at once.
    spans = sorted(trial_times(d) for d in run_dirs)
    assert all(end <= start for (_, end), (start, _) in zip(spans, spans[1:])), spans
    # Ordinary run directories: a policy loads from one, and the sweep plots.
    policy = rltpu.load(run_dirs[0])
    assert int(policy.act(np.zeros(4, np.float32))) in (0, 1)
    assert cli.main(["plot", str(tmp_path / "sweep")]) == 0
    assert (tmp_path / "sweep" / "curves.png").exists()


@pytest.mark.slow
def test_a_sweep_stopped_by_sigterm_resumes_without_rerunning_finished_trials(tmp_path):
    # A budget the SIGTERM lands inside on an idle machine too (at 8,000 the second trial
    # could finish its budget while the signal was on its way).
    # Two trials: the first finishes, the second is stopped part way (a third, queued behind
    # them, would run whole on resume and add only its time).
    budget = 30000
    spec = spec_for(tmp_path, None, [0, 1], budget)
    del spec["space"]
    path = write(tmp_path, json.dumps(spec), "spec.json")
    sweep_dir = tmp_path / "sweep"
    env = {**os.environ, "PYTHONPATH": REPO}
    first = subprocess.Popen([sys.executable, "-m", "rltpu.cli", "sweep", path, "--dir",
                              str(sweep_dir)], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    runs = sweep_dir / "runs"
    t0 = time.time()
    with ended(first):
        # Part way: the first trial finished, the second has a checkpoint.
        while time.time() - t0 < 600 and first.poll() is None:
            names = sorted(os.listdir(runs)) if runs.exists() else []
            if (len(names) >= 2 and (runs / names[0] / "summary.json").exists()
                    and (runs / names[1] / "checkpoints").exists()
                    and os.listdir(runs / names[1] / "checkpoints")):
                break
            time.sleep(0.5)
        assert first.poll() is None, said(first)
        first.send_signal(signal.SIGTERM)
        try:
            first.wait(timeout=180)
        except subprocess.TimeoutExpired:
            pytest.fail("the sweep did not end on SIGTERM: " + said(first))
        output = said(first)
    print(f"first leg {time.time() - t0:.0f} s", file=sys.stderr)
    assert first.returncode == 1, output
    assert f"resume it with: rltpu sweep --resume {sweep_dir}" in output
    names = sorted(os.listdir(runs))
    finished = runs / names[0]
    before = (finished / "metrics.jsonl").read_bytes(), (finished / "summary.json").read_bytes()
    with open(runs / names[1] / "summary.json") as f:
        stopped = json.load(f)
    assert stopped["stopped_by"] == sweeps.SWEEP_STOP, stopped  # a clean stop ...
    assert stopped["checkpoint"] is not None  # ... with a final checkpoint ...
    assert stopped["env_steps"] < budget  # ... part way
    t1 = time.time()
    second = subprocess.run([sys.executable, "-m", "rltpu.cli", "sweep", "--resume",
                             str(sweep_dir)], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=900)
    print(f"resumed leg {time.time() - t1:.0f} s; load {os.getloadavg()}", file=sys.stderr)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "| finished |" in second.stdout
    # The finished trial was not run again; the stopped one went on from its checkpoint.
    assert ((finished / "metrics.jsonl").read_bytes(),
            (finished / "summary.json").read_bytes()) == before
    with open(runs / names[1] / "summary.json") as f:
        resumed = json.load(f)
    assert resumed["stopped_by"] is None and resumed["env_steps"] >= budget
    assert resumed["resumed_from_update"] == stopped["learner_updates"]
    _, trials, configs = sweeps.read_results(str(sweep_dir))
    assert [t["status"] for t in trials] == ["finished"] * 2


@pytest.mark.slow
def test_asha_stops_a_configuration_that_cannot_learn_early(tmp_path, ray_local):
    # RMSProp's learning rate must be positive: 1e-9 is the arm that cannot learn. The good
    # arm runs first (trials queue on 2 CPUs), so the bad one meets its result at the rung.
    # A trial stops at its first metrics row after Tune's decision (and one update more):
    # rows every 0.25 s keep that within a few hundred env steps of the rung.
    spec = spec_for(tmp_path, {"learning_rate": {"grid": [0.005, 1e-9]}}, [0], 12000,
                    scheduler={"name": "asha", "grace": 3000, "reduction": 2})
    spec["base"] = {**spec["base"], "log_every_s": 0.25}
    t0 = time.time()
    configs = rltpu.sweep(spec, str(tmp_path / "sweep"), quiet=True)
    print(f"ASHA sweep {time.time() - t0:.0f} s; load {os.getloadavg()}", file=sys.stderr)
    assert [(c["learning_rate"], c["status"]) for c in configs] == [
        (0.005, "finished"), (1e-9, "stopped early")], configs
    sweep = sweeps.read_sweep(str(tmp_path / "sweep"))
    with open(os.path.join(sweep.run_dir(str(tmp_path / "sweep"), sweep.trials[1]),
                           "summary.json")) as f:
        stopped = json.load(f)
    assert stopped["stopped_by"] == sweeps.SWEEP_STOP and stopped["checkpoint"] is not None
    print(f"stopped at {stopped['env_steps']} env steps", file=sys.stderr)
    assert 3000 <= stopped["env_steps"] < 8000  # stopped at the first rung, not run to 12000


@pytest.mark.slow
def test_anakin_trials_ask_for_one_cpu_and_run_side_by_side(tmp_path, ray_local):
    pytest.importorskip("gymnax")
    spec = {"base": {"mode": "anakin", "agent": "ppo", "env": "gymnax:CartPole-v1",
                     "batch_size": 8, "unroll_length": 8, "target_return": None,
                     "log_every_s": 1.0},
            "seeds": [0, 1], "budget": 3000}
    t0 = time.time()
    configs = rltpu.sweep(spec, str(tmp_path / "sweep"), quiet=True)
    print(f"2 Anakin trials in {time.time() - t0:.0f} s; load {os.getloadavg()}", file=sys.stderr)
    assert [(c["seeds"], c["status"]) for c in configs] == [(2, "finished")]
    sweep = sweeps.read_sweep(str(tmp_path / "sweep"))
    (start0, end0), (start1, end1) = [trial_times(sweep.run_dir(str(tmp_path / "sweep"), t))
                                      for t in sweep.trials]
    assert start1 < end0 and start0 < end1  # one CPU each: both ran at once on 2 CPUs
