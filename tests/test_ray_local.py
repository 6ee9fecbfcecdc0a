"""The local Ray that rltpu starts listens on loopback only, its raylet outlives a SIGTERM
to every process, and its shutdown ends it without waiting on that blocked SIGTERM."""
import ipaddress
import os
import signal
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest


@pytest.mark.jax_independent
def test_every_ray_port_is_on_loopback(ray_local):
    @ray_local.remote
    def pid() -> int:
        import os
        return os.getpid()

    worker = ray_local.get(pid.remote())
    ray_processes = psutil.Process().children(recursive=True)
    assert worker in {p.pid for p in ray_processes}
    listening = []
    for proc in ray_processes:
        try:
            connections = proc.net_connections(kind="inet")
        except psutil.Error:
            continue  # ended meanwhile
        listening += [(proc.name(), c.laddr.ip, c.laddr.port) for c in connections
                      if c.status == psutil.CONN_LISTEN]
    names = {name for name, _, _ in listening}
    assert {"gcs_server", "raylet"} <= names, listening
    exposed = [(name, ip, port) for name, ip, port in listening
               if not ipaddress.ip_address(ip.removeprefix("::ffff:")).is_loopback]
    assert not exposed, f"listening beyond loopback: {exposed}"


def run_script(script: str, ray_tmpdir: str) -> subprocess.CompletedProcess:
    """``script`` in a fresh Python (rltpu importable) that starts a Ray of its own."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", "RAY_ADDRESS")}
    env.update(RAY_TMPDIR=ray_tmpdir, PYTHONPATH=os.pathsep.join([root, env.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=300)


QUIET_START = """
import os, warnings
import jax
jax.devices()  # JAX's backend is up, with its threads and its fork hook, as in a run
from rltpu.cluster import start_local_ray
start_local_ray(1)
import ray
from ray._raylet import AuthenticationMode, get_authentication_mode
print(ray.get(ray.remote(lambda: 41 + 1).remote()), os.environ["RAY_AUTH_MODE"],
      get_authentication_mode() == AuthenticationMode.TOKEN)
ray.shutdown()
warnings.simplefilter("always")
if os.fork() == 0:  # the fork warning is kept from Ray's start only
    os._exit(0)
"""


@pytest.mark.jax_independent
def test_ray_starts_quietly_with_token_authentication(ray_tmpdir):
    """Neither Ray's "Token authentication is enabled ... opt out" line nor JAX's fork
    warning at start-up; token authentication on all the same, and a fork elsewhere still
    warned of."""
    result = run_script(QUIET_START, ray_tmpdir)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["42", "token", "True"]
    lines = result.stderr.strip().splitlines()
    assert "Token authentication" not in result.stderr, result.stderr
    forks = [line for line in lines if "os.fork() was called" in line]
    assert len(forks) == 1 and forks[0].startswith("<string>:13: RuntimeWarning"), result.stderr
    assert "subprocess.py" not in result.stderr, result.stderr  # (Ray's Popen: not warned of)


SHUTDOWN = """
import json, time
import psutil
from rltpu.cluster import start_local_ray
start_local_ray(1)
import ray
ray.get(ray.remote(lambda: 0).remote())
ray_processes = psutil.Process().children(recursive=True)  # the raylet's agents among them
head = sorted(p.name() for p in ray_processes if p.name() in ("gcs_server", "raylet"))
start = time.monotonic()
ray.shutdown()
took = time.monotonic() - start
_, alive = psutil.wait_procs(ray_processes, timeout=10)
print(json.dumps({"head": head, "shutdown_s": took, "alive_10_s_later": [p.name() for p in alive]}))
"""


@pytest.mark.jax_independent
def test_ray_shutdown_ends_the_raylet_at_once_and_leaves_no_process(ray_tmpdir):
    """Ray ends each of its processes with SIGTERM and, if it is still up a second later,
    SIGKILL. The raylet takes SIGTERM blocked (the test below) and the autoscaler monitor
    waits on the ended GCS, so two of those seconds were spent for nothing at every run's
    end: they are sent SIGKILL at once. The GCS keeps its second, in which the raylet's
    agents report the raylet's end and exit: none is left behind. (``ray.shutdown`` took
    3.38 s with the three waits, 1.1-1.4 s with the GCS's alone; the GCS ended at once
    too, 0.2-0.4 s, left the agents up for about a minute.)"""
    import json
    result = run_script(SHUTDOWN, ray_tmpdir)
    assert result.returncode == 0, result.stderr
    ended = json.loads(result.stdout.strip().splitlines()[-1])
    assert ended["head"] == ["gcs_server", "raylet"] and ended["alive_10_s_later"] == [], ended
    assert ended["shutdown_s"] < 2.5, ended  # three waits of a second each: >= 3 s


def sigterm_blocked(pid: int) -> bool:
    status = open(f"/proc/{pid}/status").read()
    mask = int(next(line for line in status.splitlines() if line.startswith("SigBlk:"))
               .split()[1], 16)
    return bool(mask & (1 << (signal.SIGTERM - 1)))


@pytest.mark.jax_independent
def test_the_raylet_outlives_a_sigterm_to_every_process_and_rltpus_actors_do_not(ray_local):
    """A preempted VM's shutdown signals every process: the raylet (holding the object store
    the run's own Ray client dies without) stays up for the run to save its checkpoint and
    end it, while rltpu's actors end on SIGTERM as before (test_preemption's group test is
    the whole run)."""
    from rltpu.config import RunConfig
    from rltpu.env_actor import RayEnvActor
    stored = ray_local.put(np.arange(200_000))  # (in the object store)
    actor = RayEnvActor.remote(0, RunConfig(env="CartPole-v1"), 1)
    actor_pid = ray_local.get(actor.pid.remote())
    raylet, = [p for p in psutil.Process().children(recursive=True) if p.name() == "raylet"]
    assert sigterm_blocked(raylet.pid) and not sigterm_blocked(actor_pid)
    assert not sigterm_blocked(os.getpid())  # (the mask was this thread's for a moment)

    actor_process = psutil.Process(actor_pid)
    raylet.send_signal(signal.SIGTERM)
    actor_process.send_signal(signal.SIGTERM)
    actor_process.wait(timeout=30)  # (psutil.TimeoutExpired if it stays)
    time.sleep(2)  # (the raylet, had it taken the signal, would have ended by now)
    assert raylet.is_running() and raylet.status() != psutil.STATUS_ZOMBIE
    assert ray_local.get(stored)[-1] == 199_999
    assert ray_local.get(ray_local.remote(lambda: 41 + 1).remote()) == 42
