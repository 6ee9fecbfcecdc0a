"""What the research benchmarks (bench/minatar.py, bench/mujoco.py) share: a flag parser
whose errors are one line, rltpu runs as subprocesses, and markdown tables."""
from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line on stderr and exit status 2 (no usage block)."""

    def error(self, message: str):
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        sys.exit(2)


def csv_choices(parser: Parser, flag: str, given: str, valid: tuple[str, ...]) -> list[str]:
    """``given`` split at commas, each checked against ``valid`` (a bad one: parser.error)."""
    names = [name for name in given.split(",") if name]
    bad = [name for name in names if name not in valid]
    if bad or not names:
        parser.error(f"{flag} {given!r}: {', '.join(bad) or 'empty'} is not one of "
                     f"{', '.join(valid)}")
    return names


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1, written plainly or as 1e6."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value != int(value) or value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return int(value)


def machine_line() -> str:
    """Date (UTC), host, CPUs and the 1/5/15-minute load averages, for a table's header."""
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load = "/".join(f"{x:.1f}" for x in os.getloadavg())
    return f"{now}, {os.uname().nodename}, {os.cpu_count()} CPUs, load average {load}"


def load1() -> float:
    return os.getloadavg()[0]


class CpuClock:
    """A child process's CPU time (user + system, all its threads) against wall time.

    On a shared machine, env steps/s is mostly the share of the cores the other processes
    left a run, and two runs side by side meet different loads; the CPU seconds a run
    spends per env step change far less, so a ratio of those says which program does less
    work. ``run`` samples the child's ``/proc/PID/stat`` every ``every_s`` (and takes its
    total at exit from its resource usage), so the CPU of one phase (training, without
    start-up and compilation) is read off afterwards with ``cpu_between``.
    """

    TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")

    def __init__(self, every_s: float = 0.1):
        self.every_s = every_s
        self.samples: list[tuple[float, float]] = []  # (time.time(), CPU seconds so far)
        self.launched: float | None = None

    def run(self, command: list[str], timeout_s: float, **popen) -> subprocess.CompletedProcess:
        """``subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)``,
        sampled. Raises ``subprocess.TimeoutExpired`` (the child killed) as that does."""
        children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.launched = time.time()
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True, **popen)
        done = threading.Event()
        sampler = threading.Thread(target=self._sample, args=(process.pid, done), daemon=True)
        sampler.start()
        try:
            stdout, stderr = process.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            raise
        finally:
            done.set()
            sampler.join()
        ended = time.time()
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        total = (children.ru_utime - children_before.ru_utime
                 + children.ru_stime - children_before.ru_stime)
        self.samples.append((ended, max(total, self.samples[-1][1] if self.samples else 0.0)))
        return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)

    def _sample(self, pid: int, done: threading.Event) -> None:
        path = f"/proc/{pid}/stat"
        while not done.is_set():
            try:
                with open(path) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                return  # (reaped: the total at exit closes the samples)
            # utime and stime, fields 14 and 15 of proc(5); the name's ")" is split off.
            self.samples.append((time.time(), (int(fields[11]) + int(fields[12])) * self.TICK_S))
            done.wait(self.every_s)

    def cpu_at(self, when: float) -> float:
        """CPU seconds the child had used at ``when`` (time.time()), interpolated linearly
        between samples; 0 before the first, the total after the last."""
        points = [(self.launched, 0.0), *self.samples]
        for (t0, c0), (t1, c1) in zip(points, points[1:]):
            if when <= t1:
                return c0 + (c1 - c0) * max(when - t0, 0.0) / max(t1 - t0, 1e-9)
        return points[-1][1]

    def cpu_between(self, start_s: float, end_s: float) -> float:
        """CPU seconds the child used between ``start_s`` and ``end_s`` after its launch."""
        return self.cpu_at(self.launched + end_s) - self.cpu_at(self.launched + start_s)


def rltpu_train(args: list[str], run_dir: str, timeout_s: float) -> dict:
    """``rltpu train`` (this checkout's code) in a process of its own; its summary.json, with
    ``process_s`` (from process start to exit) and ``train_cpu_s`` (the CPU seconds it
    spent from the end of its start-up to the end of training: ``CpuClock``) added.

    Raises:
      RuntimeError: the run failed or ran past ``timeout_s``; the message holds its stderr's tail.
    """
    env = {**os.environ, "RAY_ADDRESS": "", "PYTHONPATH": ROOT}
    clock = CpuClock()
    try:
        result = clock.run([sys.executable, "-m", "rltpu.cli", "train", "--quiet",
                            "--run-dir", run_dir, *args], timeout_s, cwd=ROOT, env=env)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"rltpu train {' '.join(args)} ran past {timeout_s:.0f} s") from None
    if result.returncode != 0:
        raise RuntimeError(f"rltpu train {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    with open(os.path.join(run_dir, "summary.json")) as f:
        summary = json.load(f)
    summary["process_s"] = clock.samples[-1][0] - clock.launched
    # The summary's times count from the process's start (the launch, to a few ms): start-up
    # ends at startup_s, training at wall_s (the final checkpoint and the exit come after).
    summary["train_cpu_s"] = clock.cpu_between(summary["startup_s"], summary["wall_s"])
    return summary


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt(value, spec: str = ",.0f", missing: str = "-") -> str:
    """``value`` formatted, or ``missing`` for None (a run that did not happen or failed)."""
    return missing if value is None else format(value, spec)


def append_jsonl(path: str | None, row: dict) -> None:
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(row) + "\n")


def read_jsonl(path: str) -> list[dict]:
    """The rows of a results file (``--table-from``)."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def results_paths(runs_dir: str | None, out: str | None, name: str) -> tuple[str, str]:
    """The folder for a benchmark's run directories (made; by default ``runs/NAME-DATE``
    in the checkout) and its results file (by default ``results.jsonl`` in it)."""
    runs_dir = os.path.abspath(runs_dir or os.path.join(
        ROOT, "runs", f"{name}-" + time.strftime("%Y%m%d-%H%M%S")))
    os.makedirs(runs_dir, exist_ok=True)
    return runs_dir, out or os.path.join(runs_dir, "results.jsonl")
