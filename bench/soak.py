"""Soak: a long CartPole run with a rollout actor SIGKILLed every minute.

Reports, per window of the run: env steps, env steps/s, actor restarts, dropped unrolls, and
the resident memory of the driver (the learner), of the rollout actors, and of every
process of the run together (Ray's own included). Memory must level off, not grow with
time: the last window is compared with the first one after warm-up.

usage: python bench/soak.py [--minutes 30] [--kill-every-s 60] [--agent impala] [--window-s 300]
The run stops with SIGTERM (rltpu's graceful stop: final checkpoint, summary.json).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import psutil

from rltpu.faults import rollout_actor_processes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def rss_mb(procs) -> float:
    total = 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except psutil.Error:
            pass  # ended meanwhile
    return total / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--kill-every-s", type=float, default=60.0)
    parser.add_argument("--window-s", type=float, default=300.0, help="rows of the table")
    parser.add_argument("--agent", default="impala")
    parser.add_argument("--num-actors", type=int, default=2)
    args = parser.parse_args()

    run_dir = os.path.join(tempfile.mkdtemp(prefix="rltpu-soak-"), "run")
    driver_proc = subprocess.Popen(
        [sys.executable, "-m", "rltpu.cli", "train", "--quiet", "--agent", args.agent,
         "--num-actors", str(args.num_actors), "--target-return", "none",
         "--total-env-steps", str(10**12), "--max-actor-restarts", "100000",
         "--log-every-s", "10", "--run-dir", run_dir],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "RAY_ADDRESS": ""})
    driver = psutil.Process(driver_proc.pid)
    t0 = time.time()
    samples, kills = [], 0
    next_kill = t0 + args.kill_every_s
    while time.time() - t0 < args.minutes * 60 and driver_proc.poll() is None:
        time.sleep(5.0)
        now = time.time()
        actors = rollout_actor_processes(driver.pid)
        everything = [driver, *driver.children(recursive=True)]
        samples.append((now - t0, rss_mb([driver]), rss_mb(actors), rss_mb(everything)))
        ready = [a for a in actors if now - a.create_time() > 10]  # up and acting
        if now >= next_kill and ready:
            try:
                random.choice(ready).send_signal(signal.SIGKILL)
                kills += 1
            except psutil.Error:
                pass
            next_kill = now + args.kill_every_s
    if driver_proc.poll() is None:
        driver_proc.send_signal(signal.SIGTERM)
    _, err = driver_proc.communicate(timeout=300)
    if driver_proc.returncode != 0:
        sys.exit(f"the run failed (exit {driver_proc.returncode}):\n{err[-3000:]}")
    with open(os.path.join(run_dir, "summary.json")) as f:
        summary = json.load(f)
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]

    print(f"# Soak: {args.agent} on CartPole-v1, {args.num_actors} actors, one SIGKILLed every "
          f"{args.kill_every_s:.0f} s, {args.minutes:g} min ({os.cpu_count()} CPUs)\n")
    print("| minutes | env steps | env steps/s | actor restarts | dropped unrolls | "
          "driver RSS MB | actors RSS MB | all processes MB |")
    print("|---|---|---|---|---|---|---|---|")
    window_rows = []
    edges = [w * args.window_s for w in range(1, int(args.minutes * 60 // args.window_s) + 1)]
    if not edges or edges[-1] < args.minutes * 60 - 1:
        edges.append(args.minutes * 60)
    lo = 0.0
    for hi in edges:
        in_window = [s for s in samples if lo <= s[0] < hi]
        # metrics rows count from the driver's start, a moment after this script's
        metrics_rows = [r for r in rows if r["time_s"] < hi] or rows[:1]
        last = metrics_rows[-1]
        window_metrics = [r for r in metrics_rows if r["time_s"] >= lo]
        sps = statistics.mean(r["env_sps"] for r in window_metrics) if window_metrics else 0.0
        if in_window:
            med = [statistics.median(s[i] for s in in_window) for i in (1, 2, 3)]
            window_rows.append(med)
            print(f"| {lo / 60:g}-{hi / 60:g} | {last['env_steps']:,} | {sps:,.0f} | "
                  f"{last['actor_restarts']} | {last['dropped_unrolls']} | {med[0]:.0f} | "
                  f"{med[1]:.0f} | {med[2]:.0f} |")
        lo = hi
    print(f"\nkills sent: {kills}; summary: {summary['env_steps']:,} env steps, "
          f"{summary['actor_restarts']} actor restarts, {summary['dropped_unrolls']} dropped "
          f"unrolls, {summary['learner_updates']:,} updates, stopped by "
          f"{summary['stopped_by']}, peak RSS {summary['peak_rss_mb']:.0f} MB")
    if len(window_rows) >= 3:
        first, final = window_rows[1], window_rows[-1]  # the first window is warm-up
        print("memory, last window against the second (median RSS): " + ", ".join(
            f"{name} {b / a:.2f}x" for name, a, b in
            zip(("driver", "actors", "all"), first, final)))


if __name__ == "__main__":
    main()
