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
    (Ray would write its own 0644 one). Ray's temp folder names a cluster that is gone
    (``ray_current_cluster``, left by a Ray killed before it could remove it): a new local
    Ray starts all the same; and a second one in the same process after ``~`` changed
    (Ray keeps the first token it read: its GCS would get the new token, its client the
    old one)."""
    homes = [tmp_path / "home", tmp_path / "home2"]
    for home in homes:
        home.mkdir()
    os.makedirs(os.path.join(ray_tmpdir, "ray"))
    with open(os.path.join(ray_tmpdir, "ray", "ray_current_cluster"), "w") as f:
        f.write("127.0.0.1:1")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH_TOKEN")}
    env.update(RAY_TMPDIR=ray_tmpdir, RAY_ADDRESS="", PYTHONPATH=REPO)
    code = ("import os, sys, ray\nfrom rltpu.cluster import start_local_ray\n"
            "for home in sys.argv[1:]:\n"
            "    os.environ['HOME'] = home\n"
            "    start_local_ray(1)\n"
            "    print(ray.get(ray.remote(lambda: 41 + 1).remote()))\n"
            "    ray.shutdown()\n")
    out = subprocess.run([sys.executable, "-c", code, *map(str, homes)], env=env,
                         capture_output=True, text=True, timeout=180)
    assert out.returncode == 0 and out.stdout.split() == ["42", "42"], out.stderr[-3000:]
    for home in homes:
        assert os.stat(home / ".ray").st_mode & 0o777 == 0o700
        assert os.stat(home / ".ray" / "auth_token").st_mode & 0o777 == 0o600
        assert len((home / ".ray" / "auth_token").read_text()) == 64
    assert len({(home / ".ray" / "auth_token").read_text() for home in homes}) == 2


COORDINATED = """
import sys, psutil
from rltpu import devices
process_id, port = int(sys.argv[1]), int(sys.argv[2])
devices.initialize_distributed(f"127.0.0.1:{port}", 2, process_id, cpu_devices=1)
assert devices.process_count() == 2
if process_id == 0:  # (the coordination service runs in a child of process 0)
    listening = [c.laddr for p in [psutil.Process(), *psutil.Process().children()]
                 for c in p.net_connections("inet") if c.status == psutil.CONN_LISTEN]
    print(" ".join(ip for ip, p in listening if p == port))
    print(" ".join(ip for ip, _ in listening))
"""


def test_coordinator_listens_on_its_address_alone():
    """A two-process JAX program on 127.0.0.1: process 0's coordinator listens on loopback
    only (JAX's default is every interface), on a port ``placement.reserve_port`` held for it
    all along, and so does everything else process 0 and its children listen on (JAX's
    own unused service, gloo)."""
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
        on_port, everything = outs[0][0].splitlines()
        assert on_port and set(on_port.split()) <= {"127.0.0.1", "::ffff:127.0.0.1"}, on_port
        assert set(everything.split()) <= {"127.0.0.1", "::ffff:127.0.0.1"}, everything
        with pytest.raises(OSError), socket.socket() as other:  # held: no one else takes it
            other.bind(("127.0.0.1", port))
    finally:
        holder.close()


def _validate(tmp_path, resume=False, **changes):
    from rltpu.config import RunConfig
    from rltpu.plan import validate
    impala = agents.get("impala")
    run = RunConfig(**{"compilation_cache": None, **changes})
    return validate(impala, impala.Config(), run, resume=resume)


def test_default_run_dirs_of_the_same_second_differ(tmp_path, monkeypatch):
    import datetime
    import types
    from rltpu import rundir

    class Frozen(datetime.datetime):
        @classmethod
        def now(cls, tz=None):
            return cls(2026, 11, 30, 10, 0, 0)
    monkeypatch.setattr(rundir, "datetime", types.SimpleNamespace(datetime=Frozen))
    monkeypatch.chdir(tmp_path)
    first, second = _validate(tmp_path), _validate(tmp_path)
    try:
        assert first.run_dir == os.path.join("runs", "impala-CartPole-v1-20261130-100000")
        assert second.run_dir == first.run_dir + "-1"
        assert os.listdir(tmp_path / "runs") and not os.listdir(first.run_dir)
    finally:
        first.run_dir_lock.release()
        second.run_dir_lock.release()


def test_resuming_a_run_in_progress_is_refused(tmp_path):
    run_dir = str(tmp_path / "run")
    running = _validate(tmp_path, run_dir=run_dir)
    assert os.path.isdir(run_dir)
    with pytest.raises(ValueError, match=r"^--resume .*/run: another rltpu process is running "
                                         "it; wait for it to end \\(or stop it\\) first$"):
        _validate(tmp_path, resume=True, run_dir=run_dir)
    running.run_dir_lock.release()  # the run ended: now it may be resumed
    _validate(tmp_path, resume=True, run_dir=run_dir).run_dir_lock.release()


def test_resume_of_a_locked_run_is_one_line_from_the_cli(tmp_path):
    """Another process holds the run (as a running ``rltpu train`` does)."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"run": {"agent": "impala", "env": "CartPole-v1"},
                                                 "agent": {}}))
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, os, sys, time\n"
                               f"fd = os.open({str(run)!r}, os.O_RDONLY)\n"
                               "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('held', flush=True)\n"
                               "time.sleep(120)\n"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        out = cli(["train", "--resume", str(run)], tmp_path)
    finally:
        holder.kill()
        holder.wait()
    assert out.returncode == 2 and out.stderr.strip() == (
        f"rltpu: error: --resume {run}: another rltpu process is running it; wait for it to "
        "end (or stop it) first"), out.stderr
    assert sorted(os.listdir(run)) == ["config.json"]


@pytest.mark.parametrize("run_dir, message", [
    ("", "--run-dir '' is empty"),
    ("{file}/run", "--run-dir {file}/run: cannot make it, {file} is a file"),
    ("{file}/a/run", "--run-dir {file}/a/run: cannot make it, {file} is a file"),
    ("{file}", "--run-dir {file} already exists"),
    ("/proc/rltpu-run", "--run-dir /proc/rltpu-run: cannot make it ("),
])
def test_run_dir_that_cannot_be_made_is_one_line(tmp_path, run_dir, message):
    (tmp_path / "file").write_text("")
    run_dir, message = (x.format(file=tmp_path / "file") for x in (run_dir, message))
    with pytest.raises(ValueError) as error:
        _validate(tmp_path, run_dir=run_dir)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)
    assert os.listdir(tmp_path) == ["file"]


def test_batch_bytes_is_counted_from_the_spaces():
    from rltpu import envs
    from rltpu.config import RunConfig
    from rltpu.bounds import batch_bytes
    spec = envs.make_spec("CartPole-v1")  # float32 [4] observations, int64 actions: 16 + 8 + 16
    assert batch_bytes(RunConfig(), spec) == (16 * 16 + 2 * 2 * 16 * 16) * 40
    assert batch_bytes(RunConfig(mode="anakin", env="gymnax:CartPole-v1"), spec) == 16 * 16 * 40


def test_bounds_from_the_machine(tmp_path):
    import psutil
    cpus = os.cpu_count()
    bad = [
        (dict(num_actors=cpus + 1), f"--num-actors {cpus + 1} puts {cpus + 1} actors on this "
         f"machine, which has {cpus} CPUs (one actor each); give at most {cpus} or pass "
         "--oversubscribe"),
        (dict(batch_size=10**20), "--batch-size 100000000000000000000 is larger than 2,147,483,647"),
        (dict(unroll_length=10**12), "--unroll-length 1000000000000 is larger than 2,147,483,647"),
        (dict(unroll_length=2**16, batch_size=2**16), "--unroll-length 65536 x --batch-size 65536 "
         "is more than 2,147,483,647 transitions per batch"),
        (dict(target_return=float("nan")), "--target-return nan can never be reached"),
        (dict(target_return=float("inf")), "--target-return inf can never be reached"),
        (dict(max_in_flight=2**20, unroll_length=2**10), "--batch-size 16 x --unroll-length 1024 "
         "of CartPole-v1 steps and 2 actors x --max-in-flight 1048576 unrolls in flight need about"),
    ]
    for changes, message in bad:
        with pytest.raises(ValueError) as error:
            _validate(tmp_path, run_dir=str(tmp_path / "run"), **changes)
        assert str(error.value).startswith(message), (changes, str(error.value))
        assert not (tmp_path / "run").exists()
    # (the last: 2 x 2**20 x 2**10 x 16 steps of 40 bytes, more than the machine has at all)
    assert 2 * 2**20 * 2**10 * 16 * 40 > psutil.virtual_memory().total
    _validate(tmp_path, run_dir=str(tmp_path / "run"), num_actors=cpus + 1,
              oversubscribe=True).run_dir_lock.release()


def test_joining_a_cluster_needs_its_address(monkeypatch, capsys):
    """``--learner-hosts`` without RAY_ADDRESS is refused before Ray is asked (it used to
    join with address="auto", which scans this machine's processes for any Ray)."""
    import ray
    from rltpu import cli
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    connected = ray.is_initialized()  # (the session's Ray, if an earlier test started it)
    assert cli.main(["train", "--learner-hosts", "2"]) == 2
    err = capsys.readouterr().err
    assert err == ("rltpu: error: --learner-hosts joins a running Ray cluster: set RAY_ADDRESS "
                   "to its head's address (e.g. RAY_ADDRESS=10.0.0.2:6379, or RAY_ADDRESS=auto "
                   "for the Ray `ray start` ran on this machine)\n")
    assert ray.is_initialized() == connected


def test_token_authentication_is_forced_on(monkeypatch):
    from rltpu import cluster
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    cluster.force_token_auth()
    assert os.environ["RAY_AUTH_MODE"] == "token"
