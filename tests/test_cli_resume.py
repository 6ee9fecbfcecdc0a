"""Bad input around checkpoints, resume and eval: one line on stderr naming the value, exit
status 2, before Ray starts, and no run directory or checkpoint touched."""
import dataclasses
import json
import os
import subprocess
import sys

import pytest

from rltpu import agents
from rltpu import envs
from rltpu import checkpointer, devices
from rltpu.config import RunConfig
from rltpu.learner import Learner
from tests.test_cli import refused

IMPALA = agents.get("impala")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_run(run_dir, steps=(10, 20)):
    """A run directory as ``rltpu train`` leaves it: config.json and real checkpoints."""
    run = RunConfig(run_dir=str(run_dir), checkpoint_every_updates=10)
    config = {"run": dataclasses.asdict(run), "agent": dataclasses.asdict(IMPALA.Config())}
    os.makedirs(run_dir)
    (run_dir / "config.json").write_text(json.dumps(config))
    spec = envs.make_spec(run.env)
    learner = Learner(IMPALA.build(spec, IMPALA.Config()), spec, devices.make_mesh(1), 0,
                      run.unroll_length, run.batch_size)
    saver = checkpointer.Checkpointer(str(run_dir), run, config)
    for step in steps:
        saver.save(step, learner.state, {"env_steps": step * 256, "episodes": step}, None)
    saver.wait()
    saver.close()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("runs")
    make_run(base / "good")
    make_run(base / "broken")  # every checkpoint damaged or cut off
    ckpts = base / "broken" / "checkpoints"
    for name in os.listdir(ckpts / "20" / "state" / "d"):
        os.truncate(ckpts / "20" / "state" / "d" / name, 3)
    os.rename(ckpts / "10", ckpts / "10.orbax-checkpoint-tmp-1")
    (base / "no-config").mkdir()
    return base


def snapshot(directory):
    found = {}
    for root, dirs, files in os.walk(directory):
        for name in dirs + files:
            st = os.stat(os.path.join(root, name))
            found[os.path.relpath(os.path.join(root, name), directory)] = (st.st_size, st.st_mtime_ns)
    return found


CASES = [
    (["train", "--resume", "{good}", "--hidden-sizes", "32"],
     "--hidden-sizes cannot change on --resume (saved (64, 64), got (32,)); start a new run"),
    (["train", "--resume", "{good}", "--env", "Acrobot-v1"],
     "--env cannot change on --resume (saved 'CartPole-v1', got 'Acrobot-v1')"),
    (["train", "--resume", "{good}", "--batch-size", "32"],
     "--batch-size cannot change on --resume (saved 16, got 32)"),
    (["train", "--resume", "{good}", "--learning-rate", "0.1"],
     "--learning-rate cannot change on --resume (saved 0.005, got 0.1)"),
    (["train", "--resume", "{good}", "--seed", "3"], "--seed cannot change on --resume"),
    (["train", "--resume", "{good}", "--run-dir", "elsewhere"],
     "--run-dir cannot be given with --resume; the run continues in {good}"),
    (["train", "--resume", "{good}", "--total-env-steps", "0"],
     "--total-env-steps must be a positive integer, got 0"),
    (["train", "--resume", "{good}", "--checkpoint-every-minutes", "-1"],
     "--checkpoint-every-minutes must be > 0 or none, got -1.0"),
    (["train", "--resume", "{good}", "--num-devices", "64"], "--num-devices 64 but only"),
    (["train", "--resume", "{base}/missing"], "--resume {base}/missing: no such run directory"),
    (["train", "--resume", "{base}/no-config"], "--resume {base}/no-config: cannot read its config.json"),
    (["train", "--resume", "{broken}"],
     "no complete checkpoint in {broken}/checkpoints (skipped 10.orbax-checkpoint-tmp-1: cut off "
     "mid-write, 20: corrupt"),
    (["train", "--checkpoint-every-updates", "0"],
     "--checkpoint-every-updates must be a positive integer or none, got 0"),
    (["train", "--keep-checkpoints", "0"], "--keep-checkpoints must be a positive integer, got 0"),
    (["train", "--max-actor-restarts", "-1"],
     "--max-actor-restarts must be a non-negative integer, got -1"),
    (["train", "--max-nonfinite-updates", "0"],
     "--max-nonfinite-updates must be a positive integer, got 0"),
    (["train", "--checkpoint-every-minutes", "soon"], "invalid float value: 'soon'"),
]


@pytest.mark.parametrize("args,message", CASES, ids=[" ".join(a) for a, _ in CASES])
def test_bad_input_is_one_line_exit_2_and_touches_nothing(args, message, runs, cli_in_process,
                                                          tmp_path):
    names = {"base": runs, "good": runs / "good", "broken": runs / "broken"}
    before = snapshot(runs)
    refused(cli_in_process, [a.format(**names) for a in args], tmp_path, message.format(**names))
    assert snapshot(runs) == before, "a run directory or checkpoint was changed"


def test_ray_without_token_authentication_is_refused(tmp_path):
    env = {**os.environ, "RAY_ADDRESS": "", "RAY_TMPDIR": str(tmp_path / "ray"),
           "RAY_AUTH_MODE": "disabled"}
    result = subprocess.run([sys.executable, "-m", "rltpu.cli", "train"], env=env,
                            capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "rltpu: error: RAY_AUTH_MODE=disabled: rltpu runs Ray only with token authentication "
        "(anyone who can reach a Ray cluster can run code on it); unset it")
    assert not (tmp_path / "ray").exists() and not (tmp_path / "runs").exists()
