"""Claiming a run directory before a run starts: a new one made atomically (two runs never
get the same), an existing one locked (no second process resumes it meanwhile), a
bucket's checked for access; and, once the run starts, filled (``create_run_dir``).
``rltpu.plan.validate`` claims it.
"""
from __future__ import annotations

import datetime
import fcntl
import os
from typing import TYPE_CHECKING

from rltpu import devices, provenance, resume as resuming, storage
from rltpu.agent import Agent
from rltpu.config import RunConfig
from rltpu.metrics import write_json

if TYPE_CHECKING:  # (plan.py imports this module)
    from rltpu.checkpoint import Restored
    from rltpu.plan import Plan


class RunDirLock:
    """An exclusive lock on a run directory for as long as a run uses it: ``flock`` on the
    directory itself (nothing is written into it; the system drops the lock when the
    process ends, however it ends).

    Raises:
      ValueError: another process holds it.
    """

    def __init__(self, path: str, flag: str):
        self._fd: int | None = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.release()
            raise ValueError(f"{flag} {path}: another rltpu process is running it; wait for "
                             "it to end (or stop it) first") from None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def claim(agent: Agent, run: RunConfig, resume: bool) -> tuple[str, RunDirLock | None]:
    """The run directory, claimed: an existing one (``resume``) locked, or a new one made
    and locked. Made with ``mkdir``, which fails if the folder exists, so two runs
    starting together never share one: the default name (stamped to the second) gets a
    suffix instead. Learner processes other than 0 claim nothing (process 0 writes it)."""
    if devices.process_index() != 0:
        return run.run_dir or "(process 0's run directory)", None
    if run.run_dir is not None and not run.run_dir.strip():
        raise ValueError(f"--run-dir {run.run_dir!r} is empty; give a path (or leave it out "
                         "for a new folder under runs/)")
    if run.run_dir is not None:
        storage.check_path(run.run_dir, "--resume" if resume else "--run-dir")  # (s3:// ...)
        if storage.is_remote(run.run_dir):
            return _check_remote_run_dir(run.run_dir, resume), None
    if resume:
        if run.run_dir is None:
            raise ValueError("resuming needs the run directory")
        if not os.path.isdir(run.run_dir):
            raise ValueError(f"--resume {run.run_dir}: no such run directory")
        return run.run_dir, RunDirLock(run.run_dir, "--resume")
    if run.run_dir is not None:
        try:
            _make_dir(run.run_dir)
        except FileExistsError:
            raise ValueError(f"--run-dir {run.run_dir} already exists; runs are never "
                             "overwritten, pass a new path") from None
        return run.run_dir, RunDirLock(run.run_dir, "--run-dir")
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    name = f"{agent.name}-{run.env.replace('/', '_').replace(':', '_')}-{stamp}"
    base = run_dir = os.path.join("runs", name)
    for n in range(1, 10_000):
        try:
            _make_dir(run_dir)
            return run_dir, RunDirLock(run_dir, "--run-dir")
        except FileExistsError:
            run_dir = f"{base}-{n}"
    raise ValueError(f"{base}-* : ten thousand run directories of this second exist; pass "
                     "--run-dir")


def _check_remote_run_dir(run_dir: str, resume: bool) -> str:
    """A run directory in Cloud Storage, checked: it can be reached and written (a probe
    write and delete), and exists when resuming, not otherwise. A bucket has no atomic
    ``mkdir`` nor a lock: two runs given the same gs:// path at once are not kept apart."""
    flag = "--resume" if resume else "--run-dir"
    storage.check_writable(run_dir, flag)  # before anything starts
    if resume and not storage.isdir(run_dir):
        raise ValueError(f"--resume {run_dir}: no such run directory")
    if not resume and storage.exists(run_dir):
        raise ValueError(f"--run-dir {run_dir} already exists; runs are never "
                         "overwritten, pass a new path")
    return run_dir


def _make_dir(path: str) -> None:
    """``mkdir`` of ``path`` (its parents made as needed).

    Raises:
      FileExistsError: ``path`` exists.
      ValueError: it cannot be made (under a file, not writable, ...), naming why.
    """
    parent = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(parent, exist_ok=True)
        os.mkdir(path)
    except (FileExistsError, NotADirectoryError) as e:
        if isinstance(e, FileExistsError) and os.path.isdir(parent) and os.path.lexists(path):
            raise
        blocking = parent
        while not os.path.lexists(blocking):
            blocking = os.path.dirname(blocking)
        raise ValueError(f"--run-dir {path}: cannot make it, {blocking} is a file") from None
    except OSError as e:
        raise ValueError(f"--run-dir {path}: cannot make it ({e.strerror}: "
                         f"{e.filename or path})") from None


def create_run_dir(plan: Plan, resume: Restored | None) -> None:
    """Fills the run directory ``validate`` claimed (a bucket's needs no folder made;
    resuming: sets its skipped checkpoints aside) and writes ``config.json``. Learner
    process 0 only."""
    if resume is None:
        storage.makedirs(plan.run_dir, exist_ok=True)
    else:
        resuming.set_aside(plan.run_dir, resume)
    # With the code's provenance: a run can be tied to what made it (``--config`` of this
    # file ignores that key and repeats the run).
    write_json(storage.join(plan.run_dir, "config.json"),
               {**plan.config(), "provenance": provenance()})
