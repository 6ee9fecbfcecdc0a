"""Recurrent agents: rltpu against SB3-contrib's RecurrentPPO on CartPoleNoVel-v1, side by
side in one run, and the cost of the LSTM core on the learner (issue 16, item 7).

1. Time from process start to a mean return of 475 over the last 20 training episodes on
   CartPoleNoVel-v1 (CartPole without its velocities): rltpu PPO with ``--core lstm`` in
   Anakin mode on the same task as a JAX env (``gymnax:CartPoleNoVel-v1``: gymnax's
   CartPole-v1, the same two observations), in Ray mode (2 actors; the settings of
   ``tests/test_recurrent_learn.py``) and, with ``--impala``, IMPALA in Ray mode likewise,
   against SB3-contrib's RecurrentPPO with rl-zoo's settings
   (``bench/peers/sb3_recurrent_ppo_cartpolenovel.py``, in the peers' virtualenv). Runs
   alternate seed by seed, so that both meet the same load; the load average is printed
   beside every run. A run that never reached 475 counts as infinitely slow.
2. The learner alone (no actors), IMPALA on Atari frames (``--preset impala-atari``'s
   geometry: 84x84x4 frames, impala_resnet torso, unroll 20, batch 32): samples/s with the
   256-unit LSTM core and without it, fed one fixed host batch every update (copied to the
   devices each time, as in training), each in a fresh process, median of --repeats.

usage: python bench/recurrent.py [--seeds 1] [--impala] [--no-anakin] [--peers-python /tmp/peers/bin/python]
                                 [--learner-only | --no-learner] [--updates 5] [--repeats 3]
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from bench.common import rltpu_train  # noqa: E402
PEER = os.path.join(ROOT, "bench", "peers", "sb3_recurrent_ppo_cartpolenovel.py")
RAY_ENV = ["--env", "CartPoleNoVel-v1"]
# Ray mode as tests/test_recurrent_learn.py runs it (README's "Recurrent agents"); PPO at the
# peer's discount and GAE lambda (rl-zoo's 0.98 and 0.8), where its figures were measured.
RLTPU = {
    "ppo": [*RAY_ENV, "--agent", "ppo", "--core", "lstm", "--core-size", "64",
            "--discount", "0.98", "--gae-lambda", "0.8", "--total-env-steps", "1000000"],
    "impala": [*RAY_ENV, "--agent", "impala", "--core", "lstm", "--core-size", "64",
               "--total-env-steps", "1500000"],
    # Anakin: 64 envs x 32 steps per update, 4 epochs x 4 minibatches of whole sequences.
    "ppo-anakin": ["--mode", "anakin", "--env", "gymnax:CartPoleNoVel-v1", "--agent", "ppo",
                   "--core", "lstm", "--core-size", "64", "--batch-size", "64",
                   "--unroll-length", "32", "--num-epochs", "4", "--num-minibatches", "4",
                   "--discount", "0.98", "--gae-lambda", "0.8", "--total-env-steps", "3000000"],
}
RLTPU_TIMEOUT_S = 3600.0
PEER_MAX_STEPS = "300000"  # three times what rl-zoo's settings train for (100k)


def load() -> str:
    return f"{os.getloadavg()[0]:.1f}"


def rltpu_run(args: list[str], tmp: str) -> dict:
    """One rltpu run to 475 (``bench.common.rltpu_train``): its summary, whose
    ``process_s`` is the time from process start, as the peer measures it (the summary's
    own time_to_target_s counts from the run's start, after imports)."""
    return rltpu_train(["--target-return", "475", *args],
                       os.path.join(tmp, f"run-{time.time_ns()}"), RLTPU_TIMEOUT_S)


def peer_run(python: str, seed: int, timeout: float) -> dict:
    """The peer's JSON line; on the timeout it is sent SIGTERM and says how far it got."""
    process = subprocess.Popen([python, PEER, "475", PEER_MAX_STEPS, str(seed)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               cwd=os.path.dirname(PEER))
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.terminate()
        stdout, stderr = process.communicate()
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if not lines:
        print(stderr[-2000:], file=sys.stderr)
        return {"solved_s": None, "env_steps": None, "note": "failed"}
    return json.loads(lines[-1])


LEARNER_WORKER = """
import json, statistics, sys, time
import jax, numpy as np
from rltpu import agents, devices, envs
from rltpu.config import RunConfig
from rltpu.learner import Learner
from rltpu.types import EnvSpec
import gymnasium as gym
core, updates, repeats = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
agent = agents.get("impala")
# Pong's spec without an emulator: 84x84x4 uint8 frames, 6 actions (ALE's minimal set).
spec = EnvSpec("ALE/Pong-v5", gym.spaces.Box(0, 255, (84, 84, 4), np.uint8), gym.spaces.Discrete(6))
T, B = 20, 32
run = RunConfig(env="ALE/Pong-v5", unroll_length=T, batch_size=B, envs_per_actor=16)
config = agent.Config(torso="impala_resnet", clip_rewards=True, optimizer="rmsprop",
                      learning_rate=6e-4, discount=0.99, entropy_cost=0.01, max_grad_norm=40.0,
                      core=core, core_size=256)
fns = agent.build(spec, config, run)
learner = Learner(fns, spec, devices.make_mesh(1), 0, T, B)
rng = np.random.default_rng(0)
def fill(s):
    if s.dtype == np.bool_:
        return rng.random(s.shape) < 0.01
    if s.dtype == np.uint8:
        return rng.integers(0, 256, s.shape).astype(np.uint8)
    if np.issubdtype(s.dtype, np.integer):
        return rng.integers(0, 6, s.shape).astype(s.dtype)
    return (0.1 * rng.normal(size=s.shape)).astype(s.dtype)
batch = jax.tree.map(fill, learner.example)
batch = batch._replace(valid=~batch.valid, policy_version=np.zeros_like(batch.policy_version))
for _ in range(2):  # compile and warm up
    metrics = learner.update(learner.put(batch))
devices.wait(metrics)
timings = []
for _ in range(repeats):
    start = time.perf_counter()
    for _ in range(updates):
        metrics = learner.update(learner.put(batch))
    devices.wait((metrics, learner.state))
    timings.append(time.perf_counter() - start)
print(json.dumps({"samples_per_s": T * B * updates / statistics.median(timings),
                  "platform": jax.devices()[0].platform,
                  "device": jax.devices()[0].device_kind}), flush=True)
"""


def learner_sps(core: str, updates: int, repeats: int) -> dict:
    out = subprocess.run([sys.executable, "-c", LEARNER_WORKER, core, str(updates), str(repeats)],
                         capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": ROOT})
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "load": load()}


def fmt(x, digits=0):
    if x is None:
        return "n/a"
    return "never" if x == math.inf else f"{x:,.{digits}f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers-python", default="/tmp/peers/bin/python")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--impala", action="store_true", help="also rltpu IMPALA --core lstm")
    parser.add_argument("--no-anakin", action="store_true", help="leave out Anakin PPO")
    parser.add_argument("--learner-only", action="store_true")
    parser.add_argument("--no-learner", action="store_true")
    parser.add_argument("--peer-timeout", type=float, default=1200,
                        help="seconds a peer run may take")
    parser.add_argument("--updates", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    opts = parser.parse_args()
    print(f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
          f"{platform.node()}, {os.cpu_count()} CPUs, load average {load()} at start",
          flush=True)
    if not opts.learner_only:
        agents = ([] if opts.no_anakin else ["ppo-anakin"]) + ["ppo"] + (
            ["impala"] if opts.impala else [])
        rows = []
        with tempfile.TemporaryDirectory() as tmp:
            for seed in range(opts.seeds):
                for agent in agents:
                    before = load()
                    s = rltpu_run([*RLTPU[agent], "--seed", str(seed)], tmp)
                    solved = s["process_s"] if s["time_to_target_s"] is not None else math.inf
                    rows.append((f"rltpu {agent} --core lstm", seed, solved, s["env_steps"],
                                 s["final_return"], before, load()))
                    print(rows[-1], flush=True)
                if os.path.exists(opts.peers_python):
                    before = load()
                    p = peer_run(opts.peers_python, seed, opts.peer_timeout)
                    rows.append(("SB3-contrib RecurrentPPO (rl-zoo)", seed,
                                 math.inf if p["solved_s"] is None else p["solved_s"],
                                 p["env_steps"], None, before, load()))
                    print(rows[-1], p, flush=True)
        print("\n| run | seed | time to 475 (s, from process start) | env steps | "
              "load before / after |\n| --- | --- | --- | --- | --- |")
        for name, seed, solved, steps, _, before, after in rows:
            print(f"| {name} | {seed} | {fmt(solved)} | {fmt(steps)} | {before} / {after} |")
        medians = {}
        for name, _, solved, *_ in rows:
            medians.setdefault(name, []).append(solved)
        peer = medians.get("SB3-contrib RecurrentPPO (rl-zoo)")
        for name, times in medians.items():
            if peer and not name.startswith("SB3"):
                mine, theirs = statistics.median(times), statistics.median(peer)
                if theirs == math.inf:  # no ratio: the peer's time is only bounded below
                    print(f"{name}: median {fmt(mine)} s; the peer did not reach 475 within "
                          f"its {opts.peer_timeout:.0f} s (ratio < {mine / opts.peer_timeout:.2f}x)")
                else:
                    print(f"{name}: median {fmt(mine)} s = {mine / theirs:.2f}x the peer's "
                          f"{fmt(theirs)} s (goal <= 0.5x)")
    if not opts.no_learner:
        print("\n| IMPALA learner, Atari frames (T 20, B 32) | samples/s | device | load |\n"
              "| --- | --- | --- | --- |", flush=True)
        results = {}
        for core in ("none", "lstm"):
            results[core] = learner_sps(core, opts.updates, opts.repeats)
            r = results[core]
            name = "impala_resnet, no core" if core == "none" else "impala_resnet + LSTM 256"
            print(f"| {name} | {fmt(r['samples_per_s'], 1)} | {r['device']} | {r['load']} |",
                  flush=True)
        print(f"LSTM core: {results['lstm']['samples_per_s'] / results['none']['samples_per_s']:.2f}"
              "x the feed-forward learner's samples/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
