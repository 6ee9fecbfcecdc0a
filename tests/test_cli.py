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
    (["--eval-every-updates", "0"], "--eval-every-updates must be a positive integer or none, got 0"),
    (["--eval-every-s", "-1"], "--eval-every-s must be > 0 or none, got -1.0"),
    (["--eval-episodes", "0"], "--eval-episodes must be a positive integer, got 0"),
    (["--eval-policy", "best"], "--eval-policy: invalid choice: 'best' (choose from 'greedy', 'sample')"),
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
    (["--preset", "atari"], "unknown preset 'atari'; valid: dqn-atari, impala-atari, impala-minatar, ppo-atari, ppo-minatar, ppo-minatar-blines, ppo-mujoco"),
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
    # No abbreviations, and the nearest flag for an unknown one.
    (["--num-actor", "3"], "unrecognized arguments: --num-actor 3; did you mean --num-actors?"),
    (["--pre", "impala-atari"], "unrecognized arguments: --pre impala-atari"),
    (["--mode", "sync"], "argument --mode: invalid choice: 'sync' (choose from 'ray', 'anakin')"),
    (["--env-backend", "sdl"], "argument --env-backend: invalid choice: 'sdl'"),
    (["--env-kwargs", "[200]"], "--env-kwargs '[200]' is not a JSON object of keyword arguments"),
    (["--env-kwargs", "{max_episode_steps: 200}"], "--env-kwargs '{max_episode_steps: 200}' is "
                                                   "not JSON"),
    (["--env-kwargs", '{"gravity": 3}'], """--env-kwargs {"gravity": 3}: env 'CartPole-v1' does """
                                         "not take them"),
    (["--env-kwargs", '{"a": 1}', "--mode", "anakin", "--env", "gymnax:CartPole-v1"],
     "--env-kwargs is for gymnasium envs; a JAX env (--mode anakin) is made with its defaults"),
    (["--env", "CartPol-v1"], "unknown env 'CartPol-v1': not a registered gymnasium id nor a "
                              "module:Class path; did you mean CartPole-v1"),
    (["--config", "missing.json"], "--config missing.json: cannot read it (No such file"),
    (["--config", "settings.ini"], "--config settings.ini: not a config file; valid suffixes: "
                                   ".json, .yaml, .yml, .toml"),
    (["--preset", "mine.yaml"], "--preset mine.yaml: cannot read it"),
]

# Bad config and preset files: (file name, its text, more flags, the message).
FILE_CASES = [
    ("c.json", '{"run": {"num_actor": 3}}', [],
     "--config c.json: run: unknown key 'num_actor'; did you mean 'num_actors'?"),
    ("c.toml", "[agent]\nlearning_rat = 0.1\n", [],
     "--config c.toml: agent impala: unknown key 'learning_rat'; did you mean 'learning_rate'?"),
    ("c.yaml", "run: {}\nagnet: {}\n", [], "--config c.yaml: unknown key 'agnet'; did you mean "
                                           "'agent'?"),
    ("c.yaml", "run: [1, 2]\n", [], "--config c.yaml: 'run' holds a list, not a mapping"),
    ("c.yaml", "- 1\n", [], "--config c.yaml: holds a list, not a mapping of settings"),
    ("c.json", '{"run": {"num_actors": "two"}}', [],
     "--config c.json: argument --num-actors: invalid int value: 'two'"),
    ("c.json", '{"run": {"mode": "sync"}}', [], "--config c.json: argument --mode: invalid choice"),
    ("c.json", '{"run": {"num_actors": 0}}', [], "--num-actors must be a positive integer, got 0"),
    ("c.json", '{"run": {', [], "--config c.json: not valid JSON ("),
    ("c.toml", "[run\n", [], "--config c.toml: not valid TOML ("),
    ("c.yaml", "run: {a: [}\n", [], "--config c.yaml: not valid YAML ("),
    # A file is data: it never decides what code is imported.
    ("c.json", '{"run": {"agent": "tests.fake_agents:CountingAgent"}}', [],
     "--config c.json: agent 'tests.fake_agents:CountingAgent' is not a built-in agent; a file "
     "never decides what code is imported: pass --agent tests.fake_agents:CountingAgent"),
    ("c.json", '{"run": {"env": "rltpu.envs.fake:CountingEnv"}}', [],
     "--config c.json: env 'rltpu.envs.fake:CountingEnv' is a module path; a file never "
     "decides what code is imported: pass --env rltpu.envs.fake:CountingEnv to use it"),
    ("p.json", '{"agent": "os:system", "run": {}}', ["--preset", "p.json"],
     "--preset p.json: agent 'os:system' is not a built-in agent"),
    ("p.json", '{"agent": "ppo", "agent_confg": {}}', ["--preset", "p.json"],
     "--preset p.json: unknown key 'agent_confg'; did you mean 'agent_config'?"),
    ("p.json", '{"run": {}}', ["--preset", "p.json"], "--preset p.json: needs 'agent'"),
    ("p.yaml", "agent: ppo\nagent_config: {baseline_cost: 0.5}\n", ["--preset", "p.yaml"],
     "--preset p.yaml: agent ppo: unknown key 'baseline_cost'"),
    ("p.yaml", "agent: ppo\n", ["--preset", "p.yaml", "--agent", "dqn"],
     "--preset p.yaml is for agent ppo, not 'dqn'"),
    ("c.json", '{"run": {"agent": "dqn"}}', ["--preset", "ppo-atari"],
     "--preset ppo-atari is for agent ppo, not 'dqn' (--config c.json)"),
    ("c.json", "{}", ["--resume", "somewhere"], "--config cannot be combined with --resume"),
]


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cli(args, tmp_path, ray_tmpdir):
    # PYTHONPATH: this checkout's code, whichever checkout the venv has installed.
    env = {**os.environ, "JAX_NUM_CPU_DEVICES": "8", "RAY_ADDRESS": "", "RAY_TMPDIR": ray_tmpdir,
           "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "rltpu.cli", "train", *args], env=env,
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)


def refused(cli_in_process, argv, folder, message):
    """``argv`` is refused: one line naming the bad value, exit status 2, before Ray starts
    (``cli_in_process`` checks that) or a run directory is made."""
    status, _, err, plan = cli_in_process(argv, folder)
    lines = err.strip().splitlines()
    assert status == 2 and plan is None, err
    assert len(lines) == 1 and lines[0].startswith("rltpu: error: "), err
    assert message in lines[0]
    assert not (folder / "runs").exists(), "a run directory was made"


@pytest.mark.jax_independent
@pytest.mark.parametrize("args,message", CASES, ids=[" ".join(a) for a, _ in CASES])
def test_bad_input_is_one_line_and_exit_2(args, message, cli_in_process, tmp_path):
    refused(cli_in_process, ["train", *args], tmp_path, message)


@pytest.mark.jax_independent
@pytest.mark.parametrize("name,text,args,message", FILE_CASES,
                         ids=[f"{n}:{m[:40]}" for n, _, _, m in FILE_CASES])
def test_bad_settings_file_is_one_line_and_exit_2(name, text, args, message, cli_in_process,
                                                  tmp_path):
    (tmp_path / name).write_text(text)
    flags = args if any(name in a for a in args) else ["--config", name, *args]
    refused(cli_in_process, ["train", *flags], tmp_path, message)


# The cases above run in this process (milliseconds each, not a process's seconds of
# imports); one of each kind runs in a process of its own, as a user's does: the exit
# status is the process's and nothing else (an import's warning) reaches its stderr.
PROCESS_CASES = [  # argparse's, a check of the settings, a check of the env and agent
    (["--num-actors", "two"], "invalid int value: 'two'"),
    (["--learning-rate", "-0.1"], "--learning-rate must be > 0, got -0.1"),
    (["--agent", "dqn", "--env", "Pendulum-v1"], "agent 'dqn' needs a Discrete action space"),
]


@pytest.mark.parametrize("args,message", PROCESS_CASES, ids=[" ".join(a) for a, _ in PROCESS_CASES])
def test_bad_input_in_a_process_of_its_own(args, message, tmp_path, ray_tmpdir):
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


def run_rltpu(args, cwd):
    env = {**os.environ, "RAY_ADDRESS": "",
           "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "rltpu.cli", *args], env=env,
                          capture_output=True, text=True, timeout=120, cwd=cwd)


def test_help_lists_the_commands_and_version_prints_it(tmp_path):
    import rltpu
    result = run_rltpu(["--help"], tmp_path)
    assert result.returncode == 0, result.stderr
    commands = [line.split()[0] for line in result.stdout.split("commands:\n")[1].splitlines()
                if line.startswith("  ")]
    assert commands == ["train", "sweep", "eval", "plot"]
    version = run_rltpu(["--version"], tmp_path)
    assert (version.returncode, version.stdout) == (0, f"rltpu {rltpu.__version__}\n")
    assert run_rltpu([], tmp_path).returncode == 2


def test_help_shows_the_presets_own_defaults(tmp_path):
    result = run_rltpu(["train", "--preset", "impala-atari", "--help"], tmp_path)
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())  # argparse wraps the help
    assert "--learning-rate FLOAT Step size (at the start, with --anneal-lr). (default: 0.0006)" in text
    assert "[C, H, W]. (default: impala_resnet)" in text
    assert "--mode {ray,anakin}" in text and "--env-backend {auto,gymnasium,ale,envpool}" in text
    plain = " ".join(run_rltpu(["train", "--help"], tmp_path).stdout.split())
    assert "(default: 0.0006)" not in plain and "[C, H, W]. (default: mlp)" in plain


def print_config(args, cwd) -> dict:
    import json
    result = run_rltpu(["train", *args, "--print-config"], cwd)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_config_file_then_flags_and_print_config(tmp_path):
    (tmp_path / "c.yaml").write_text("run:\n  num_actors: 3\n  seed: 7\n  target_return: null\n"
                                     "  env_kwargs: {max_episode_steps: 100}\n"
                                     "agent:\n  learning_rate: 0.001\n  hidden_sizes: [32, 16]\n"
                                     "  anneal_lr: true\n")
    # Flags override the file wherever they stand; the file overrides the defaults.
    config = print_config(["--seed", "9", "--config", "c.yaml", "--entropy-cost", "0.02"], tmp_path)
    run, agent = config["run"], config["agent"]
    assert (run["num_actors"], run["seed"], run["target_return"]) == (3, 9, None)
    assert run["env_kwargs"] == '{"max_episode_steps": 100}'
    assert (agent["learning_rate"], agent["hidden_sizes"], agent["anneal_lr"]) == (0.001, [32, 16], True)
    assert agent["entropy_cost"] == 0.02 and run["env"] == "CartPole-v1"
    assert not (tmp_path / "runs").exists()
    # TOML and JSON say the same; the printed config read back gives itself.
    (tmp_path / "c.toml").write_text('[run]\nnum_actors = 3\nseed = 9\nenv_kwargs = '
                                     '\'{"max_episode_steps": 100}\'\n[agent]\nlearning_rate = 0.001\n'
                                     "hidden_sizes = [32, 16]\nanneal_lr = true\nentropy_cost = 0.02\n")
    from_toml = print_config(["--config", "c.toml", "--target-return", "none"], tmp_path)
    assert from_toml == config
    import json
    (tmp_path / "printed.json").write_text(json.dumps(config))
    assert print_config(["--config", "printed.json"], tmp_path) == config


def test_preset_from_a_file_is_the_builtin_one(tmp_path):
    import dataclasses
    import json

    from rltpu.agents import presets
    builtin = presets.get("ppo-atari")
    (tmp_path / "p.json").write_text(json.dumps(
        {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(builtin).items()}))
    from_file = print_config(["--preset", "p.json"], tmp_path)
    assert from_file == print_config(["--preset", "ppo-atari"], tmp_path)
    assert from_file["agent"]["learning_rate"] == 2.5e-4 and from_file["run"]["unroll_length"] == 128
    assert from_file["run"]["agent"] == "ppo"


def test_learner_hosts_get_a_files_settings_as_flags(tmp_path, capsys):
    """Learner processes that Ray starts on other hosts may not have the files: they get
    the files' settings as flags, which give the same settings without the files."""
    import json

    from rltpu import cli
    config, preset = tmp_path / "c.yaml", tmp_path / "p.json"
    config.write_text("run: {num_actors: 3, env_kwargs: {max_episode_steps: 100}}\n"
                      "agent: {hidden_sizes: [32, 16], anneal_lr: true}\n")
    preset.write_text('{"agent": "impala", "run": {"unroll_length": 20, "target_return": null},'
                      ' "agent_config": {"learning_rate": 0.0006}}')
    argv = ["--preset", str(preset), "--config", str(config), "--seed", "4"]
    assert cli.main(["train", *argv, "--print-config"]) == 0
    expected = json.loads(capsys.readouterr().out)
    flags = cli.for_other_hosts(argv, {**expected["run"], **expected["agent"]})
    assert not any(str(tmp_path) in flag for flag in flags), flags
    config.unlink()
    preset.unlink()
    assert cli.main(["train", *flags, "--print-config"]) == 0
    assert json.loads(capsys.readouterr().out) == expected
    assert (expected["run"]["num_actors"], expected["run"]["unroll_length"],
            expected["run"]["seed"], expected["agent"]["learning_rate"]) == (3, 20, 4, 0.0006)
    # A built-in preset is named as it is.
    assert cli.for_other_hosts(["--preset", "impala-atari"], {}) == ["--preset", "impala-atari"]
