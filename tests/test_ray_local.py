"""The local Ray that rltpu starts listens on loopback only."""
import ipaddress

import psutil


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
