"""The local Ray that rltpu starts listens on loopback only."""
import ipaddress

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
    import os
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", "RAY_ADDRESS")}
    env.update(RAY_TMPDIR=ray_tmpdir, PYTHONPATH=os.pathsep.join([root, env.get("PYTHONPATH", "")]))
    result = subprocess.run([sys.executable, "-c", QUIET_START], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["42", "token", "True"]
    lines = result.stderr.strip().splitlines()
    assert "Token authentication" not in result.stderr, result.stderr
    forks = [line for line in lines if "os.fork() was called" in line]
    assert len(forks) == 1 and forks[0].startswith("<string>:13: RuntimeWarning"), result.stderr
    assert "subprocess.py" not in result.stderr, result.stderr  # (Ray's Popen: not warned of)
