"""Measures a run keeps: the episode window, memory, metrics.jsonl rows, JSON files."""
from __future__ import annotations

import collections
import json
import math
import time
from typing import Iterable

import numpy as np
import psutil

from rltpu import storage


def process_start_time() -> float:
    """Wall-clock time this process started."""
    return psutil.Process().create_time()


_ran_before = False  # whether this process has started a run already


def run_start_time() -> float:
    """When the run starting now began (its start-up phases and time to target count from
    here): the process's start for the process's first run, whose imports and start-up are
    the run's; now for a later run in the same process, and for every run in a Jupyter
    kernel (a notebook's ``rltpu.train``), where the time since the process started is
    the user's, not the run's."""
    from rltpu.progress import in_jupyter_kernel
    global _ran_before
    if _ran_before or in_jupyter_kernel():
        return time.time()
    _ran_before = True
    return process_start_time()


EPISODE_WINDOW = 20
"""Finished training episodes whose mean return is compared with --target-return."""


class EpisodeWindow:
    """Returns of the last ``size`` finished training episodes."""

    def __init__(self, size: int = EPISODE_WINDOW):
        self.returns: collections.deque = collections.deque(maxlen=size)
        self.count = 0

    @classmethod
    def resumed(cls, counters: dict, size: int = EPISODE_WINDOW) -> EpisodeWindow:
        """The window where a checkpoint's ``counters`` left it (empty for a new run)."""
        window = cls(size)
        window.returns.extend(counters.get("recent_returns", []))
        window.count = counters.get("episodes", 0)
        return window

    def add(self, returns: np.ndarray) -> None:
        self.returns.extend(float(r) for r in returns)
        self.count += len(returns)

    @property
    def full(self) -> bool:
        return len(self.returns) == self.returns.maxlen

    @property
    def mean(self) -> float | None:
        return float(np.mean(self.returns)) if self.returns else None


class MemoryMonitor:
    """Peak resident memory of a set of processes (the driver and its actors), summed."""

    def __init__(self, pids: Iterable[int] = ()):
        self._procs = [psutil.Process()]
        self.add(pids)
        self.peak_mb = 0.0

    def add(self, pids: Iterable[int]) -> None:
        self._procs.extend(psutil.Process(pid) for pid in pids)

    def sample(self) -> float:
        total = 0
        for proc in self._procs:
            try:
                total += proc.memory_info().rss
            except psutil.Error:  # an actor that already exited holds no memory
                pass
        self.peak_mb = max(self.peak_mb, total / 2**20)
        return total / 2**20


class MetricsWriter:
    """Appends one JSON object per log interval to ``metrics.jsonl`` (the console progress
    is ``rltpu.progress``; ``rltpu.sinks`` sends each row to both)."""

    def __init__(self, run_dir: str):
        self._file = storage.AppendFile(storage.join(run_dir, "metrics.jsonl"))

    def write(self, row: dict) -> None:
        self._file.write(json.dumps(_plain(row)) + "\n")

    def sync(self) -> None:
        self._file.sync()

    def close(self) -> None:
        self._file.close()


def write_json(path: str, obj: dict) -> None:
    """Writes ``obj`` whole (a reader never sees half of it), locally or in Cloud Storage."""
    storage.write_text(path, json.dumps(_plain(obj), indent=2) + "\n")


def _plain(obj):
    """JSON-safe copy: numpy scalars to Python, NaN/inf to None."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (np.generic, np.ndarray)):
        obj = obj.item() if np.ndim(obj) == 0 else obj.tolist()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
