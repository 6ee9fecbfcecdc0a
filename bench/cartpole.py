"""CartPole-v1 benchmark: rltpu against the peers in ../shared/peers, side by side, one run.

Prints a markdown table of:
  - time from process start to a mean return of 475 over the last 20 training episodes,
    median of 3 seeds: rltpu IMPALA (default settings), Stable-Baselines3 PPO, RLlib PPO;
  - env steps/s during training with 2 actors: rltpu IMPALA against RLlib IMPALA with
    2 env runners;
  - actor efficiency: an actor's steps/s inside training against the same env and policy
    stepped in a bare loop in one process;
  - peak memory (resident, driver and actors together) of the default run.

usage: python bench/cartpole.py [--peers-python /tmp/peers/bin/python] [--seeds 3] [--quick]
The peers need their own virtualenv (see ../shared/peers/README.md); without it they are
reported as not run.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEERS = os.path.join(os.path.dirname(ROOT), "shared", "peers")
THROUGHPUT_ARGS = ["--num-actors", "2", "--envs-per-actor", "64", "--unroll-length", "32",
                   "--batch-size", "128", "--target-return", "none", "--total-env-steps", "1500000"]


def rltpu_run(args: list[str], tmp: str) -> dict:
    run_dir = os.path.join(tmp, f"run-{time.time_ns()}")
    subprocess.run([sys.executable, "-m", "rltpu.cli", "train", "--quiet", "--run-dir", run_dir,
                    *args], check=True, cwd=ROOT, stdout=subprocess.DEVNULL,
                   env={**os.environ, "RAY_ADDRESS": ""})
    with open(os.path.join(run_dir, "summary.json")) as f:
        return json.load(f)


def peer_run(python: str, script: str, args: list[str], timeout: float) -> dict | None:
    try:
        out = subprocess.run([python, os.path.join(PEERS, script), *args], capture_output=True,
                             text=True, timeout=timeout, cwd=PEERS)
    except subprocess.TimeoutExpired:
        return {"solved_s": None, "train_sps": None, "note": "timed out"}
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if not lines:
        print(out.stderr[-2000:], file=sys.stderr)
        return None
    return json.loads(lines[-1])


def bare_loop_sps(num_envs: int, steps: int = 3000) -> float:
    """The same vector env and jitted IMPALA policy, stepped in a plain loop."""
    code = f"""
import os, time, json
from rltpu import devices; devices.pin_process_to_cpu()
import jax, numpy as np, agents, envs
agent = agents.get("impala"); env, spec = envs.make("CartPole-v1", {num_envs}, 0)
fns = agent.build(spec, agent.Config())
params = devices.to_actor_device(jax.jit(fns.init)(jax.random.key(0)).params)
def step(p, o, k):
    k, s = jax.random.split(k); return fns.actor_step(p, o, s), k
step = jax.jit(step); obs, key = env.first_observation, jax.random.key(1)
for i in range({steps} + 200):
    if i == 200: t = time.perf_counter()
    out, key = step(params, obs, key)
    obs, r, term, trunc, info = env.step(np.asarray(out.action))
print(json.dumps({{"sps": {steps} * {num_envs} / (time.perf_counter() - t)}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])["sps"]


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(x, digits=1):
    return "n/a" if x is None else f"{x:,.{digits}f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers-python", default="/tmp/peers/bin/python")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="rltpu only, no peers")
    opts = parser.parse_args()
    peers = not opts.quick and os.path.exists(opts.peers_python)
    if not opts.quick and not peers:
        print(f"no peer python at {opts.peers_python}: peers not run", file=sys.stderr)

    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        # Interleave rltpu and peer runs so drift in machine load hits both alike.
        for seed in range(opts.seeds):
            results.setdefault("rltpu", []).append(rltpu_run(["--seed", str(seed)], tmp))
            print(f"rltpu seed {seed}: {results['rltpu'][-1]['time_to_target_s']}", file=sys.stderr)
            if peers:
                results.setdefault("sb3", []).append(
                    peer_run(opts.peers_python, "sb3_cartpole.py", ["475", "300000"], 600))
                results.setdefault("rllib_ppo", []).append(
                    peer_run(opts.peers_python, "rllib_cartpole.py", ["ppo", "475", "300", "2"], 420))
                print(f"peers: {results['sb3'][-1]} {results['rllib_ppo'][-1]}", file=sys.stderr)
        results["rltpu_throughput"] = rltpu_run(THROUGHPUT_ARGS, tmp)
        if peers:
            results["rllib_impala"] = peer_run(opts.peers_python, "rllib_cartpole.py",
                                               ["impala", "475", "90", "2"], 300)
        results["bare_sps"] = bare_loop_sps(64)

    t_rltpu = median([r["time_to_target_s"] for r in results["rltpu"]])
    t_sb3 = median([r and r.get("solved_s") for r in results.get("sb3", [])])
    t_rllib = median([r and r.get("solved_s") for r in results.get("rllib_ppo", [])])
    sps = results["rltpu_throughput"]["env_sps"]
    rllib_impala_sps = (results.get("rllib_impala") or {}).get("train_sps")
    actor_sps = results["rltpu_throughput"]["actor_sps"]
    ratio = lambda a, b: None if a is None or not b else a / b

    print(f"\nMachine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}; CartPole-v1; target 475 (mean of last 20 episodes).\n")
    print("| measure | rltpu | peer | ratio | goal |")
    print("| --- | --- | --- | --- | --- |")
    print(f"| time to 475 from process start, median of {opts.seeds} (s) | {fmt(t_rltpu)} "
          f"| SB3 PPO {fmt(t_sb3)} | {fmt(ratio(t_rltpu, t_sb3), 2)}x | <= 0.75x |")
    print(f"| time to 475 from process start, median of {opts.seeds} (s) | {fmt(t_rltpu)} "
          f"| RLlib PPO {fmt(t_rllib)} | {fmt(ratio(t_rltpu, t_rllib), 2)}x | <= 0.25x |")
    print(f"| env steps/s in training, 2 actors | {fmt(sps, 0)} | RLlib IMPALA, 2 env runners "
          f"{fmt(rllib_impala_sps, 0)} | {fmt(ratio(sps, rllib_impala_sps), 1)}x | >= 10x |")
    print(f"| actor steps/s while acting (64 envs) | {fmt(actor_sps, 0)} | bare env+policy loop "
          f"{fmt(results['bare_sps'], 0)} | {fmt(ratio(actor_sps, results['bare_sps']) * 100, 0)}% "
          f"| >= 80% |")
    print(f"| peak memory of the default run, driver + actors (MB) | "
          f"{fmt(max(r['peak_rss_mb'] for r in results['rltpu']), 0)} | | | <= 3000 |")
    print(f"\nrltpu default runs: time to target {[fmt(r['time_to_target_s']) for r in results['rltpu']]}"
          f" s, env steps {[r['env_steps'] for r in results['rltpu']]}, start-up "
          f"{[fmt(r['startup_s']) for r in results['rltpu']]} s; learner samples/s in the "
          f"throughput run {fmt(results['rltpu_throughput']['learner_samples_per_s'], 0)}.")
    if peers:
        print(f"peers: SB3 {[r and r.get('solved_s') for r in results['sb3']]} s, RLlib PPO "
              f"{[r and r.get('solved_s') for r in results['rllib_ppo']]} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
