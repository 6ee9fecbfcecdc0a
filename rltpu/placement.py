"""Learner processes placed by Ray: one per TPU host of a running Ray cluster.

``rltpu train --learner-hosts N`` (run on any node, the head's CPU is enough) reserves N
hosts that each hold ``--learner-resources`` (by default all the TPU chips of a host) with
a strict-spread placement group, and on each starts one ``LearnerHost`` actor. The actor
holds the reservation and runs ``rltpu train --coordinator HOST0:PORT --num-processes N
--process-id I`` as a child process on its host: that child alone owns the host's chips
(the actor never imports JAX), joins the others with ``jax.distributed`` and is the same
learner process as one started by hand on every host. The driver forwards SIGTERM/SIGINT
to every learner and exits with learner 0's status.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import ray
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from rltpu import cluster
from rltpu.faults import StopRequest

# What the learner processes inherit from the driver's environment (JAX and XLA settings,
# rltpu's own switches, how to reach Ray); Ray's workers otherwise have the raylet's. Not
# TPU_*: Ray sets those per host (the chips it reserved) in the LearnerHost actor.
FORWARDED_ENV_PREFIXES = ("JAX_", "XLA_", "RLTPU_")
FORWARDED_RAY_ENV = ("RAY_AUTH_MODE", "RAY_TMPDIR", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")
# After one learner fails, how long the others get to end on their own before they are killed.
FAILURE_GRACE_S = 30.0


def rltpu_command() -> str:
    """The ``rltpu`` command installed with this Python: the public entry point a learner
    process is started through, as a user starts one by hand on each host.

    Raises:
      RuntimeError: rltpu is not installed in this Python's environment (only imported from
        a source folder), so the command is missing.
    """
    command = os.path.join(os.path.dirname(sys.executable), "rltpu")
    if not os.access(command, os.X_OK):
        raise RuntimeError(f"no rltpu command beside {sys.executable}: install rltpu "
                           "(pip install rltpu, or make) on every learner host")
    return command


@ray.remote
class LearnerHost:
    """Holds one host's learner reservation and runs its ``rltpu train`` process."""

    def __init__(self):
        cluster.unblock_sigterm()  # (the learner it starts inherits the mask)
        self._process: subprocess.Popen | None = None
        self._port_holder: socket.socket | None = None

    def coordinator_address(self) -> str:
        """``IP:PORT`` on this host for ``jax.distributed``'s coordinator: a port the system
        picks, kept from every other program until this actor ends (``reserve_port``)."""
        ip = ray.util.get_node_ip_address()
        self._port_holder = reserve_port(ip)
        port = self._port_holder.getsockname()[1]
        return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"

    def start(self, argv: list[str], env: dict[str, str], cwd: str) -> str:
        """Starts ``rltpu train argv`` in ``cwd`` (the driver's; the home directory on a
        host without it); its output goes to this actor's, which Ray forwards to the
        driver's console. Returns where it runs: ``IP (node ID)``."""
        self._process = subprocess.Popen(
            [rltpu_command(), "train", *argv], env={**os.environ, **env},
            cwd=cwd if os.path.isdir(cwd) else os.path.expanduser("~"))
        return f"{ray.util.get_node_ip_address()} (node {ray.get_runtime_context().get_node_id()[:12]})"

    def poll(self) -> int | None:
        return self._process.poll()

    def send_signal(self, signum: int) -> None:
        if self._process.poll() is None:
            self._process.send_signal(signum)

    def kill(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        if self._port_holder is not None:
            self._port_holder.close()


def reserve_port(ip: str) -> socket.socket:
    """A socket bound to a free port of ``ip`` (the system picks it) with ``SO_REUSEPORT``,
    which holds the port for the JAX coordinator until it is closed.

    A port bound and closed again could be taken by any program before the coordinator binds
    it. This socket never listens (it takes no connection) and the coordinator's gRPC server
    binds with ``SO_REUSEPORT`` too, so it can take the same port while the socket holds it
    and no other program can: no race.
    """
    holder = socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    holder.bind((ip, 0))
    return holder


def tpu_resources_per_host() -> dict[str, float]:
    """``{"TPU": chips}`` of the cluster's TPU hosts (the fewest any host has).

    Raises:
      ValueError: no node of the cluster has TPU resources.
    """
    chips = [node["Resources"].get("TPU", 0) for node in ray.nodes() if node["Alive"]]
    chips = [c for c in chips if c > 0]
    if not chips:
        raise ValueError("--learner-hosts: no node of the Ray cluster has TPU resources; "
                         "start Ray on the TPU hosts (python -m launch.tpu ray does) or name "
                         "the resources a learner host holds with --learner-resources")
    return {"TPU": min(chips)}


def parse_resources(text: str | None) -> dict[str, float] | None:
    """``--learner-resources``: a JSON object of Ray resource amounts, or None (TPU chips).

    Raises:
      ValueError: it is not such an object.
    """
    if text is None:
        return None
    try:
        resources = json.loads(text)
    except ValueError:
        resources = None
    if not (isinstance(resources, dict) and resources and all(
            isinstance(v, (int, float)) and v > 0 for v in resources.values())):
        raise ValueError(f"--learner-resources {text!r} is not a JSON object of positive "
                         'Ray resource amounts, e.g. \'{"TPU": 4}\'')
    return resources


def connect() -> None:
    """Joins the running Ray cluster ``RAY_ADDRESS`` names, with token authentication.

    Raises:
      ValueError: ``RAY_ADDRESS`` is unset or names no cluster.
    """
    cluster.join_cluster("--learner-hosts")


def run_learners(argv: list[str], num_hosts: int, resources: dict[str, float] | None,
                 reserve_timeout_s: float = 120.0) -> int:
    """Places ``num_hosts`` learner processes with Ray and waits for them.

    Args:
      argv: the ``rltpu train`` flags every learner gets (without the multi-host ones).
      resources: what each learner's host must hold and reserve; None: all its TPU chips.

    Returns:
      Learner process 0's exit status (or the first failure's, if one failed first).

    Raises:
      ValueError: the cluster has no such hosts, or not ``num_hosts`` of them free.
    """
    connect()
    try:
        per_host = {**(resources or tpu_resources_per_host())}
        per_host.setdefault("CPU", 1)
        group = placement_group([per_host] * num_hosts, strategy="STRICT_SPREAD")
        if not group.wait(reserve_timeout_s):
            remove_placement_group(group)
            raise ValueError(f"--learner-hosts {num_hosts}: the Ray cluster does not have "
                             f"{num_hosts} separate hosts each with {per_host} free (waited "
                             f"{reserve_timeout_s:.0f} s); its nodes: {_nodes_summary()}")
        env = {k: v for k, v in os.environ.items()
               if k.startswith(FORWARDED_ENV_PREFIXES) or k in FORWARDED_RAY_ENV}
        env["RAY_ADDRESS"] = ray.get_runtime_context().gcs_address  # each learner joins as a driver
        hosts = [LearnerHost.options(
            num_cpus=per_host["CPU"], resources={k: v for k, v in per_host.items() if k != "CPU"},
            scheduling_strategy=PlacementGroupSchedulingStrategy(group, i)).remote()
            for i in range(num_hosts)]
        return _supervise(hosts, argv, env)
    finally:
        ray.shutdown()


def _supervise(hosts: list, argv: list[str], env: dict[str, str]) -> int:
    coordinator = ray.get(hosts[0].coordinator_address.remote())
    n = len(hosts)
    where = ray.get([host.start.remote(
        [*argv, "--coordinator", coordinator, "--num-processes", str(n), "--process-id", str(i)],
        env, os.getcwd()) for i, host in enumerate(hosts)])
    print(f"rltpu: {n} learner processes started by Ray on {', '.join(where)}; coordinator "
          f"{coordinator}; process 0, on {where[0]}, writes the run directory", file=sys.stderr,
          flush=True)
    forwarded, give_up_at, first_failure = False, None, None
    try:
        with StopRequest() as stop:
            while None in (status := ray.get([host.poll.remote() for host in hosts])):
                if stop.requested and not forwarded:  # a preemption notice, a Ctrl-C
                    ray.get([host.send_signal.remote(signal.SIGTERM) for host in hosts])
                    forwarded = True
                if give_up_at is None and any(s not in (None, 0) for s in status):
                    # The others would wait for the one that failed for ever.
                    give_up_at = time.monotonic() + FAILURE_GRACE_S
                    first_failure = _cause(status)
                    print(f"rltpu: learner process {_statuses(status, failed_only=True)} "
                          f"exited; the others are stopped if they have not ended in "
                          f"{FAILURE_GRACE_S:.0f} s", file=sys.stderr, flush=True)
                if give_up_at is not None and time.monotonic() > give_up_at:
                    break
                time.sleep(0.5)
    finally:
        ray.get([host.kill.remote() for host in hosts])
    failed = [s for s in status if s not in (None, 0)]
    if failed:
        print(f"rltpu: learner processes ended: {_statuses(status)}", file=sys.stderr, flush=True)
    # The exit status is the first failure's: the others' (a watchdog's "lost process",
    # a stop) follow from it.
    code = 0 if not failed else (first_failure if first_failure is not None else _cause(status))
    return 128 - code if code < 0 else code  # killed by signal N: the shell's 128 + N


def _cause(status: list[int | None]) -> int:
    """Of the learners' statuses seen failed at once, the likeliest cause: a death by a
    signal (a kill, a crash) before an error exit, which a lost peer leads to."""
    failed = [s for s in status if s not in (None, 0)]
    return min(failed)  # (signals are negative)


def _statuses(status: list[int | None], failed_only: bool = False) -> str:
    """``0 (status -6), 1 (stopped)``: each learner's exit status, or that it was stopped."""
    return ", ".join(f"{i} ({'stopped' if s is None else f'status {s}'})"
                     for i, s in enumerate(status) if not failed_only or s not in (None, 0))


def _nodes_summary() -> str:
    return "; ".join(
        f"{node['NodeManagerAddress']}: " + ", ".join(
            f"{k} {v:g}" for k, v in sorted(node["Resources"].items())
            if not k.startswith(("node:", "memory", "object_store")))
        for node in ray.nodes() if node["Alive"])
