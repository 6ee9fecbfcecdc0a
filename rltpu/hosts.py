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
from typing import Any, Callable

import jax
import numpy as np

from rltpu import checkpoint, devices


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
