"""CartPole-v1 benchmark: rltpu's agents against the peers, side by side, in one run.

Peers: ../shared/peers (Stable-Baselines3 PPO, RLlib PPO and IMPALA) and bench/peers
(Stable-Baselines3 DQN). Prints markdown tables of:
  - time from process start to a mean return of 475 over the last 20 training episodes,
    median of --seeds runs: rltpu IMPALA and PPO (default settings) against SB3 PPO and
    RLlib PPO, with the compilation cache warm (filled by an earlier run) and cold;
  - env steps/s during training with 2 actors: rltpu IMPALA against RLlib IMPALA with 2 env
    runners, rltpu DQN against SB3 DQN;
  - actor efficiency: an actor's steps/s while acting (one actor, so it has a core) against
    the same env and policy stepped in a bare loop in one process;
  - peak memory (resident, driver and actors together) of the default IMPALA run;
  - per agent: env steps/s and learner samples/s.

usage: python bench/cartpole.py [--peers-python /tmp/peers/bin/python] [--seeds 3] [--quick]
The peers need their own virtualenv (../shared/peers/README.md); without it only rltpu runs.
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
SHARED_PEERS = os.path.join(os.path.dirname(ROOT), "shared", "peers")
OUR_PEERS = os.path.join(ROOT, "bench", "peers")
IMPALA_THROUGHPUT = ["--num-actors", "2", "--envs-per-actor", "64", "--unroll-length", "32",
                     "--batch-size", "128", "--target-return", "none", "--total-env-steps", "1500000"]
DQN_THROUGHPUT = ["--agent", "dqn", "--num-actors", "2", "--target-return", "none",
                  "--total-env-steps", "300000"]
# Actor efficiency: one actor, so that on a 2-core machine it has a core of its own (with
# two actors and the learner on two cores, no actor can keep up with a bare loop), and a
# learner taking one gradient step per batch: IMPALA's default second step on these
# 2,048-step batches takes the other core and some of the actor's (its steps/s fell about
# 15%, to 70-79% of the bare loop), which measures the learner, not the actor.
ONE_ACTOR = ["--num-actors", "1", "--envs-per-actor", "64", "--unroll-length", "32",
             "--batch-size", "64", "--num-epochs", "1", "--target-return", "none",
             "--total-env-steps", "1000000"]


def rltpu_run(args: list[str], tmp: str) -> dict:
    run_dir = os.path.join(tmp, f"run-{time.time_ns()}")
    subprocess.run([sys.executable, "-m", "rltpu.cli", "train", "--quiet", "--run-dir", run_dir,
                    *args], check=True, cwd=ROOT, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, env={**os.environ, "RAY_ADDRESS": ""})
    with open(os.path.join(run_dir, "summary.json")) as f:
        return json.load(f)


def peer_run(python: str, script: str, args: list[str], timeout: float) -> dict | None:
    try:
        out = subprocess.run([python, script, *args], capture_output=True, text=True,
                             timeout=timeout, cwd=os.path.dirname(script))
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
import time, json
from rltpu import devices; devices.pin_process_to_cpu()
import jax, numpy as np
from rltpu import agents, envs
from rltpu.config import RunConfig
agent = agents.get("impala"); env, spec = envs.make("CartPole-v1", {num_envs}, 0)
fns = agent.build(spec, agent.Config(), RunConfig())
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


def ratio(a, b):
    return None if a is None or not b else a / b


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers-python", default="/tmp/peers/bin/python")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="rltpu only, no peers")
    parser.add_argument("--no-rllib", action="store_true",
                        help="leave out RLlib (its PPO runs take minutes each)")
    opts = parser.parse_args()
    peers = not opts.quick and os.path.exists(opts.peers_python)
    if not opts.quick and not peers:
        print(f"no peer python at {opts.peers_python}: peers not run", file=sys.stderr)
    py = opts.peers_python

    r: dict = {"impala": [], "ppo": [], "impala_cold": [], "ppo_cold": [], "sb3_ppo": [],
               "rllib_ppo": []}
    with tempfile.TemporaryDirectory() as tmp:
        # Warm runs load the compiled programs that an earlier run left in the compilation
        # cache (what a user sees from the second run on; one untimed run fills it); cold
        # runs compile everything (a first run, or --compilation-cache none).
        warm = ["--compilation-cache", os.path.join(tmp, "xla")]
        for agent in ("impala", "ppo"):
            rltpu_run(["--agent", agent, "--seed", "99", *warm], tmp)
        # Interleave rltpu and peer runs so drift in machine load hits both alike.
        for seed in range(opts.seeds):
            for agent in ("impala", "ppo"):
                r[agent].append(rltpu_run(["--agent", agent, "--seed", str(seed), *warm], tmp))
                r[f"{agent}_cold"].append(rltpu_run(["--agent", agent, "--seed", str(seed),
                                                     "--compilation-cache", "none"], tmp))
                print(f"rltpu {agent} seed {seed}: {r[agent][-1]['time_to_target_s']} warm, "
                      f"{r[agent + '_cold'][-1]['time_to_target_s']} cold", file=sys.stderr)
            if peers:
                r["sb3_ppo"].append(peer_run(py, os.path.join(SHARED_PEERS, "sb3_cartpole.py"),
                                             ["475", "300000"], 600))
                if not opts.no_rllib:
                    r["rllib_ppo"].append(peer_run(py, os.path.join(SHARED_PEERS, "rllib_cartpole.py"),
                                                   ["ppo", "475", "300", "2"], 420))
                print(f"peers: {r['sb3_ppo'][-1]} {r['rllib_ppo'][-1:]}", file=sys.stderr)
        r["impala_throughput"] = rltpu_run(IMPALA_THROUGHPUT, tmp)
        r["dqn_throughput"] = rltpu_run(DQN_THROUGHPUT, tmp)
        r["one_actor"] = rltpu_run(ONE_ACTOR, tmp)
        if peers and not opts.no_rllib:
            r["rllib_impala"] = peer_run(py, os.path.join(SHARED_PEERS, "rllib_cartpole.py"),
                                         ["impala", "475", "90", "2"], 300)
        if peers:
            r["sb3_dqn"] = peer_run(py, os.path.join(OUR_PEERS, "sb3_dqn_cartpole.py"),
                                    ["475", "50000"], 600)
        r["bare_sps"] = bare_loop_sps(64)

    t_impala = median([x["time_to_target_s"] for x in r["impala"]])
    t_ppo = median([x["time_to_target_s"] for x in r["ppo"]])
    t_sb3 = median([x and x.get("solved_s") for x in r["sb3_ppo"]])
    t_rllib = median([x and x.get("solved_s") for x in r["rllib_ppo"]])
    impala_sps = r["impala_throughput"]["env_sps"]
    dqn_sps = r["dqn_throughput"]["env_sps"]
    rllib_impala_sps = (r.get("rllib_impala") or {}).get("train_sps")
    sb3_dqn_sps = (r.get("sb3_dqn") or {}).get("train_sps")
    actor_sps = r["one_actor"]["actor_sps"]

    print(f"\nMachine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}; CartPole-v1; target 475 (mean of last 20 episodes).\n")
    print("| measure | rltpu | peer | ratio | goal |")
    print("| --- | --- | --- | --- | --- |")
    t_impala_cold = median([x["time_to_target_s"] for x in r["impala_cold"]])
    t_ppo_cold = median([x["time_to_target_s"] for x in r["ppo_cold"]])
    for name, t in (("IMPALA", t_impala), ("PPO", t_ppo), ("IMPALA, cold compile", t_impala_cold),
                    ("PPO, cold compile", t_ppo_cold)):
        print(f"| {name}: time to 475 from process start, median of {opts.seeds} (s) | {fmt(t)} "
              f"| SB3 PPO {fmt(t_sb3)} | {fmt(ratio(t, t_sb3), 2)}x | <= 0.75x |")
        print(f"| {name}: time to 475 from process start, median of {opts.seeds} (s) | {fmt(t)} "
              f"| RLlib PPO {fmt(t_rllib)} | {fmt(ratio(t, t_rllib), 2)}x | <= 0.25x |")
    print(f"| IMPALA env steps/s in training, 2 actors | {fmt(impala_sps, 0)} | RLlib IMPALA, 2 env "
          f"runners {fmt(rllib_impala_sps, 0)} | {fmt(ratio(impala_sps, rllib_impala_sps), 1)}x | >= 10x |")
    print(f"| DQN env steps/s in training, 2 actors | {fmt(dqn_sps, 0)} | SB3 DQN {fmt(sb3_dqn_sps, 0)} "
          f"| {fmt(ratio(dqn_sps, sb3_dqn_sps), 1)}x | >= 5x |")
    eff = ratio(actor_sps, r["bare_sps"])
    print(f"| one actor's steps/s while acting (64 envs) | {fmt(actor_sps, 0)} | bare env+policy loop "
          f"{fmt(r['bare_sps'], 0)} | {fmt(eff and eff * 100, 0)}% | >= 80% |")
    print(f"| peak memory of the default run, driver + actors (MB) | "
          f"{fmt(max(x['peak_rss_mb'] for x in r['impala']), 0)} | | | <= 3000 |")

    print("\n| agent (run) | env steps/s | learner samples/s | mean policy lag |")
    print("| --- | --- | --- | --- |")
    rows = [("IMPALA (default)", r["impala"]), ("PPO (default)", r["ppo"]),
            ("IMPALA (2 actors x 64 envs, batch 128)", [r["impala_throughput"]]),
            ("DQN (2 actors, replay ratio 4)", [r["dqn_throughput"]])]
    for name, runs in rows:
        print(f"| {name} | {fmt(median([x['env_sps'] for x in runs]), 0)} | "
              f"{fmt(median([x['learner_samples_per_s'] for x in runs]), 0)} | "
              f"{fmt(median([x['mean_policy_lag'] for x in runs]), 1)} |")
    print("\nper seed, time to 475 (s): " + "; ".join(
        f"{name} {[fmt(x['time_to_target_s']) for x in r[name]]}"
        for name in ("impala", "ppo", "impala_cold", "ppo_cold")))
    for kind, runs in (("warm", r["impala"] + r["ppo"]), ("cold", r["impala_cold"] + r["ppo_cold"])):
        phases = [x["startup_phases_s"] for x in runs]
        print(f"start-up ({kind}), seconds from process start to the end of each phase (median "
              "of the IMPALA and PPO runs): " + ", ".join(
                  f"{name} {fmt(median([p[name] for p in phases]))}" for name in phases[0]))
    if peers:
        print(f"peers, time to 475 (s): SB3 PPO {[x and x.get('solved_s') for x in r['sb3_ppo']]}, "
              f"RLlib PPO {[x and x.get('solved_s') for x in r['rllib_ppo']]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
