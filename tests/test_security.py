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


def test_token_file_is_private_before_ray_starts(tmp_path, monkeypatch):
    from rltpu import cluster
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    path = cluster.private_token_file()
    assert path == str(tmp_path / ".ray" / "auth_token")
    assert os.stat(tmp_path / ".ray").st_mode & 0o777 == 0o700
    assert os.stat(path).st_mode & 0o777 == 0o600
    token = open(path).read()
    assert len(token) == 64 and int(token, 16) > 0
    # One as Ray leaves it (0644 in a 0755 folder) is tightened and kept.
    os.chmod(tmp_path / ".ray", 0o755)
    os.chmod(path, 0o644)
    assert cluster.private_token_file() == path
    assert os.stat(tmp_path / ".ray").st_mode & 0o777 == 0o700
    assert os.stat(path).st_mode & 0o777 == 0o600 and open(path).read() == token
    # A file RAY_AUTH_TOKEN_PATH names, in a folder to be made.
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "keys" / "ray-token"))
    assert cluster.private_token_file() == str(tmp_path / "keys" / "ray-token")
    assert os.stat(tmp_path / "keys").st_mode & 0o777 == 0o700
    assert os.stat(tmp_path / "keys" / "ray-token").st_mode & 0o777 == 0o600


def test_local_ray_starts_with_the_private_token(tmp_path, ray_tmpdir):
    """A real local Ray in a fresh home: it uses the token file made 0600 in a 0700 folder
    (Ray would write its own 0644 one)."""
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH_TOKEN")}
    env.update(HOME=str(home), RAY_TMPDIR=ray_tmpdir, RAY_ADDRESS="", PYTHONPATH=REPO)
    code = ("import ray\nfrom rltpu.cluster import start_local_ray\nstart_local_ray(1)\n"
            "print(ray.get(ray.remote(lambda: 41 + 1).remote()))\nray.shutdown()\n")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=180)
    assert out.returncode == 0 and out.stdout.strip() == "42", out.stderr[-3000:]
    assert os.stat(home / ".ray").st_mode & 0o777 == 0o700
    assert os.stat(home / ".ray" / "auth_token").st_mode & 0o777 == 0o600
    assert len((home / ".ray" / "auth_token").read_text()) == 64


COORDINATED = """
import sys, psutil
from rltpu import devices
process_id, port = int(sys.argv[1]), int(sys.argv[2])
devices.initialize_distributed(f"127.0.0.1:{port}", 2, process_id, cpu_devices=1)
assert devices.process_count() == 2
if process_id == 0:
    listening = [c.laddr for c in psutil.Process().net_connections("inet")
                 if c.status == psutil.CONN_LISTEN and c.laddr.port == port]
    print(" ".join(ip for ip, _ in listening))
"""


def test_coordinator_listens_on_its_address_alone():
    """A two-process JAX program on 127.0.0.1: process 0's coordinator listens on loopback
    only (JAX's default is every interface), on a port ``placement.reserve_port`` held for it
    all along."""
    import socket
    from rltpu import placement
    holder = placement.reserve_port("127.0.0.1")
    port = holder.getsockname()[1]
    try:
        env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": REPO}
        env.pop("XLA_FLAGS", None)
        env.pop("JAX_COORDINATOR_BIND_ADDRESS", None)
        procs = [subprocess.Popen([sys.executable, "-c", COORDINATED, str(i), str(port)], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for i in range(2)]
        outs = [p.communicate(timeout=180) for p in procs]
        for p, (out, err) in zip(procs, outs):
            assert p.returncode == 0, err[-3000:]
        addresses = outs[0][0].split()
        assert addresses and set(addresses) <= {"127.0.0.1", "::ffff:127.0.0.1"}, addresses
        with pytest.raises(OSError), socket.socket() as other:  # held: no one else takes it
            other.bind(("127.0.0.1", port))
    finally:
        holder.close()
