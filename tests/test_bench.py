"""The research benchmarks' flags and tables (bench/minatar.py, bench/mujoco.py; no learning),
and the presets they run (ppo-minatar, ppo-minatar-blines, ppo-mujoco)."""
import dataclasses
import importlib.util
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load(name):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", os.path.join(ROOT, "bench", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("script,args,message", [
    ("minatar", ["--games", "Breakout,Pong"],
     "--games 'Breakout,Pong': Pong is not one of Breakout, SpaceInvaders, Freeway, Asterix"),
    ("minatar", ["--total-env-steps", "1000"],
     "--total-env-steps 1000 is less than one update (8192 steps: 64 envs x 128)"),
    ("minatar", ["--total-env-steps", "ten"], "argument --total-env-steps: 'ten' is not a number"),
    ("minatar", ["--peer-dir", "/nonexistent"],
     "--peer-dir /nonexistent: no run.py there (PureJaxRL's runner)"),
    ("minatar", ["--preset", "ppo-minatar-blines"],
     "--preset ppo-minatar-blines: PureJaxRL's runner cannot take its settings (network, "
     "discount, step size); add --skip peer"),
    ("minatar", ["--preset", "ppo-atari"], "argument --preset: invalid choice: 'ppo-atari'"),
    ("mujoco", ["--envs", "Ant-v5"],
     "--envs 'Ant-v5': Ant-v5 is not one of Hopper-v5, HalfCheetah-v5, Walker2d-v5"),
    ("mujoco", ["--seeds", "0"], "argument --seeds: '0' is not a positive integer"),
    ("mujoco", ["--skip", "both"], "argument --skip: invalid choice: 'both'"),
    ("mujoco", ["--peers-python", "/nonexistent"], "--peers-python /nonexistent: not an executable"),
    ("mujoco", ["--table-from", "/nonexistent.jsonl"], "--table-from /nonexistent.jsonl: no such file"),
    ("mujoco", ["--num-actors", "3"],
     "--num-actors 3: must divide ppo-mujoco's 2048-step rollout (1, 2, 4, 8, ...)"),
])
@pytest.mark.jax_independent
def test_bad_flags_are_one_line_and_exit_2(script, args, message, tmp_path):
    result = subprocess.run([sys.executable, os.path.join(ROOT, "bench", f"{script}.py"), *args,
                             "--runs-dir", str(tmp_path / "runs")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    assert result.stderr.startswith(f"bench/{script}.py: error: ")
    assert not (tmp_path / "runs").exists()  # refused before anything ran


@pytest.mark.jax_independent
def test_flags_parse_with_their_defaults():
    minatar, mujoco = load("minatar"), load("mujoco")
    args = minatar.parse(["--games", "Freeway,Breakout", "--total-env-steps", "1e6",
                          "--skip", "peer"])
    assert (args.games, args.total_env_steps, args.skip) == (["Freeway", "Breakout"], 1_000_000, "peer")
    assert args.preset == "ppo-minatar"
    assert minatar.parse(["--preset", "ppo-minatar-blines", "--skip", "peer"]).preset == \
        "ppo-minatar-blines"
    # (without --skip peer the peer's runner must exist: ../shared/peers beside the checkout,
    # which a clone elsewhere does not have)
    assert minatar.parse(["--skip", "peer"]).games == ["Breakout", "SpaceInvaders", "Freeway",
                                                       "Asterix"]
    args = mujoco.parse(["--envs", "Walker2d-v5", "--seeds", "2", "--skip", "sb3"])
    assert (args.envs, args.seeds, args.total_env_steps) == (["Walker2d-v5"], 2, 1_000_000)


@pytest.mark.jax_independent
def test_minatar_table():
    minatar = load("minatar")
    rows = [{"game": "Breakout", "framework": "rltpu", "sps": 30_000.0, "final_return": 30.5,
             "env_steps": 10_000_000, "train_cpu_s": 250.0, "load_before": 3.0,
             "load_after": 5.5},
            {"game": "Breakout", "framework": "purejaxrl", "sps": 20_000, "final_return": 27.25,
             "env_steps": 8_000_000, "train_cpu_s": 300.0, "load_before": 5.5, "load_after": 4.0},
            {"game": "Asterix", "framework": "purejaxrl", "sps": 10_000, "final_return": 2.0,
             "env_steps": 8192, "load_before": 1.0, "load_after": 1.0}]
    lines = minatar.table(rows).splitlines()
    # CPU seconds per 1M steps: 250 / 10 = 25.0 and 300 / 8 = 37.5; 37.5 / 25 = 1.50x.
    assert lines[2] == ("| Breakout | 10.0M | 30,000 | 20,000 | 1.50x | 25.0 | 37.5 | 1.50x "
                        "| 30.5 | 27.2 | 28 (met) | 3.0-5.5 |")
    # (a row of an older results file has no CPU time)
    assert lines[3] == "| Asterix | 0.0M | - | 10,000 | - | - | - | - | - | 2.0 | 15 (-) | 1.0-1.0 |"
    assert len(lines) == 4 and lines[1].count("---") == 12


@pytest.mark.jax_independent
def test_cpu_clock_reads_a_phase_of_a_child(tmp_path):
    """The CPU a child spent between two moments it names: about 0.6 s in a busy phase it
    measures itself, nearly none while it sleeps, whatever share of the cores it gets."""
    sys.path.insert(0, ROOT)
    from bench.common import CpuClock
    child = ("import json, time\n"
             "time.sleep(0.6); asleep = time.time(); time.sleep(0.6); busy = time.time()\n"
             "c = time.process_time()\n"
             "while time.process_time() - c < 0.6: pass\n"
             "print(json.dumps([asleep, busy, time.time(), time.process_time() - c]))\n"
             "time.sleep(0.3)\n")
    clock = CpuClock(every_s=0.05)
    result = clock.run([sys.executable, "-c", child], timeout_s=60)
    assert result.returncode == 0, result.stderr
    asleep, busy, done, spent = json.loads(result.stdout)
    start = lambda t: t - clock.launched
    assert clock.cpu_between(start(asleep), start(busy)) < 0.05
    # Interpolating across the samples either side of a moment errs by at most the CPU the
    # (one-threaded) child spent between them: their wall gap, plus the 10 ms clock ticks.
    def gap(t):
        times = [clock.launched] + [when for when, _ in clock.samples]
        return min(b - a for a, b in zip(times, times[1:]) if a <= t <= b)
    bound = gap(busy) + gap(done) + 0.02
    assert abs(clock.cpu_between(start(busy), start(done)) - spent) <= bound, (spent, bound)
    assert clock.samples[-1][1] >= spent and clock.samples[-1][0] >= done


@pytest.mark.jax_independent
def test_mujoco_table_takes_medians_over_seeds():
    mujoco = load("mujoco")
    row = lambda framework, seed, ret, wall, sps: {
        "env": "Hopper-v5", "framework": framework, "seed": seed, "final_return": ret,
        "wall_s": wall, "sps": sps, "env_steps": 1_000_000, "load_before": 2.0 + seed,
        "load_after": 4.0}
    rows = [row("rltpu", 0, 2500.0, 100.0, 900.0), row("rltpu", 1, 1000.0, 300.0, 800.0),
            row("rltpu", 2, 2400.0, 200.0, 1000.0), row("sb3", 0, 2000.0, 500.0, 100.0),
            row("sb3", 1, 1500.0, 420.0, 120.0)]
    lines = mujoco.table(rows).splitlines()
    assert lines[2] == ("| Hopper-v5 | 1,000,000 | 3 | 2400.0 | 1750.0 | 2382.9 (met) | 200 | 460 "
                        "| 0.43x (met) | 900 | 110 | 2.0-4.0 |")
    # rltpu's rollout split between actors (--num-actors) is named beside the env
    split = [{**r, "num_actors": 2} if r["framework"] == "rltpu" else r for r in rows]
    assert mujoco.table(split).splitlines()[2].startswith("| Hopper-v5 (rltpu: 2 actors) | ")


def test_mujoco_num_actors_split_the_presets_rollout():
    """--num-actors N: N actors of one env, 2048 / N steps each, still 2048 samples an update."""
    from rltpu.agents import presets
    from rltpu.config import RunConfig
    mujoco = load("mujoco")
    assert mujoco.rltpu_flags(1) == []
    assert mujoco.rltpu_flags(4) == ["--num-actors", "4", "--unroll-length", "512",
                                     "--batch-size", "4"]
    preset = presets.get("ppo-mujoco")
    for n in (1, 2, 4):
        flags = mujoco.rltpu_flags(n)
        split = dict(zip(flags[::2], map(int, flags[1::2])))
        run = RunConfig(agent="ppo", **{**preset.run, "num_actors": split.get("--num-actors", 1),
                                        "unroll_length": split.get("--unroll-length", 2048),
                                        "batch_size": split.get("--batch-size", 1)})
        assert run.samples_per_batch == preset.run["unroll_length"] == 2048
        assert run.num_actors * run.envs_per_actor == run.batch_size == n


@pytest.mark.jax_independent
def test_table_from_an_earlier_run(tmp_path):
    out = tmp_path / "results.jsonl"
    out.write_text(json.dumps({"game": "Freeway", "framework": "rltpu", "sps": 5.0,
                               "final_return": 60.0, "env_steps": 8192, "load_before": 1.0,
                               "load_after": 2.0}) + "\n")
    result = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "minatar.py"),
                             "--table-from", str(out)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "| Freeway | 0.0M | 5 | - | - | - | - | - | 60.0 | - | 58 (met) | 1.0-2.0 |" in result.stdout


def test_research_presets_build_and_read_back_from_a_file(tmp_path):
    from rltpu import agents, envs
    from rltpu.agents import presets
    from rltpu.config import RunConfig
    from rltpu.envs import jax_envs
    minatar, mujoco = presets.get("ppo-minatar"), presets.get("ppo-mujoco")
    assert (minatar.run["batch_size"], minatar.run["unroll_length"]) == (64, 128)
    assert (minatar.agent_config["num_epochs"], minatar.agent_config["num_minibatches"],
            minatar.agent_config["learning_rate"]) == (4, 8, 5e-4)
    assert mujoco.run["normalize_observations"] and mujoco.run["normalize_rewards"]
    assert mujoco.run["unroll_length"] == 2048
    assert mujoco.agent_config["weight_init"] == "orthogonal"  # CleanRL's; Hopper needed it
    blines = presets.get("ppo-minatar-blines")  # gymnax-blines' ppo.yaml
    assert (blines.agent_config["hidden_sizes"], blines.agent_config["activation"],
            blines.agent_config["discount"], blines.agent_config["anneal_lr"]) == (
                (256, 256), "relu", 0.999, False)
    assert dict(blines.run) == dict(minatar.run)
    impala = presets.get("impala-minatar")  # the settings of its 10M-step Breakout run
    assert (impala.run["mode"], impala.run["batch_size"], impala.run["unroll_length"]) == (
        "anakin", 128, 20)
    assert (impala.agent_config["optimizer"], impala.agent_config["discount"],
            impala.agent_config["entropy_cost"]) == ("adam", 0.999, 0.05)
    for preset, spec in ((minatar, jax_envs.make("gymnax:SpaceInvaders-MinAtar")[1]),
                         (blines, jax_envs.make("gymnax:Breakout-MinAtar")[1]),
                         (impala, jax_envs.make("gymnax:Asterix-MinAtar")[1]),
                         (mujoco, envs.make_spec("Walker2d-v5"))):
        agent = agents.get(preset.agent)
        agent.build(spec, agent.Config(**preset.agent_config),
                    RunConfig(agent=preset.agent, **preset.run))
    # A preset file of the same values gives the same settings as the built-in name.
    env = {**os.environ, "RAY_ADDRESS": "", "PYTHONPATH": ROOT}
    printed = []
    for name in ("ppo-minatar", "ppo-mujoco"):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({k: list(v) if isinstance(v, tuple) else v
                                    for k, v in dataclasses.asdict(presets.get(name)).items()}))
        for given in (name, str(path)):
            result = subprocess.run([sys.executable, "-m", "rltpu.cli", "train", "--preset", given,
                                     "--print-config"], capture_output=True, text=True,
                                    timeout=120, env=env, cwd=tmp_path)
            assert result.returncode == 0, result.stderr
            printed.append(json.loads(result.stdout))
    assert printed[0] == printed[1] and printed[2] == printed[3]
    assert printed[0]["run"]["mode"] == "anakin" and printed[2]["run"]["on_policy"]
    assert printed[2]["agent"]["weight_init"] == "orthogonal"
