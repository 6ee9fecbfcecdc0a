"""Bad input: one line on stderr naming the value, exit status 2, before Ray starts, and
nothing the user has is touched."""
import importlib.util
import os
import subprocess
import sys

import pytest

CASES = [
    (["--env", "CartPole-v9"], "unknown env 'CartPole-v9'"),
    (["--env", "nosuchmodule:Env"], "unknown env 'nosuchmodule:Env'"),
    (["--agent", "sarsa"], "unknown agent 'sarsa'; valid: dqn, impala, ppo, r2d2"),
    (["--agent", "dqn", "--env", "Pendulum-v1"], "agent 'dqn' needs a Discrete action space"),
    (["--agent", "dqn", "--sample-size", "12"], "--sample-size 12 is not divisible by the 8"),
    (["--agent", "ppo", "--num-minibatches", "3"], "--num-minibatches 3 does not divide the 256"),
    (["--env", "rltpu.envs.fake:MultiBinaryActionEnv"], "acts in Discrete or Box action spaces"),
    (["--network-lib", "torch"], "--network-lib: invalid choice: 'torch' (choose from 'flax', 'haiku')"),
    (["--batch-size", "36", "--envs-per-actor", "4"], "not divisible by the 8 learner devices"),
    (["--batch-size", "48", "--envs-per-actor", "32"], "must be a multiple of --envs-per-actor 32"),
    (["--num-actors", "0"], "--num-actors must be a positive integer, got 0"),
    (["--unroll-length", "-5"], "--unroll-length must be a positive integer, got -5"),
    (["--total-env-steps", "0"], "--total-env-steps must be a positive integer, got 0"),
    (["--learning-rate", "-0.1"], "--learning-rate must be > 0, got -0.1"),
    (["--discount", "1.5"], "--discount must be in [0, 1], got 1.5"),
    (["--plan-steps", "0"], "--plan-steps must be a positive integer, got 0"),
    (["--num-actors", "two"], "invalid int value: 'two'"),
    (["--mode", "anakin"], "--mode anakin needs a JAX env, gymnax:NAME (e.g. gymnax:CartPole-v1); "
                           "got --env 'CartPole-v1'"),
    (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    (["--coordinator", "127.0.0.1:8476"], "needs all of --coordinator HOST:PORT, --num-processes"),
    (["--coordinator", "localhost", "--num-processes", "2", "--process-id", "0"],
     "--coordinator 'localhost' is not HOST:PORT"),
    (["--coordinator", "h:1", "--num-processes", "2", "--process-id", "2"],
     "--process-id 2 is not in 0..1 (--num-processes 2)"),
    (["--coordinator", "h:1", "--num-processes", "0", "--process-id", "0"],
     "--num-processes must be a positive integer, got 0"),
    (["--distributed", "auto", "--process-id", "1"], "--distributed auto takes no --coordinator"),
    (["--distributed", "manual"], "invalid choice: 'manual'"),
    (["--preset", "atari"], "unknown preset 'atari'; valid: dqn-atari, impala-atari, ppo-atari"),
    (["--preset", "dqn-atari", "--agent", "ppo"], "--preset dqn-atari is for agent dqn, not 'ppo'"),
    (["--agent", "dqn", "--core", "lstm"], "--core lstm: agent 'dqn' is feed-forward"),
    (["--core", "rnn"], "--core: invalid choice: 'rnn' (choose from 'none', 'lstm', 'gru')"),
    (["--core", "lstm", "--core-size", "0"], "--core-size must be a positive integer, got 0"),
    (["--agent", "ppo", "--core", "gru", "--num-minibatches", "3"],
     "--num-minibatches 3 does not divide --batch-size 16: with --core gru minibatches"),
    (["--agent", "r2d2", "--env", "Pendulum-v1"], "agent 'r2d2' needs a Discrete action space"),
    (["--agent", "r2d2", "--burn-in", "16"],
     "--burn-in 16 is not shorter than the sequence length --unroll-length 16"),
    (["--agent", "r2d2", "--core", "none"], "--core none: agent 'r2d2' is recurrent"),
    (["--torso", "nature"], "--torso nature needs image observations [C, H, W]; these are (4,)"),
    (["--env-backend", "ale"], "--env-backend ale is for Atari games (ALE/...), not 'CartPole-v1'"),
    (["--compilation-cache", "/dev/null"], "--compilation-cache '/dev/null' is not a directory"),
    (["--learner-hosts", "0"], "--learner-hosts must be a positive integer, got 0"),
    (["--learner-hosts", "2", "--distributed", "auto"], "it takes no --distributed, --coordinator"),
    (["--learner-hosts", "2", "--learner-resources", '{"TPU": -4}'],
     """--learner-resources '{"TPU": -4}' is not a JSON object of positive Ray resource amounts"""),
    (["--learner-resources", '{"TPU": 4}'], "--learner-resources needs --learner-hosts N"),
    (["--learner-hosts", "2", "--env", "CartPole-v9"], "unknown env 'CartPole-v9'"),
    (["--learner-hosts", "2", "--mode", "anakin", "--env", "gymnax:CartPole-v1"],
     "--learner-hosts places Ray-mode learners"),
]


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cli(args, tmp_path, ray_tmpdir):
    # PYTHONPATH: this checkout's code, whichever checkout the venv has installed.
    env = {**os.environ, "JAX_NUM_CPU_DEVICES": "8", "RAY_ADDRESS": "", "RAY_TMPDIR": ray_tmpdir,
           "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "rltpu.cli", "train", *args], env=env,
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)


@pytest.mark.parametrize("args,message", CASES, ids=[" ".join(a) for a, _ in CASES])
def test_bad_input_is_one_line_and_exit_2(args, message, tmp_path, ray_tmpdir):
    result = run_cli(args, tmp_path, ray_tmpdir)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith("rltpu: error: "), result.stderr
    assert message in lines[0]
    assert not os.listdir(ray_tmpdir), "Ray was started"
    assert not (tmp_path / "runs").exists(), "a run directory was made"


def test_existing_run_dir_is_refused_and_untouched(tmp_path, ray_tmpdir):
    run_dir = tmp_path / "my-run"
    run_dir.mkdir()
    (run_dir / "summary.json").write_text("precious")
    result = run_cli(["--run-dir", str(run_dir)], tmp_path, ray_tmpdir)
    assert result.returncode == 2
    assert result.stderr.strip() == (f"rltpu: error: --run-dir {run_dir} already exists; "
                                     "runs are never overwritten, pass a new path")
    assert [p.name for p in run_dir.iterdir()] == ["summary.json"]
    assert (run_dir / "summary.json").read_text() == "precious"


@pytest.mark.skipif(importlib.util.find_spec("wandb") is not None, reason="wandb is installed")
def test_wandb_without_the_package_is_a_clear_error(tmp_path, ray_tmpdir):
    result = run_cli(["--wandb"], tmp_path, ray_tmpdir)
    assert result.returncode == 2
    assert result.stderr.strip() == ("rltpu: error: --wandb needs the wandb package, which is "
                                     "not installed: pip install wandb (or pip install "
                                     "'rltpu[wandb]')")
    assert not os.listdir(ray_tmpdir), "Ray was started"
    assert not (tmp_path / "runs").exists(), "a run directory was made"


def test_plot_of_a_directory_without_metrics_is_one_line(tmp_path):
    env = {**os.environ, "RAY_ADDRESS": ""}
    result = subprocess.run([sys.executable, "-m", "rltpu.cli", "plot", str(tmp_path)], env=env,
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == (f"rltpu: error: {tmp_path} is not a run directory: "
                                     "it has no metrics.jsonl")
