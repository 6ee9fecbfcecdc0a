"""Test set-up: 8 virtual CPU devices, so the sharded learner can be checked against one;
a home folder of the suite's own, so nothing under the user's changes."""
import os
import shutil
import tempfile

# Before anything is imported that may write under ~ (matplotlib's font cache, wandb's
# settings, RunConfig's default compilation cache ~/.cache/rltpu/jax, ...): this process,
# the Ray it starts and every subprocess see a temporary home. Each test then gets one of
# its own (below); this one covers collection and the session's Ray.
SESSION_HOME = tempfile.mkdtemp(prefix="rltpu-test-home-")
HOME_VARIABLES = {"HOME": "", "XDG_CACHE_HOME": ".cache", "XDG_CONFIG_HOME": ".config",
                  "XDG_DATA_HOME": ".local/share", "XDG_STATE_HOME": ".local/state"}
"""The variables that say where a program's per-user files go, and where each points in a home."""
for _name, _sub in HOME_VARIABLES.items():
    os.environ[_name] = os.path.join(SESSION_HOME, _sub)

import jax  # noqa: E402
import psutil  # noqa: E402
import pytest  # noqa: E402

from rltpu import devices  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)


def pytest_unconfigure(config):
    shutil.rmtree(SESSION_HOME, ignore_errors=True)


@pytest.fixture(autouse=True)
def own_home_and_compilation_cache(tmp_path, tmp_path_factory, monkeypatch):
    """Every test runs in its own temporary home and working directory: the compilation
    cache a run keeps by default (~/.cache/rltpu/jax) and the run directory it makes by
    default (runs/...) are the test's own, so tests neither share compiled programs (their
    timings do not depend on a warm cache) nor touch the user's. An in-process run points
    JAX's cache for the whole process; it is turned off again after each test."""
    home = tmp_path_factory.mktemp("home")
    for name, sub in HOME_VARIABLES.items():
        monkeypatch.setenv(name, str(home / sub))
    monkeypatch.chdir(tmp_path)
    # Ray (2.5x and later) keeps a cluster's token in ~/.ray/auth_token: the session's Ray
    # clusters made theirs in the session's home, where processes this test starts (and
    # this process, connecting) must find it.
    token = os.path.join(SESSION_HOME, ".ray", "auth_token")
    if os.path.exists(token):
        monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", token)
    devices.use_compilation_cache(None)  # (a module's fixture may have run a train)
    yield
    devices.use_compilation_cache(None)


@pytest.fixture(scope="session")
def ray_local():
    """A real local Ray (loopback, no dashboard) shared by the tests that need one."""
    import ray

    from rltpu.cluster import start_local_ray
    start_local_ray(num_cpus=2)
    yield ray
    ray.shutdown()


@pytest.fixture
def ray_tmpdir():
    """A short directory for RAY_TMPDIR (Ray's socket paths must stay under 107 bytes).
    Afterwards the Ray processes still using it (a kill -9 orphans them: Ray starts them in
    sessions of their own) are ended, found by this folder in their command line."""
    path = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    yield path
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(path in arg for arg in proc.info["cmdline"] or ()):
                proc.kill()
        except psutil.Error:
            pass
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def ray_dir(ray_tmpdir):
    return ray_tmpdir


@pytest.fixture
def coordinator_port():
    """A loopback port for jax.distributed's coordinator, held for the test (see
    ``tests.processes.reserved_port``): no other program can take it before process 0 binds it."""
    from tests.processes import reserved_port
    with reserved_port() as port:
        yield port


class Reached(Exception):
    """A command line passed validation: training would start here."""


@pytest.fixture
def cli_in_process(tmp_path, monkeypatch, capfd):
    """``run(argv, folder)``: ``rltpu`` (``rltpu.cli.main``) in this process, from ``folder``,
    with file descriptors 1 and 2 captured; returns its exit status, stdout, stderr and the
    plan of a command line that passed validation (None if none did). A valid ``train``
    stops where training would start (a sentinel that records the plan and raises: exit 0),
    so no case starts Ray, and each asks it: a case that started Ray fails the test. A
    process costs seconds of imports; here a refused command line takes milliseconds."""
    import ray

    from rltpu import cli
    from rltpu import run as running
    ray_tmp = tmp_path / "ray"
    ray_tmp.mkdir()
    monkeypatch.setenv("RAY_TMPDIR", str(ray_tmp))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    reached = []

    def sentinel(plan, quiet=False, resume=None):
        reached.append(plan)
        if plan.run_dir_lock is not None:
            plan.run_dir_lock.release()
        raise Reached()
    monkeypatch.setattr(running, "train_plan", sentinel)

    def run(argv, folder):
        monkeypatch.chdir(folder)
        reached.clear()
        capfd.readouterr()
        # (the session's Ray, ``ray_local``, may be up already when an earlier test started it)
        connected = ray.is_initialized()
        try:
            status = cli.main(argv)
        except SystemExit as e:
            status = e.code
        except Reached:
            status = 0
        out, err = capfd.readouterr()
        assert ray.is_initialized() == connected and not os.listdir(ray_tmp), f"{argv}: Ray started"
        return status, out, err, (reached[0] if reached else None)
    return run
