"""Two versions of rltpu side by side: time to 475 on CartPole-v1 from process start.

Runs the default agent (or --agent) of this checkout and of another one (a git worktree of
an earlier commit, say) alternately, seed by seed, so that both meet the same machine
load; each keeps a compilation cache of its own, warmed by one run first. Prints a markdown
table with the medians, their ratio and the load average before and after.

usage: python bench/versions.py OTHER_CHECKOUT [--seeds 5] [--agent impala]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def time_to_target(checkout: str, agent: str, seed: int, cache: str, tmp: str) -> float:
    """Seconds from process start to a mean return of 475 (infinity if never reached)."""
    run_dir = os.path.join(tmp, f"run-{time.time_ns()}")
    env = {**os.environ, "PYTHONPATH": checkout, "RAY_ADDRESS": ""}
    subprocess.run([sys.executable, "-m", "rltpu.cli", "train", "--quiet", "--agent", agent,
                    "--seed", str(seed), "--run-dir", run_dir, "--compilation-cache", cache],
                   check=True, cwd=checkout, env=env, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=900)
    with open(os.path.join(run_dir, "summary.json")) as f:
        seconds = json.load(f)["time_to_target_s"]
    return float("inf") if seconds is None else seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("other", help="the other checkout")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--agent", default="impala")
    opts = parser.parse_args()
    checkouts = {"this": ROOT, "other": os.path.abspath(opts.other)}
    commits = {name: subprocess.run(["git", "-C", path, "rev-parse", "--short", "HEAD"],
                                    capture_output=True, text=True).stdout.strip()
               for name, path in checkouts.items()}
    load_before = os.getloadavg()
    times: dict[str, list[float]] = {name: [] for name in checkouts}
    with tempfile.TemporaryDirectory() as tmp:
        caches = {name: os.path.join(tmp, f"cache-{name}") for name in checkouts}
        for name, path in checkouts.items():  # warm each compilation cache
            time_to_target(path, opts.agent, 1000, caches[name], tmp)
        for seed in range(opts.seeds):
            order = list(checkouts) if seed % 2 == 0 else list(reversed(checkouts))
            for name in order:
                times[name].append(time_to_target(checkouts[name], opts.agent, seed,
                                                  caches[name], tmp))
                print(f"seed {seed} {name}: {times[name][-1]:.1f} s", file=sys.stderr, flush=True)
    load_after = os.getloadavg()
    median = {name: statistics.median(t) for name, t in times.items()}
    print(f"\n{opts.agent} on CartPole-v1, time to 475 from process start (warm compilation "
          f"cache), {opts.seeds} seeds alternating; load average {load_before[0]:.1f} before, "
          f"{load_after[0]:.1f} after\n")
    print("| checkout | commit | per seed (s) | median (s) |")
    print("| --- | --- | --- | --- |")
    for name in checkouts:
        per_seed = " / ".join(f"{t:.1f}" for t in times[name])
        print(f"| {name} | {commits[name]} | {per_seed} | {median[name]:.1f} |")
    print(f"\nratio this/other: {median['this'] / median['other']:.2f}x")


if __name__ == "__main__":
    main()
