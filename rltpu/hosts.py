"""One learner process per host: what each one owns, and the decisions they all share.

On a pod slice every host runs ``rltpu train``; the processes join with
``jax.distributed`` (``devices.initialize_distributed``) and form one mesh. Each owns its
share of the rollout actors and builds its share of every global batch, so the learner
step, a collective over every device, keeps them in lockstep: a host whose actors are
slow holds the others at the next update, it never lets them step alone.

What ends the run must be decided alike everywhere, or one host stops while the others
wait in the next collective for ever (a hung pod). ``LearnerHosts.agree`` gathers, before
each update, every process's stop request, its env steps and its finished episodes'
returns: every process then sees the same global counts and the same returns in the same
order, and takes the same decisions. With one process it is the identity, so the
single-host loop runs the same code.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import socket
import sys
import threading
import time
import traceback
from typing import Any, Callable

import jax
import numpy as np

from rltpu import checkpoint, console, devices


def on_first_process(read: Callable[[], Any]) -> Any:
    """``read()`` (a JSON-able result) by learner process 0 alone, given to every learner
    process. If it raises, every process raises: process 0 the error itself, the others a
    ValueError (for a ValueError) or a RuntimeError with its message; none is left
    waiting for the others. A collective: every process calls it."""
    if devices.process_count() == 1:
        return read()
    data, failure = None, None
    if devices.process_index() == 0:
        try:
            data = json.dumps({"value": read()}).encode()
        except Exception as e:  # noqa: BLE001 -- every host must hear of any failure
            failure = e
            data = json.dumps({"error": str(e), "value_error": isinstance(e, ValueError)}).encode()
    result = json.loads(devices.bytes_from_first_process(data))
    if failure is not None:
        raise failure
    if "error" in result:
        if result["value_error"]:
            raise ValueError(result["error"])
        raise RuntimeError(f"learner process 0 failed: {result['error']}")
    return result["value"]


def tree_from_first_process(tree, template):
    """Learner process 0's ``tree`` (numpy leaves shaped like ``template``'s) in every
    learner process; the others pass None. A collective; with one process, ``tree``."""
    leaves, structure = jax.tree.flatten(template)
    data = devices.bytes_from_first_process(None if tree is None else b"".join(
        np.ascontiguousarray(leaf).tobytes() for leaf in jax.tree.leaves(tree)))
    offsets = np.cumsum([0] + [leaf.nbytes for leaf in leaves])
    return jax.tree.unflatten(structure, [
        np.frombuffer(data[a:b], leaf.dtype).reshape(leaf.shape)
        for leaf, a, b in zip(leaves, offsets[:-1], offsets[1:])])


class HostsDisagreeError(ValueError):
    """The learner processes of a run were started with settings that differ."""


@dataclasses.dataclass(frozen=True)
class Agreed:
    """What every learner process knows after ``agree`` (the same on all of them)."""

    stop_by: tuple[int, ...]
    """Processes whose stop was requested (SIGTERM, Ctrl-C); empty if none."""
    env_steps: int
    """Env steps in this update's global batch."""
    episode_returns: np.ndarray
    """Returns of the episodes that ended in this update's global batch, process by process."""


@dataclasses.dataclass(frozen=True)
class LearnerHosts:
    """This learner process's place among the ``count`` learner processes of a run."""

    index: int
    count: int

    @classmethod
    def current(cls) -> "LearnerHosts":
        return cls(devices.process_index(), devices.process_count())

    @property
    def primary(self) -> bool:
        """Process 0 writes the run directory (config, metrics, summary, checkpoints)."""
        return self.index == 0

    def actor_ids(self, num_actors: int) -> list[int]:
        """Global ids of the rollout actors this process owns (ids seed the actors' envs,
        so every actor of the run acts on different episodes)."""
        return list(range(self.index, num_actors, self.count))

    def share(self, batch_size: int) -> int:
        """Trajectories this process contributes to each global batch."""
        return batch_size // self.count

    def agree(self, stop_requested: bool, env_steps: int, episode_returns: np.ndarray,
              max_episodes: int) -> Agreed:
        """Gathers every process's facts about the batch it is about to feed the update.

        A collective (see ``devices.all_processes``): every process calls it once per
        update, before the update, so it does not delay the update's overlap with the
        collection of the next batch.

        Args:
          stop_requested: this process received SIGTERM or SIGINT.
          env_steps: env steps in this process's share of the batch.
          episode_returns: returns of the episodes that ended in that share.
          max_episodes: an upper bound on ``len(episode_returns)`` (the gathered arrays
            must have one shape on every process).
        """
        returns = np.asarray(episode_returns, np.float32)
        if self.count == 1:  # no bound needed (a replay agent's batch may follow many unrolls)
            return Agreed((0,) if stop_requested else (), int(env_steps), returns)
        if len(returns) > max_episodes:
            raise ValueError(f"{len(returns)} episodes ended in one batch share, more than "
                             f"the bound {max_episodes}")
        padded = np.zeros(max_episodes, np.float32)
        padded[:len(returns)] = returns
        # int32 is exact here: these are one batch's counts, not the run's totals.
        counts = np.array([stop_requested, env_steps, len(returns)], np.int32)
        gathered = devices.all_processes({"counts": counts, "returns": padded})
        counts, padded = gathered["counts"], gathered["returns"]
        return Agreed(tuple(int(i) for i in np.flatnonzero(counts[:, 0])),
                      int(counts[:, 1].sum()),
                      np.concatenate([padded[i, :n] for i, n in enumerate(counts[:, 2])]))

    def check_same(self, settings: dict) -> None:
        """Raises ``HostsDisagreeError`` unless every process passed the same ``settings``
        (those that shape the batch or decide when the run ends): a mismatch would hang the
        pod."""
        if self.count == 1:
            return
        text = json.dumps(settings, sort_keys=True, default=str)
        digest = np.frombuffer(hashlib.sha256(text.encode()).digest(), np.uint8)
        gathered = devices.all_processes(digest)
        differ = [i for i in range(self.count) if not np.array_equal(gathered[i], gathered[0])]
        if differ:
            raise HostsDisagreeError(
                f"learner processes {differ} were started with settings that differ from "
                f"process 0's; every host must run the same flags (these must match: "
                f"{', '.join(sorted(settings))})")


class UpdateRecorder:
    """Records what one learner process did at each update, to check hosts against each
    other and against a single process (a debugging aid; tests use it).

    Set ``RLTPU_RECORD_UPDATES=DIR`` and each learner process appends to
    ``DIR/process<I>.digests`` a line per update as it goes (the SHA-256 of the params
    after it, as ``checkpoint.params_digest``), and writes ``DIR/process<I>.npz`` when the
    run ends: for the first ``RECORDED_UPDATES`` updates, this process's share of each
    batch (``batch<U>_leaf<J>``, the host arrays it fed) and the params after it
    (``params<U>_leaf<J>``).
    """

    ENV = "RLTPU_RECORD_UPDATES"
    RECORDED_UPDATES = 20

    def __init__(self, directory: str, process_index: int):
        self._path = os.path.join(directory, f"process{process_index}.npz")
        os.makedirs(directory, exist_ok=True)
        self._digests = open(os.path.join(directory, f"process{process_index}.digests"), "w")
        self._arrays: dict[str, np.ndarray] = {}
        self._puts = 0

    @classmethod
    def from_environment(cls, process_index: int) -> "UpdateRecorder | None":
        directory = os.environ.get(cls.ENV)
        return cls(directory, process_index) if directory else None

    def recording(self, put):
        """Wraps the learner's ``put`` (host batch -> device batch) to keep the host batch;
        batches are put in the order the updates consume them."""
        def recorded_put(host_batch):
            if self._puts < self.RECORDED_UPDATES:
                for j, leaf in enumerate(jax.tree.leaves(host_batch)):
                    self._arrays[f"batch{self._puts}_leaf{j}"] = np.array(leaf)
            self._puts += 1
            return put(host_batch)
        return recorded_put

    def updated(self, version: int, host_params) -> None:
        self._digests.write(checkpoint.params_digest(host_params) + "\n")
        self._digests.flush()
        if version <= self.RECORDED_UPDATES:
            for j, leaf in enumerate(jax.tree.leaves(host_params)):
                self._arrays[f"params{version - 1}_leaf{j}"] = np.array(leaf)

    def close(self) -> None:
        self._digests.close()
        np.savez(self._path, **self._arrays)


JOIN_TIMEOUT_S = 300.0
"""How long a learner process waits for the others at start (``--join-timeout-s``)."""
PEER_TIMEOUT_S = 30.0
"""How long a learner process may go unheard before the others stop (``--peer-timeout-s``)."""
JOIN_PROGRESS_S = 5.0
"""How often a process waiting for the others says how many have joined."""


def service_grace_s(peer_timeout_s: float) -> float:
    """How long the coordination service outlives a learner process 0 that died: the others
    leave within ``1.7 * peer_timeout_s + 6`` s (see ``Watchdog``), and it must serve them
    until then."""
    return 2 * peer_timeout_s + 10


class JoinError(RuntimeError):
    """The learner processes did not all join in time, or one joined twice."""


TPU_COORDINATOR_PORT = 8482
"""Where the coordination service listens on a Cloud TPU (JAX's own choice there), unless
``JAX_COORDINATOR_PORT`` says otherwise."""


def cloud_tpu_cluster(tries: int = 3) -> tuple[str, int, int] | None:
    """``(coordinator HOST:PORT, process count, this process's id)`` of a Cloud TPU VM's
    slice, read from the VM's metadata server as JAX reads it for ``--distributed auto``:
    ``agent-worker-number`` is this host's id, ``worker-network-endpoints`` lists every host
    (``name:id:ip`` triples, or bare names) in id order, worker 0 hosts the service.
    ``GCE_METADATA_IP`` (HOST[:PORT]) and ``JAX_COORDINATOR_PORT`` are honoured, as JAX
    honours them. None off a TPU VM (no metadata server, or one without a worker number)
    and on a multislice run (``MEGASCALE_COORDINATOR_ADDRESS`` in ``tpu-env``), where
    process ids span slices and JAX's own discovery is left to decide.

    Raises:
      ValueError: an endpoint is in neither format, this host's id is not among them, or
        the port is not a port.
    """
    import urllib.error
    import urllib.request
    base = f"http://{os.environ.get('GCE_METADATA_IP', 'metadata.google.internal')}"

    def attribute(key: str) -> str | None:
        request = urllib.request.Request(
            f"{base}/computeMetadata/v1/instance/attributes/{key}",
            headers={"Metadata-Flavor": "Google"})
        for attempt in range(tries):
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    return response.read().decode()
            except urllib.error.HTTPError as e:
                if e.code == 404:
                    return None
            except (OSError, ValueError):  # (no such host, refused, timed out)
                pass
            if attempt + 1 < tries:
                time.sleep(0.5)
        return None

    worker = attribute("agent-worker-number")
    if worker is None or not worker.strip().isdigit():
        return None
    if "MEGASCALE_COORDINATOR_ADDRESS" in (attribute("tpu-env") or ""):
        return None
    hosts = []
    for endpoint in (attribute("worker-network-endpoints") or "").strip().split(","):
        parts = endpoint.split(":")
        if len(parts) not in (1, 3) or not parts[-1]:
            raise ValueError(f"--distributed auto: the TPU VM's worker-network-endpoints "
                             f"entry {endpoint!r} is neither NAME:ID:IP nor a host name")
        hosts.append(parts[-1])
    port = os.environ.get("JAX_COORDINATOR_PORT", str(TPU_COORDINATOR_PORT))
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"JAX_COORDINATOR_PORT={port!r} is not a port from 1 to 65535")
    process_id = int(worker)
    if process_id >= len(hosts):
        raise ValueError(f"--distributed auto: the TPU VM says it is worker {process_id} of "
                         f"{len(hosts)} (worker-network-endpoints: {len(hosts)} hosts)")
    return f"{hosts[0]}:{port}", len(hosts), process_id


def join(coordinator: str | None, num_processes: int | None, process_id: int | None,
         join_timeout_s: float = JOIN_TIMEOUT_S, peer_timeout_s: float = PEER_TIMEOUT_S,
         cpu_devices: int | None = None) -> "Watchdog":
    """Joins this learner process to the others and starts watching them.

    With a coordinator given, the processes first meet on its port (process 0 listens
    there, on the coordinator's address alone), and every one waiting says every
    ``JOIN_PROGRESS_S`` how many of how many have joined; then the port is handed to
    ``jax.distributed``. With ``--distributed auto`` (no coordinator) a TPU VM's metadata
    supplies all three (``cloud_tpu_cluster``) and the same path follows; elsewhere JAX
    finds the others itself and the wait only says how long it has waited. Either way the
    wait ends after ``join_timeout_s`` with ``JoinError``.

    Returns:
      The started ``Watchdog`` (``watchdog()`` returns it too).
    """
    global _watchdog
    deadline = time.monotonic() + join_timeout_s
    if coordinator is None:
        # --distributed auto on a TPU VM: the service runs in a process of its own beside
        # process 0 (a lost process 0 is named like any other), and the wait says how many
        # of how many have joined. Elsewhere JAX's own discovery, and its service.
        coordinator, num_processes, process_id = cloud_tpu_cluster() or (None, None, None)
    if coordinator is not None:
        _meet(coordinator, num_processes, process_id, join_timeout_s, deadline)
    watching = Watchdog(peer_timeout_s)
    waiting = None if coordinator is not None else _say_while_waiting(join_timeout_s)
    try:
        devices.initialize_distributed(
            coordinator, num_processes, process_id, cpu_devices,
            timeout_s=max(1.0, deadline - time.monotonic()),
            # JAX's own verdict must come after rltpu's, which names the lost process.
            heartbeat_timeout_s=max(100.0, 3 * peer_timeout_s),
            service_grace_s=service_grace_s(peer_timeout_s))
    except Exception as e:  # noqa: BLE001 -- JAX's timeout is a RuntimeError of many lines
        if time.monotonic() >= deadline - 1:
            raise JoinError(f"the learner processes did not all join within {join_timeout_s:g} s "
                            f"(--join-timeout-s): {' '.join(str(e).split())[:300]}") from None
        raise
    finally:
        if waiting is not None:
            waiting.set()
    watching.start(devices.process_index(), devices.process_count())
    _watchdog = watching
    return watching


def _say_while_waiting(timeout_s: float) -> threading.Event:
    """Says every ``JOIN_PROGRESS_S`` that this process is still waiting, until the event."""
    done, t0 = threading.Event(), time.monotonic()

    def run():
        while not done.wait(JOIN_PROGRESS_S):
            waited = time.monotonic() - t0
            console.say(f"waiting for the other learner processes to join ({waited:.0f} s; "
                        f"giving up after {timeout_s:g} s)")
    threading.Thread(target=run, daemon=True, name="rltpu-join").start()
    return done


def _meet(coordinator: str, count: int, index: int, timeout_s: float, deadline: float) -> None:
    """Every learner process meets the others at the coordinator's port before JAX uses it:
    process 0 listens and counts, the others connect and hear the count."""
    host, _, port = coordinator.rpartition(":")
    host = host.strip("[]")
    if index == 0:
        _meet_as_first(host, int(port), count, timeout_s, deadline)
    else:
        _meet_as_other(host, int(port), count, index, timeout_s, deadline)


def _missing(joined, count: int) -> str:
    missing = [i for i in range(count) if i not in joined]
    return ", ".join(map(str, missing[:8])) + (", ..." if len(missing) > 8 else "")


def _meet_as_first(host: str, port: int, count: int, timeout_s: float, deadline: float) -> None:
    members: dict[int, socket.socket] = {}
    # SO_REUSEPORT as JAX's gRPC server sets it, so the two can follow each other on the port.
    server = socket.create_server((host, port), reuse_port=True)
    server.settimeout(0.5)
    said = time.monotonic()
    try:
        while len(members) < count - 1:
            now = time.monotonic()
            if now >= deadline:
                raise JoinError(f"only {len(members) + 1} of {count} learner processes joined "
                                f"within {timeout_s:g} s (--join-timeout-s); missing: "
                                f"{_missing({0, *members}, count)}")
            if now - said >= JOIN_PROGRESS_S:
                said = now
                console.say(f"waiting for the learner processes: {len(members) + 1} of {count} "
                            f"joined (missing: {_missing({0, *members}, count)})")
            try:
                conn, _ = server.accept()
            except socket.timeout:
                continue
            conn.settimeout(10)
            try:
                words = conn.makefile().readline().split()
                index = int(words[1]) if len(words) == 3 and words[0] == "join" else -1
                if len(words) == 3 and int(words[2]) != count:
                    _send(conn, f"refused learner process 0 was started with --num-processes "
                                f"{count}, this one with {words[2]}")
                    continue
            except (OSError, ValueError):
                conn.close()
                continue
            if not 0 < index < count or index in members:
                _send(conn, f"refused learner process {index} "
                            + ("has joined already" if index in members else "is not expected"))
                continue
            members[index] = conn
            for other in members.values():
                _send(other, f"joined {len(members) + 1}", close=False)
        for conn in members.values():
            _send(conn, "go", close=False)
        for conn in members.values():  # they close first, so the port is free at once
            try:
                conn.recv(1)
            except OSError:
                pass
    finally:
        for conn in members.values():
            conn.close()
        server.close()


def _send(conn: socket.socket, line: str, close: bool = True) -> None:
    try:
        conn.sendall((line + "\n").encode())
    except OSError:
        pass
    if close:
        conn.close()


def _meet_as_other(host: str, port: int, count: int, index: int, timeout_s: float,
                   deadline: float) -> None:
    joined, said = None, time.monotonic()
    while True:
        now = time.monotonic()
        if now >= deadline:
            raise JoinError(
                f"learner process 0 (the coordinator, {host}:{port}) was not reachable within "
                f"{timeout_s:g} s (--join-timeout-s)" if joined is None else
                f"only {joined} of {count} learner processes joined within {timeout_s:g} s "
                "(--join-timeout-s)")
        if now - said >= JOIN_PROGRESS_S:
            said = now
            console.say(f"waiting for learner process 0 at {host}:{port} (not reachable yet)"
                        if joined is None else
                        f"waiting for the learner processes: {joined} of {count} joined")
        try:
            conn = socket.create_connection((host, port), timeout=2)
        except OSError:
            time.sleep(0.5)
            continue
        with conn:
            conn.settimeout(0.5)
            try:
                conn.sendall(f"join {index} {count}\n".encode())
            except OSError:
                continue
            buffer = b""
            while time.monotonic() < deadline:
                try:
                    data = conn.recv(4096)
                except socket.timeout:
                    data = None
                except OSError:
                    break
                if data == b"":
                    break  # process 0 went away: try again until the deadline
                buffer += data or b""
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    word, _, rest = line.decode().partition(" ")
                    if word == "go":
                        return
                    if word == "refused":
                        raise JoinError(rest)
                    if word == "joined":
                        joined = int(rest)
                if time.monotonic() - said >= JOIN_PROGRESS_S:
                    said = time.monotonic()
                    console.say(f"waiting for the learner processes: {joined or 1} of {count} "
                                "joined")


class LostProcessError(RuntimeError):
    """A learner process of the run stopped answering."""


_watchdog: "Watchdog | None" = None


def watchdog() -> "Watchdog | None":
    """This process's watchdog (None in a single-process run)."""
    return _watchdog


class Watchdog:
    """Watches the other learner processes; when one is lost, ends this one.

    Each process sets its own heartbeat (a counter) in the key-value store of JAX's
    coordination service every ``timeout_s / 6`` (at most 5 s) and reads everyone's. A
    process whose counter has not moved for ``timeout_s`` is lost. This process then says
    one line naming it, lets a checkpoint being written finish (process 0; for at most
    ``timeout_s / 3``), and exits with status 1 without JAX's exit handlers (they would
    wait for the lost process). Process 0 publishes its verdict and waits a beat before it
    exits, so that the others say the same line before its exit takes the store away. In
    all, a survivor exits within about ``1.7 * timeout_s + 6`` s of the loss (51 s with
    the default 30). Without it the collectives of the next update wait for the lost
    process until JAX's own heartbeat timeout (100 s), then abort with pages of native
    traces and no word on which host.

    The store (JAX's coordination service) runs in a process of its own beside process 0
    (``devices.initialize_distributed``) and outlives a process 0 that dies, so process 0
    is named lost like any other. Only with ``--distributed auto`` does the store live
    inside process 0: there, when process 0 dies, JAX's client in every other process
    aborts that process itself within a second, with JAX's own message ("... the leader
    task ..."), before this watchdog can speak; JAX takes no Python callback in place of
    that abort (its ``missed_heartbeat_callback`` dies converting its argument, JAX 0.10.2).
    """

    PREFIX = "rltpu/heartbeat/"

    def __init__(self, timeout_s: float):
        self.timeout_s = timeout_s
        self._index, self._count = 0, 1
        self._seen: dict[int, tuple[str, float]] = {}  # process -> (its counter, when it moved)
        self._store_reached = time.monotonic()
        self._finished = threading.Event()
        self._verdict: list[int] | None = None  # process 0's, which the others follow
        self._before_exit: list[Callable[[], None]] = []
        self._lock = threading.Lock()

    def start(self, index: int, count: int) -> None:
        self._index, self._count = index, count
        now = time.monotonic()
        self._seen = {i: ("", now) for i in range(count) if i != index}
        self._store_reached = now
        if count > 1:
            threading.Thread(target=self._beat, daemon=True, name="rltpu-heartbeat").start()
            threading.Thread(target=self._judge, daemon=True, name="rltpu-watchdog").start()

    def before_exit(self, finish: Callable[[], None]) -> None:
        """Runs ``finish`` (for at most ``timeout_s / 3``) before exiting for a lost process: a
        checkpoint being written completes rather than being left cut off."""
        self._before_exit.append(finish)

    def finished(self) -> None:
        """This process ended its run normally: it stops watching, and the others stop
        watching it (it may exit before them)."""
        if self._finished.is_set():
            return
        self._finished.set()
        try:
            devices.publish(f"{self.PREFIX}{self._index}", "finished")
        except Exception:  # noqa: BLE001 -- the others then see it go quiet, as they should
            pass

    def wait_for_peers(self) -> None:
        """Process 0, its run ended, before it leaves without JAX's exit handlers (after a
        signal, ``os._exit``): waits until the others have ended theirs too (``finished``;
        at most ``timeout_s``), and a beat more for them to leave, then ends the store (JAX
        aborts a process still running when it goes, with its own pages)."""
        if self._index != 0 or self._count < 2:
            return
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            try:
                values = devices.published(self.PREFIX)
            except Exception:  # noqa: BLE001 -- nothing left to wait for
                break
            ended = {int(key.rstrip("/").rpartition("/")[2])
                     for key, value in values.items() if value == "finished"}
            if ended >= set(range(1, self._count)):
                time.sleep(1.0)
                break
            time.sleep(0.2)
        devices.end_coordination_service()

    def confirm(self) -> None:
        """Called when this process's own work failed (a collective that lost its peer
        raises at once on CPUs): waits up to ``timeout_s`` (plus a beat) for the verdict,
        which exits the process if a peer was lost; returns if none was."""
        if self.watching:
            time.sleep(self.timeout_s + self._period() + 2)

    @property
    def watching(self) -> bool:
        """Whether this process watches others (several processes, its run not finished)."""
        return self._count > 1 and not self._finished.is_set()

    def failed(self) -> None:
        """This process's run raised (the caller is handling the exception): never returns.

        A runtime error of JAX's (a collective whose peer died raises one at once on CPUs)
        first waits for the verdict (``confirm``), which exits with the one line if a peer
        was lost. Otherwise the traceback is printed and the process exits with status 1
        without JAX's exit handlers: those wait at a barrier for the others, which are
        waiting for this process in the next collective, and the pod would hang. Gone
        quiet, it is named lost by the others within their bound.
        """
        runtime_errors = tuple(t for t in (getattr(jax.errors, "JaxRuntimeError", None),
                                           getattr(jax.errors, "XlaRuntimeError", None)) if t)
        if isinstance(sys.exc_info()[1], runtime_errors):
            self.confirm()
        traceback.print_exc()
        console.say(f"error: learner process {self._index} failed (above); the others stop "
                    "when they notice (--peer-timeout-s)")
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)

    def _period(self) -> float:
        return max(0.2, min(5.0, self.timeout_s / 6))

    def _beat(self) -> None:
        beat = 0
        while not self._finished.wait(self._period()):
            beat += 1
            try:
                devices.publish(f"{self.PREFIX}{self._index}", str(beat))
                values = devices.published(self.PREFIX)
            except Exception:  # noqa: BLE001 -- the judge counts how long the store is gone
                continue
            now = time.monotonic()
            with self._lock:
                self._store_reached = now
                for key, value in values.items():
                    i = int(key.rstrip("/").rpartition("/")[2])
                    if i in self._seen and self._seen[i][0] != value:
                        self._seen[i] = (value, now)
                    if i == 0 and value.startswith("lost "):
                        self._verdict = [int(j) for j in value.split()[1:]]

    def _judge(self) -> None:
        while not self._finished.wait(0.5):
            now = time.monotonic()
            with self._lock:
                if self._verdict is not None:
                    lost = self._verdict
                elif now - self._store_reached > self.timeout_s:
                    lost = [0]
                else:
                    lost = [i for i, (value, moved) in self._seen.items()
                            if value != "finished" and now - moved > self.timeout_s]
            if lost and self._index not in lost:
                self._exit(lost)

    def _exit(self, lost: list[int]) -> None:
        if self._finished.is_set():
            return
        names = ", ".join(map(str, lost))
        if self._index == 0 and self._count > 2:
            # Process 0's exit takes JAX's coordination service with it, and JAX aborts the
            # others at once with its own pages: let them hear the verdict and say theirs.
            try:
                devices.publish(f"{self.PREFIX}0", "lost " + " ".join(map(str, lost)))
            except Exception:  # noqa: BLE001
                pass
            time.sleep(self._period() + 1)
        for finish in self._before_exit:
            done = threading.Thread(target=_without_errors(finish), daemon=True)
            done.start()
            done.join(self.timeout_s / 3)
        console.say(f"error: lost learner process{'es' if len(lost) > 1 else ''} {names} "
                    f"(unheard for {self.timeout_s:g} s, --peer-timeout-s); learner process "
                    f"{self._index} stops too. Resume the run on every host with --resume")
        sys.stdout.flush()
        if len(lost) == self._count - 1:
            # Process 0, no one left to serve (else the store serves the others on until
            # they leave, for its grace).
            devices.end_coordination_service()
        os._exit(1)


def _without_errors(finish: Callable[[], None]) -> Callable[[], None]:
    def run():
        try:
            finish()
        except Exception:  # noqa: BLE001 -- a failed write leaves the last complete checkpoint
            pass
    return run
