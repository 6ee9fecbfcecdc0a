"""What the research benchmarks (bench/minatar.py, bench/mujoco.py) share: a flag parser
whose errors are one line, rltpu runs as subprocesses, and markdown tables."""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
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


def rltpu_train(args: list[str], run_dir: str, timeout_s: float) -> dict:
    """``rltpu train`` (this checkout's code) in a process of its own; its summary.json, with
    ``process_s`` (from process start to exit) added.

    Raises:
      RuntimeError: the run failed or ran past ``timeout_s``; the message holds its stderr's tail.
    """
    start = time.perf_counter()
    env = {**os.environ, "RAY_ADDRESS": "", "PYTHONPATH": ROOT}
    try:
        result = subprocess.run([sys.executable, "-m", "rltpu.cli", "train", "--quiet",
                                 "--run-dir", run_dir, *args], cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                env=env, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"rltpu train {' '.join(args)} ran past {timeout_s:.0f} s") from None
    if result.returncode != 0:
        raise RuntimeError(f"rltpu train {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    with open(os.path.join(run_dir, "summary.json")) as f:
        summary = json.load(f)
    summary["process_s"] = time.perf_counter() - start
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
