"""Checkpoints with orbax: the learner's whole state, the run's counters and its config.

Layout: ``RUN_DIR/checkpoints/<update>/{state,counters,config}``. ``state`` holds the
params, optimizer state, RNG key (as ``jax.random.key_data``: typed keys cannot be
saved) and step in orbax's array format; ``counters`` and ``config`` are JSON. Nothing is
pickled, so loading a checkpoint runs no code from it.

orbax writes a checkpoint into a temporary folder and renames it when complete, so a
process killed mid-write leaves a ``<step>.orbax-checkpoint-tmp-*`` folder that is never
taken for a checkpoint (in Cloud Storage, which cannot rename, it writes ``<step>/`` in
place and ``commit_success.txt`` last; a step folder without it was cut off). A read that
fails is tried again (``READ_RETRIES``); a complete-looking checkpoint that fails every
time is damaged, and resume falls back to the next newest and names what it skipped.
``RUN_DIR`` may be local or ``gs://`` (``rltpu.storage``). This module reads them;
``rltpu.checkpointer`` writes them during a run.
"""
from __future__ import annotations

import contextlib
import gc
import hashlib
import logging
import os
import re
import sys
import time
from typing import Any, Callable, NamedTuple

import jax
import numpy as np
import orbax.checkpoint as ocp

from rltpu import console, devices, storage
from rltpu.types import TrainState

CHECKPOINT_DIR = "checkpoints"
_STEP_DIR = re.compile(r"^(\d+)$")
_TMP_DIR = re.compile(r"^(\d+)\.orbax-checkpoint-tmp")
# What orbax writes last into a complete checkpoint in Cloud Storage (orbax's
# atomicity_types.COMMIT_SUCCESS_FILE; not public API, so named here).
COMMIT_SUCCESS_FILE = "commit_success.txt"

class CheckpointError(ValueError):
    """No usable checkpoint, or a resume that would change what cannot change."""


class Restored(NamedTuple):
    """A checkpoint read back to host memory."""

    step: int  # learner updates when it was saved (its folder name)
    state: TrainState  # numpy leaves; ``key`` is a typed JAX key again
    counters: dict  # env steps, episodes, fault counts, recent returns, ...
    config: dict  # {"run", "agent"} as saved
    path: str
    skipped: tuple[str, ...]  # newer checkpoint folders that were incomplete or corrupt


def checkpoint_dir(run_dir: str) -> str:
    """Absolute, as orbax requires (run directories are often given relative, runs/...);
    a ``gs://`` run directory's as it is."""
    return storage.join(storage.absolute(run_dir), CHECKPOINT_DIR)


def host_state(state: TrainState) -> TrainState:
    """The learner's state as numpy arrays, the key as its raw ``uint32`` data."""
    return devices.to_host(state._replace(key=jax.random.key_data(state.key)))


def state_template(init: Callable) -> tuple[TrainState, Any]:
    """Zeros shaped like ``init``'s state (key as key data) and the key's implementation."""
    key = jax.random.key(0)  # the learner's keys come from jax.random.key: this impl
    shapes = jax.eval_shape(init, key)
    key_shape = jax.eval_shape(jax.random.key_data, shapes.key)
    zeros = lambda s: np.zeros(s.shape, s.dtype)
    template = jax.tree.map(zeros, shapes._replace(key=key_shape))
    return template, jax.random.key_impl(key)


def list_checkpoints(run_dir: str) -> tuple[list[int], list[str]]:
    """Complete-looking checkpoint steps (newest first) and incomplete folders' names."""
    directory = checkpoint_dir(run_dir)
    remote = storage.is_remote(directory)
    steps, incomplete = [], []
    for name in storage.listdir(directory):
        path = storage.join(directory, name)
        if _STEP_DIR.match(name) and storage.isdir(path):
            # In Cloud Storage orbax writes the step's folder in place and marks it complete
            # with a last object (no folder rename there); without it, it was cut off.
            if remote and not storage.exists(storage.join(path, COMMIT_SUCCESS_FILE)):
                incomplete.append(name)
            else:
                steps.append(int(name))
        elif _TMP_DIR.match(name):
            incomplete.append(name)
    return sorted(steps, reverse=True), sorted(incomplete)


READ_RETRIES = (1.0, 3.0)
"""Seconds waited before each new attempt to read a checkpoint that failed to read: a
transient error (a bucket's hiccup, a file system busy) must not roll a run back to an
older checkpoint."""


def _read_with_retries(reader, path: str, template, retries: tuple[float, ...]):
    """One checkpoint read, tried again after each of ``retries`` seconds if it fails."""
    for delay in (*retries, None):
        try:
            with _native_stderr_muted():
                try:
                    return reader.restore(path, args=ocp.args.Composite(
                        state=ocp.args.StandardRestore(template),
                        counters=ocp.args.JsonRestore(), config=ocp.args.JsonRestore()))
                except Exception:
                    # tensorstore's callbacks for the failed read land on orbax's closed event
                    # loop and print tracebacks from native threads; let them land here
                    time.sleep(0.2)
                    raise
        except Exception:  # noqa: BLE001 -- retried quietly; the caller reports the last
            _forget_failed_reads()
            if delay is None:
                raise
            time.sleep(delay)


def _json_object(value, name: str) -> dict:
    """A checkpoint's ``counters`` or ``config``: a JSON object, or the checkpoint is damaged."""
    if not isinstance(value, dict):
        raise ValueError(f"its {name} hold {type(value).__name__} {str(value)[:40]!r}, "
                         "not a JSON object")
    return value


def restore(run_dir: str, init: Callable, step: int | None = None,
            retries: tuple[float, ...] = READ_RETRIES) -> Restored:
    """Reads the newest complete checkpoint of ``run_dir`` (or checkpoint ``step``).

    Incomplete (cut off mid-write) and corrupt checkpoints newer than the one restored are
    skipped with a warning naming each; nothing is changed on disk.

    Args:
      run_dir: the run directory.
      init: the agent's ``init`` (``key -> TrainState``); gives the state's structure.
      step: restore exactly this checkpoint.
      retries: seconds to wait before each further attempt at a checkpoint that failed to
        read; only one that fails every time is called corrupt.

    Raises:
      CheckpointError: no complete checkpoint (or ``step`` is missing or damaged).
    """
    directory = checkpoint_dir(run_dir)
    steps, incomplete = list_checkpoints(run_dir)
    if step is not None:
        if step not in steps:
            raise CheckpointError(f"no checkpoint {step} in {directory}; complete ones look like: "
                                  f"{', '.join(map(str, sorted(steps))) or 'none'}")
        steps, incomplete = [step], []
    skipped = [(name, "cut off mid-write") for name in incomplete]
    template, key_impl = state_template(init)
    if jax.process_count() > 1:  # process 0 reads alone (restore_on_first_process)
        alone = ocp.options.MultiprocessingOptions(primary_host=0, active_processes={0})
        reader = ocp.Checkpointer(ocp.CompositeCheckpointHandler(
            composite_options=ocp.CompositeOptions(multiprocessing_options=alone)),
            multiprocessing_options=alone)
    else:
        reader = ocp.Checkpointer(ocp.CompositeCheckpointHandler())
    # NOTE: the reader is closed only after a good read. Closing it right after a failed one
    # shuts its event loop while that read's callbacks are still arriving, and asyncio then
    # prints tracebacks after the one-line error; an unclosed reader ends with the process.
    for candidate in steps:
        path = storage.join(directory, str(candidate))
        try:
            restored = _read_with_retries(reader, path, template, retries)
            state = TrainState(*restored.state)
            _check_like(state, template)
            counters = _json_object(restored.counters, "counters")
            config = _json_object(restored.config, "config")
        except Exception as e:  # noqa: BLE001 -- any failure to read, again and again: damaged
            _forget_failed_reads()
            text = str(e).strip().splitlines()
            reason = f"{type(e).__name__}: {text[0][:200] if text else ''}"
            if step is not None:
                raise CheckpointError(f"checkpoint {path} cannot be read ({reason})") from None
            skipped.append((str(candidate), f"corrupt, {reason}"
                                             + (f", read {len(retries) + 1} times" if retries else "")))
            continue
        reader.close()
        for name, why in skipped:
            console.warn(f"skipping checkpoint {storage.join(directory, name)} ({why})")
        state = state._replace(key=jax.random.wrap_key_data(state.key, impl=key_impl))
        return Restored(candidate, state, counters, config, path,
                        tuple(name for name, _ in skipped))
    raise CheckpointError(
        f"no complete checkpoint in {directory}"
        + (f" (skipped {', '.join(f'{name}: {why}' for name, why in skipped)})" if skipped else "")
        + "; nothing was changed")


@contextlib.contextmanager
def _native_stderr_muted():
    """Sends file descriptor 2 to /dev/null for the block: the noise of a damaged
    checkpoint's read comes from native threads that Python's own hooks cannot silence.
    The reason for skipping it is reported once, by the caller."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _forget_failed_reads() -> None:
    """Drops the asyncio tasks a failed orbax read leaves behind, without asyncio logging a
    page-long "exception was never retrieved" for each (the failure is reported once)."""
    log = logging.getLogger("asyncio")
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        gc.collect()
    finally:
        log.setLevel(level)


def _check_like(state: TrainState, template: TrainState) -> None:
    """Raises ValueError unless ``state`` has the template's structure, shapes and dtypes."""
    if jax.tree.structure(state) != jax.tree.structure(template):
        raise ValueError("its state has a different structure than this agent's")
    for got, want in zip(jax.tree.leaves(state), jax.tree.leaves(template)):
        if np.shape(got) != want.shape or np.asarray(got).dtype != want.dtype:
            raise ValueError(f"an array is {np.shape(got)} {np.asarray(got).dtype}, "
                             f"expected {want.shape} {want.dtype}")


def params_digest(params) -> str:
    """SHA-256 of the params' bytes in tree order: equal digests mean bitwise-equal params."""
    digest = hashlib.sha256()
    for leaf in jax.tree.leaves(devices.to_host(params)):
        digest.update(np.ascontiguousarray(leaf).tobytes())
    return digest.hexdigest()
