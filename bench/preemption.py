"""What a preemption costs: kill -9 a CartPole run (its whole process group, as a spot VM
vanishing would) at a random moment, resume it, and measure the work redone against the
checkpoint interval.

For each trial: train with ``--checkpoint-every-updates N``; once two checkpoints exist,
wait a random time (uniform over one checkpoint interval), kill -9; then
  - work redone = env steps and updates of the last metrics row before the kill minus
    those of the newest complete checkpoint (rows come every 0.25 s: a lower bound by at
    most one row), and the seconds between that checkpoint's commit and the kill;
  - the resumed leg's start-up: seconds from launching ``--resume`` to its first batch.

usage: python bench/preemption.py [--every-updates 200] [--trials 3] [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from rltpu import checkpoint  # noqa: E402


def committed_at(run_dir: str, step: int) -> float:
    """When orbax committed checkpoint ``step`` (its own record, in wall-clock seconds)."""
    with open(os.path.join(run_dir, "checkpoints", str(step), "_CHECKPOINT_METADATA")) as f:
        return json.load(f)["commit_timestamp_nsecs"] / 1e9


def rows(run_dir: str) -> list[dict]:
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip().endswith("}")]


def trial(base: str, every: int, seed: int, env: dict) -> dict:
    run_dir = os.path.join(base, f"run-{seed}")
    proc = subprocess.Popen(
        [sys.executable, "-m", "rltpu.cli", "train", "--run-dir", run_dir, "--seed", str(seed),
         "--checkpoint-every-updates", str(every), "--checkpoint-every-minutes", "none",
         "--target-return", "none", "--total-env-steps", "50000000", "--log-every-s", "0.25",
         "--quiet"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    try:
        while len(checkpoint.list_checkpoints(run_dir)[0]) < 2:
            assert proc.poll() is None, "training exited"
            time.sleep(0.1)
        steps = checkpoint.list_checkpoints(run_dir)[0]
        interval_s = committed_at(run_dir, steps[0]) - committed_at(run_dir, steps[1])
        time.sleep(random.Random(seed).uniform(0, interval_s))
        killed_at = time.time()
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    last = rows(run_dir)[-1]
    steps = checkpoint.list_checkpoints(run_dir)[0]
    with open(os.path.join(run_dir, "checkpoints", str(steps[0]), "counters", "metadata")) as f:
        counters = json.load(f)
    committed = committed_at(run_dir, steps[0])
    t0 = time.time()
    resumed = subprocess.run(
        [sys.executable, "-m", "rltpu.cli", "train", "--resume", run_dir, "--quiet",
         "--total-env-steps", str(counters["env_steps"] + 1)], env=env, capture_output=True,
        text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    with open(os.path.join(run_dir, "summary.json")) as f:
        summary = json.load(f)
    return {"interval_updates": every, "interval_s": interval_s,
            "updates_redone": last["learner_updates"] - steps[0],
            "env_steps_redone": last["env_steps"] - counters["env_steps"],
            "env_steps_per_interval": every * (last["env_steps"] / last["learner_updates"]),
            "s_redone": killed_at - committed, "resume_startup_s": summary["startup_s"],
            "resume_wall_s": time.time() - t0}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--every-updates", type=int, default=200)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    base = args.out or tempfile.mkdtemp(prefix="preemption-")
    ray_tmp = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    env = {**os.environ, "RAY_ADDRESS": "", "RAY_TMPDIR": ray_tmp,
           "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    results = [trial(base, args.every_updates, seed, env) for seed in range(args.trials)]
    print(f"load average {os.getloadavg()[0]:.1f}; {os.cpu_count()} cores")
    print("| interval (updates) | interval (s) | killed after the checkpoint (s) | updates redone "
          "| env steps redone | env steps per interval | resume start-up (s) |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['interval_updates']} | {r['interval_s']:.1f} | {r['s_redone']:.1f} | "
              f"{r['updates_redone']} | {r['env_steps_redone']:,} | "
              f"{r['env_steps_per_interval']:,.0f} | {r['resume_startup_s']:.1f} |")


if __name__ == "__main__":
    main()
