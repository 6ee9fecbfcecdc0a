"""Malformed input of every kind, fed to every command: each ends in exit status 0 or 2, a
failure in exactly one line on stderr (``rltpu: error: ...``), never a traceback, nothing
started and nothing written outside the run directory (nothing at all on a failure).

Cases are drawn with ``random`` from a fixed seed, so a failure reproduces. The CLI runs in
this process (the ``cli_in_process`` fixture): a valid case stops where training would
start, and counts as exit 0.
"""
import json
import os
import random
import shutil

import pytest

from tests.test_cli_resume import REPO, make_run

SEED = 15
TRAIN_CASES, RESUME_CASES, EVAL_CASES, PLOT_CASES = 150, 40, 40, 40

VALUES = ["", " ", "0", "-1", "1", "2", "3", "1.5", "-0.5", "nan", "inf", "-inf", "1e20",
          "100000000000000000000", "1" * 40, "abc", "none", "None", "true", "{}", "[1, 2]",
          "..", "/", "/dev/null", "-", "\u00e9\u00e8", "os:getcwd", "os:system", "os:path",
          "subprocess:Popen", "nosuchmodule:X", "rltpu.envs.fake:CountingEnv", "gymnax:Nope",
          "gymnax:CartPole-v1", "CartPole-v1", "CartPol-v1", "Pendulum-v1", "impala", "ppo",
          "dqn", "ray", "anakin", "warp", "16", "32", "64", "128"]
# Flags that are never fuzzed: the multi-host ones would join a JAX program (only alone,
# incomplete, are they refused before), --wandb talks to a service, --run-dir is chosen
# below (inside the case's folder), --quiet only hides progress.
NOT_FUZZED = {"--distributed", "--coordinator", "--num-processes", "--learner-hosts",
              "--learner-resources", "--wandb", "--no-wandb", "--run-dir", "--quiet", "--help",
              "-h", "--resume", "--preset"}
JSON_VALUES = [None, True, False, 0, -1, 1, 2**70, 1.5, float("nan"), float("inf"), 1e308,
               "", "x", "os:getcwd", [], [1], {}, {"a": 1}]


@pytest.fixture(scope="module")
def good_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("base") / "run"
    make_run(run)
    (run / "metrics.jsonl").write_text("".join(
        json.dumps({"time_s": i, "env_steps": 256 * i, "mean_return": 10.0 + i, "env_sps": 256})
        + "\n" for i in range(1, 6)))
    return run


def snapshot(folder):
    found = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = os.path.join(root, name)
            st = os.lstat(path)
            found[os.path.relpath(path, folder)] = (st.st_size, st.st_mtime_ns, st.st_mode)
    return found


def check(argv, status, err, before, after, allowed=()):
    """The rules every case keeps; ``allowed``: folders (relative) a valid case may write."""
    lines = err.strip().splitlines()
    assert "Traceback" not in err, f"{argv}:\n{err[-3000:]}"
    assert status in (0, 2), f"{argv}: status {status}\n{err[-3000:]}"
    if status == 2:
        assert len(lines) == 1 and lines[0].startswith("rltpu: error: "), f"{argv}:\n{err}"
        assert after == before, f"{argv}: a failure wrote {set(after.items()) ^ set(before.items())}"
    else:
        assert all(line.startswith("rltpu: ") for line in lines), f"{argv}:\n{err}"
        changed = {p for p in set(after) | set(before) if after.get(p) != before.get(p)}
        outside = {p for p in changed  # (the run directory's parents are made as needed)
                   if not any(p == a or p.startswith(a + os.sep) or a.startswith(p + os.sep)
                              for a in allowed)}
        assert not outside, f"{argv}: wrote outside the run directory: {outside}"


def random_flags(rng, parser_flags, count):
    argv = []
    for flag in rng.sample(parser_flags, count):
        value = rng.choice(VALUES)
        argv += [flag] if rng.random() < 0.1 else [flag, value]
    return argv


def train_flags():
    from rltpu import agents
    from rltpu.config import RunConfig
    import dataclasses
    names = [f.name for f in dataclasses.fields(RunConfig)]
    names += [f.name for f in dataclasses.fields(agents.get("impala").Config)]
    flags = ["--" + n.replace("_", "-") for n in names]
    return sorted({f for f in flags if f not in NOT_FUZZED} | {"--process-id", "--agent",
                                                               "--env", "--trust-run-code"})


def test_train_flags(cli_in_process, tmp_path):
    rng = random.Random(SEED)
    flags, valid = train_flags(), 0
    for i in range(TRAIN_CASES):
        folder = tmp_path / f"case{i}"
        folder.mkdir()
        argv = ["train", *random_flags(rng, flags, rng.randint(1, 3))]
        if rng.random() < 0.3:
            argv += ["--run-dir", rng.choice(["run", "", "runs/x/y", "file/run", "file", "."])]
            (folder / "file").write_text("")
        before = snapshot(folder)
        status, out, err, plan = cli_in_process(argv, folder)
        allowed = [os.path.relpath(plan.run_dir, folder)] if plan else []
        check(argv, status, err, before, snapshot(folder), allowed)
        valid += plan is not None
    print(f"{valid} of {TRAIN_CASES} valid")
    assert 0 < valid < TRAIN_CASES  # both kinds were drawn


def damage_config(rng, config_path):
    config = json.loads(config_path.read_text())
    kind = rng.randrange(6)
    if kind == 0:
        config_path.write_bytes(rng.choice([b"", b"{", b"\xff\xfe", b"[]", b"null", b'"run"']))
        return
    if kind == 1:
        config = rng.choice([[], {"run": []}, {"run": {}, "agent": {}}, {"agent": {}},
                             {"run": config["run"]}, {"run": config["run"], "agent": 3}])
    elif kind in (2, 3):
        section = rng.choice(["run", "agent"])
        key = rng.choice(sorted(config[section]))
        config[section][key] = rng.choice(JSON_VALUES)
    elif kind == 4:
        config["run"][rng.choice(["agent", "env"])] = rng.choice(
            ["os:getcwd", "subprocess:Popen", "nosuchmodule:X", "ppo", "dqn", "CartPol-v1",
             "gymnax:CartPole-v1", 3, None])
    else:
        config[rng.choice(["run", "agent"])]["unknown_setting"] = rng.choice(JSON_VALUES)
    config_path.write_text(json.dumps(config))


def damage_checkpoints(rng, run):
    # Orbax names its array data files at random (and may write four or five): they are
    # damaged together, as one, so the same seed damages the same parts every time.
    parts = {}
    for path in sorted(p for p in (run / "checkpoints").rglob("*") if p.is_file()):
        part = str(path.parent) if path.parent.name == "d" else str(path)
        parts.setdefault(part, []).append(path)
    for part in rng.sample(sorted(parts), rng.randint(1, 3)):
        kind, cut, value = rng.randrange(4), rng.random(), rng.choice(JSON_VALUES)
        junk = bytes(rng.randrange(256) for _ in range(rng.randrange(64)))
        for path in parts[part]:
            if kind == 0:
                path.write_bytes(path.read_bytes()[:int(cut * path.stat().st_size)])
            elif kind == 1:
                path.write_bytes(junk)
            elif kind == 2:
                path.unlink()
            else:
                path.write_text(json.dumps(value))


def damage_metrics(rng, run):
    lines = (run / "metrics.jsonl").read_text().splitlines(keepends=True)
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(len(lines) + 1)
        line = rng.choice([
            "{\n", "garbage\n", "[]\n", "null\n", "\n", '{"env_steps": "x"}\n',
            '{"time_s": NaN, "env_steps": Infinity}\n', '{"env_steps": 1e999}\n',
            json.dumps({"env_steps": 10**400}) + "\n", '{"mean_return": true}\n',
            '{"time_s": -5}\n', '{"env_steps": 1', "\xff\xfe\n"])
        lines.insert(i, line)
    (run / "metrics.jsonl").write_text("".join(lines))


def damaged_copy(rng, good_run, folder):
    run = folder / "run"
    shutil.copytree(good_run, run)
    damage = rng.sample([damage_config, damage_checkpoints, damage_metrics, None], 2)
    for fn in damage:
        if fn is not None:
            fn(rng, run) if fn is not damage_config else fn(rng, run / "config.json")
    return run


def test_resume_eval_and_plot_of_damaged_runs(cli_in_process, tmp_path, good_run):
    rng = random.Random(SEED + 1)
    resume_flags = ["--total-env-steps", "--target-return", "--num-actors", "--log-every-s",
                    "--max-in-flight", "--keep-checkpoints", "--checkpoint-every-minutes",
                    "--agent", "--env", "--hidden-sizes", "--run-dir", "--trust-run-code"]
    eval_flags = ["--checkpoint", "--seed", "--agent", "--env", "--trust-run-code"]
    counts = {"train": [0, 0], "eval": [0, 0], "plot": [0, 0]}
    for i in range(RESUME_CASES + EVAL_CASES + PLOT_CASES):
        folder = tmp_path / f"case{i}"
        folder.mkdir()
        run = damaged_copy(rng, good_run, folder)
        if i < RESUME_CASES:
            argv = ["train", "--resume", "run", *random_flags(rng, resume_flags, rng.randint(0, 2))]
        elif i < RESUME_CASES + EVAL_CASES:
            argv = ["eval", "run", "--episodes", rng.choice(["1", "0", "-3", "x", "1"]),
                    *random_flags(rng, eval_flags, rng.randint(0, 2))]
        else:
            argv = ["plot", "run", *rng.choice([[], ["run"], ["--out", "run/c.png"],
                                                 ["--out", "nowhere/c.png"], ["nosuchrun"]])]
        before = snapshot(folder)
        status, out, err, plan = cli_in_process(argv, folder)
        # (plot's output: RUN_DIR/curves.png, or curves.png here for several runs, or --out)
        allowed = ["run", "curves.png"] if argv[0] == "plot" else ["run"]
        check(argv, status, err, before, snapshot(folder), allowed)
        counts[argv[0]][status == 0] += 1
        assert run.exists()
    print(counts)  # (failures, successes) of each command
    assert all(failed > 0 for failed, _ in counts.values())
    assert all(ok > 0 for _, ok in counts.values())


@pytest.mark.parametrize("source, message", [
    ("raise RuntimeError('no GPU here')\n",
     "cannot load agent 'broken_agent:Agent': importing broken_agent raised RuntimeError: no "
     "GPU here"),
    ("def f(:\n", "cannot load agent 'broken_agent:Agent': importing broken_agent raised "
                  "SyntaxError: invalid syntax"),
])
def test_agent_module_that_fails_to_import_is_one_line(cli_in_process, tmp_path, monkeypatch,
                                                      source, message):
    (tmp_path / "broken_agent.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    status, _, err, _ = cli_in_process(["train", "--agent", "broken_agent:Agent"], tmp_path)
    assert status == 2 and err.startswith(f"rltpu: error: {message}"), err
    assert len(err.strip().splitlines()) == 1 and sorted(os.listdir(tmp_path)) == [
        "broken_agent.py", "ray"]


def test_a_callable_that_is_not_an_env_is_refused_uncalled(cli_in_process, tmp_path):
    status, _, err, _ = cli_in_process(["train", "--env", "os:getcwd"], tmp_path)
    assert status == 2 and err.strip() == (
        "rltpu: error: env 'os:getcwd' is not a gymnasium.Env class nor a Python function "
        "returning one (it is builtin_function_or_method <built-in function getcwd>)"), err


def test_a_function_that_makes_no_env_is_one_line(cli_in_process, tmp_path, monkeypatch):
    (tmp_path / "not_an_env.py").write_text("def make():\n    return 'an env, honest'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    status, _, err, _ = cli_in_process(["train", "--env", "not_an_env:make"], tmp_path)
    assert status == 2 and err.strip() == (
        "rltpu: error: env 'not_an_env:make' made a str, not a gymnasium.Env"), err


def test_distributed_auto_off_a_tpu_is_one_line(tmp_path):
    """(A subprocess: it asks JAX to join a multi-process program.)"""
    import subprocess
    import sys
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "RAY_ADDRESS": "", "PYTHONPATH": REPO}
    out = subprocess.run([sys.executable, "-m", "rltpu.cli", "train", "--distributed", "auto"],
                         env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stderr.startswith(
        "rltpu: error: --distributed auto: the TPU runtime did not say where the other hosts "
        "are ("), out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and not os.listdir(tmp_path)
