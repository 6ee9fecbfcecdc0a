"""A run directory is data: code it names is never imported behind the user's back."""
import json
import os
import subprocess
import sys

import pytest

from rltpu import agents

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAYLOAD = "import pathlib\npathlib.Path({marker!r}).write_text('ran')\nAgent = Env = None\n"


def cli(args, cwd, extra_path=()):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([REPO, *extra_path]),
           "JAX_PLATFORMS": "cpu"}
    return subprocess.run([sys.executable, "-m", "rltpu.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def downloaded(tmp_path):
    """``tmp_path/downloaded/run1``, a run directory holding ``payload.py`` (which writes
    ``tmp_path/marker`` when imported) and naming it as its agent and env."""
    run = tmp_path / "downloaded" / "run1"
    run.mkdir(parents=True)
    (run / "payload.py").write_text(PAYLOAD.format(marker=str(tmp_path / "marker")))
    config = {"run": {"agent": "downloaded.run1.payload:Agent", "env": "payload:Env",
                      "run_dir": str(run)}, "agent": {}}
    (run / "config.json").write_text(json.dumps(config))
    return tmp_path


@pytest.mark.parametrize("args, cwd", [
    (["eval", "downloaded/run1"], "."),
    (["train", "--resume", "downloaded/run1"], "."),
    (["eval", "."], "downloaded/run1"),
    (["train", "--resume", "."], "downloaded/run1"),
])
def test_planted_payload_never_runs(downloaded, args, cwd):
    before = sorted(os.listdir(downloaded / "downloaded" / "run1"))
    out = cli(args, downloaded / cwd)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "'downloaded.run1.payload:Agent'" in lines[0] and "--trust-run-code" in lines[0]
    assert not (downloaded / "marker").exists()
    assert sorted(os.listdir(downloaded / "downloaded" / "run1")) == before


def test_builtin_agent_with_planted_env_is_refused(downloaded):
    config_path = downloaded / "downloaded" / "run1" / "config.json"
    config = json.loads(config_path.read_text())
    config["run"]["agent"] = "impala"
    config_path.write_text(json.dumps(config))
    out = cli(["eval", "."], downloaded / "downloaded" / "run1")
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "env 'payload:Env'" in out.stderr and "--env payload:Env" in out.stderr
    assert not (downloaded / "marker").exists()


def test_code_named_again_or_trusted_is_imported(downloaded):
    """The refusal is the only thing in the way: named on the command line (and importable,
    on PYTHONPATH) the payload does run, so the tests above can fail."""
    out = cli(["eval", "downloaded/run1", "--agent", "downloaded.run1.payload:Agent",
               "--env", "payload:Env"], downloaded, extra_path=[str(downloaded)])
    assert (downloaded / "marker").exists(), out.stderr
    (downloaded / "marker").unlink()
    out = cli(["train", "--resume", "downloaded/run1", "--trust-run-code"], downloaded,
              extra_path=[str(downloaded)])
    assert (downloaded / "marker").exists(), out.stderr
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_load_agent_leaves_sys_path_alone(tmp_path, monkeypatch):
    (tmp_path / "nearby_agent.py").write_text("Agent = None\n")
    monkeypatch.chdir(tmp_path)
    path = list(sys.path)
    with pytest.raises(ValueError, match="nearby_agent.*PYTHONPATH"):
        agents.get("nearby_agent:Agent")
    assert sys.path == path and "nearby_agent" not in sys.modules
