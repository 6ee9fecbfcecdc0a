"""CartPole-v1 benchmark: rltpu's agents against the peers, side by side, in one run.

Peers: ../shared/peers (Stable-Baselines3 PPO, RLlib PPO and IMPALA) and bench/peers
(Stable-Baselines3 DQN). Prints markdown tables of:
  - time from process start to a mean return of 475 over the last 20 training episodes,
    median of --seeds runs: rltpu IMPALA and PPO (default settings) against SB3 PPO and
    RLlib PPO, with the compilation cache warm (filled by an earlier run) and cold. A run
    that never reached 475 is a failure: it counts as infinitely slow in the median and the
    table says how many there were;
  - env steps/s during training with 2 actors: rltpu IMPALA against RLlib IMPALA with 2 env
    runners, rltpu DQN against SB3 DQN; each as rltpu runs by default and with the peer's
    set-up (RLlib's 8 envs per runner; SB3's 32 sampled transitions per env step on a
    256x256 net), the differences that remain stated beside each ratio;
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
import math
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
# The same, set up as RLlib's IMPALA peer steps its envs: 8 per env runner, and batches of
# 512 env steps (RLlib's train_batch_size default is 500).
IMPALA_AS_RLLIB = ["--num-actors", "2", "--envs-per-actor", "8", "--unroll-length", "32",
                   "--batch-size", "16", "--target-return", "none", "--total-env-steps", "500000"]
DQN_THROUGHPUT = ["--agent", "dqn", "--num-actors", "2", "--target-return", "none",
                  "--total-env-steps", "300000"]
# DQN doing SB3's learner work per env step: SB3 takes 128 gradient steps of 64 transitions
# every 256 env steps (32 sampled per env step) on a 256x256 net; rltpu's default samples
# 4 per env step (--samples-per-insert 4, 128 a batch) on 128x128.
DQN_AS_SB3 = ["--agent", "dqn", "--num-actors", "2", "--target-return", "none",
              "--samples-per-insert", "32", "--sample-size", "64", "--hidden-sizes", "256", "256",
              "--total-env-steps", "50000"]
# RLlib's IMPALA peer runs this long and does not stop once it is solved (target inf), as
# rltpu's throughput runs do not (--target-return none): the same kind of run on both sides.
RLLIB_IMPALA_S = "90"
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


def peer_run(python: str, script: str, args: list[str], timeout: float) -> dict:
    """The peer's JSON line; a peer that timed out or failed never reached the target."""
    try:
        out = subprocess.run([python, script, *args], capture_output=True, text=True,
                             timeout=timeout, cwd=os.path.dirname(script))
    except subprocess.TimeoutExpired:
        return {"solved_s": None, "train_sps": None, "note": "timed out"}
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if not lines:
        print(out.stderr[-2000:], file=sys.stderr)
        return {"solved_s": None, "train_sps": None, "note": "failed"}
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
    """Of measured values (throughputs, lags): None is a measure a run did not report."""
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def times_to_target(values) -> list[float]:
    """Times to the target, a run that never reached it (None) as infinitely slow."""
    return [math.inf if v is None else v for v in values]


def median_time(values):
    """The median time to the target, failures counted as infinity (never dropped: a
    "median of 3" with one failure is the slower of the other two, or infinity with two)."""
    return statistics.median(times_to_target(values)) if values else None


def failures(values) -> str:
    """How many of the runs never reached the target, for the table ("" if none did not)."""
    failed = sum(v is None for v in values)
    return f" ({failed} of {len(values)} never reached 475)" if failed else ""


def fmt(x, digits=1):
    if x is None:
        return "n/a"
    return "never" if x == math.inf else f"{x:,.{digits}f}"


def ratio(a, b):
    if a is None or not b or (a == math.inf and b == math.inf):
        return None
    return a / b


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
        r["impala_as_rllib"] = rltpu_run(IMPALA_AS_RLLIB, tmp)
        r["dqn_throughput"] = rltpu_run(DQN_THROUGHPUT, tmp)
        r["dqn_as_sb3"] = rltpu_run(DQN_AS_SB3, tmp)
        r["one_actor"] = rltpu_run(ONE_ACTOR, tmp)
        if peers and not opts.no_rllib:
            r["rllib_impala"] = peer_run(py, os.path.join(SHARED_PEERS, "rllib_cartpole.py"),
                                         ["impala", "inf", RLLIB_IMPALA_S, "2"], 300)
        if peers:
            # (target inf: 50,000 steps, not stopped once solved, as rltpu's runs are not)
            r["sb3_dqn"] = peer_run(py, os.path.join(OUR_PEERS, "sb3_dqn_cartpole.py"),
                                    ["inf", "50000"], 600)
        r["bare_sps"] = bare_loop_sps(64)

    times = {name: [x["time_to_target_s"] for x in r[name]]
             for name in ("impala", "ppo", "impala_cold", "ppo_cold")}
    times.update({name: [x.get("solved_s") for x in r[name]] for name in ("sb3_ppo", "rllib_ppo")})
    t_sb3, t_rllib = median_time(times["sb3_ppo"]), median_time(times["rllib_ppo"])
    impala_sps = r["impala_throughput"]["env_sps"]
    impala_8_sps = r["impala_as_rllib"]["env_sps"]
    dqn_sps = r["dqn_throughput"]["env_sps"]
    dqn_32_sps = r["dqn_as_sb3"]["env_sps"]
    rllib_impala_sps = (r.get("rllib_impala") or {}).get("train_sps")
    sb3_dqn_sps = (r.get("sb3_dqn") or {}).get("train_sps")
    actor_sps = r["one_actor"]["actor_sps"]

    print(f"\nMachine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}; CartPole-v1; target 475 (mean of last 20 episodes).\n")
    print("| measure | rltpu | peer | ratio | goal |")
    print("| --- | --- | --- | --- | --- |")
    for name, key in (("IMPALA", "impala"), ("PPO", "ppo"), ("IMPALA, cold compile", "impala_cold"),
                      ("PPO, cold compile", "ppo_cold")):
        t = median_time(times[key])
        print(f"| {name}: time to 475 from process start, median of {opts.seeds} (s) | {fmt(t)}"
              f"{failures(times[key])} | SB3 PPO {fmt(t_sb3)}{failures(times['sb3_ppo'])} | "
              f"{fmt(ratio(t, t_sb3), 2)}x | <= 0.75x |")
        print(f"| {name}: time to 475 from process start, median of {opts.seeds} (s) | {fmt(t)}"
              f"{failures(times[key])} | RLlib PPO {fmt(t_rllib)}{failures(times['rllib_ppo'])} | "
              f"{fmt(ratio(t, t_rllib), 2)}x | <= 0.25x |")
    rllib_note = (f"RLlib: 2 env runners x 8 envs, {RLLIB_IMPALA_S} s of training, not stopped "
                  "once solved")
    print(f"| IMPALA env steps/s in training, 2 actors x 64 envs, 1.5M steps, batches of 4,096 "
          f"steps | {fmt(impala_sps, 0)} | RLlib IMPALA {fmt(rllib_impala_sps, 0)} | "
          f"{fmt(ratio(impala_sps, rllib_impala_sps), 1)}x ({rllib_note}; 8x fewer envs per "
          f"runner than rltpu here) | >= 10x |")
    print(f"| IMPALA env steps/s in training, 2 actors x 8 envs (as RLlib), 500k steps, batches "
          f"of 512 steps | {fmt(impala_8_sps, 0)} | RLlib IMPALA {fmt(rllib_impala_sps, 0)} | "
          f"{fmt(ratio(impala_8_sps, rllib_impala_sps), 1)}x ({rllib_note}) | |")
    sb3_note = ("SB3: 1 env, 256x256 net, 32 sampled transitions per env step (128 x 64 / 256), "
                "50k steps")
    print(f"| DQN env steps/s in training, 2 actors x 16 envs, 128x128 net, 4 sampled per env "
          f"step | {fmt(dqn_sps, 0)} | SB3 DQN {fmt(sb3_dqn_sps, 0)} | "
          f"{fmt(ratio(dqn_sps, sb3_dqn_sps), 1)}x ({sb3_note}; 8x the learner work of rltpu's "
          f"run) | >= 5x |")
    print(f"| DQN env steps/s in training, 2 actors x 16 envs, 256x256 net, 32 sampled per env "
          f"step (as SB3) | {fmt(dqn_32_sps, 0)} | SB3 DQN {fmt(sb3_dqn_sps, 0)} | "
          f"{fmt(ratio(dqn_32_sps, sb3_dqn_sps), 1)}x ({sb3_note}; rltpu batches of 64 too, 50k "
          f"steps; neither run stops once solved) | |")
    eff = ratio(actor_sps, r["bare_sps"])
    print(f"| one actor's steps/s while acting (64 envs) | {fmt(actor_sps, 0)} | bare env+policy loop "
          f"{fmt(r['bare_sps'], 0)} | {fmt(eff and eff * 100, 0)}% | >= 80% |")
    print(f"| peak memory of the default run, driver + actors (MB) | "
          f"{fmt(max(x['peak_rss_mb'] for x in r['impala']), 0)} | | | <= 3000 |")

    print("\n| agent (run) | env steps/s | learner samples/s | mean policy lag |")
    print("| --- | --- | --- | --- |")
    rows = [("IMPALA (default)", r["impala"]), ("PPO (default)", r["ppo"]),
            ("IMPALA (2 actors x 64 envs, batch 128)", [r["impala_throughput"]]),
            ("IMPALA (2 actors x 8 envs, batch 16)", [r["impala_as_rllib"]]),
            ("DQN (2 actors, replay ratio 4)", [r["dqn_throughput"]]),
            ("DQN (2 actors, replay ratio 32, 256x256)", [r["dqn_as_sb3"]])]
    for name, runs in rows:
        print(f"| {name} | {fmt(median([x['env_sps'] for x in runs]), 0)} | "
              f"{fmt(median([x['learner_samples_per_s'] for x in runs]), 0)} | "
              f"{fmt(median([x['mean_policy_lag'] for x in runs]), 1)} |")
    print("\nper seed, time to 475 (s; never: not reached within the run's budget): " + "; ".join(
        f"{name} {[fmt(t) for t in times_to_target(times[name])]}"
        for name in ("impala", "ppo", "impala_cold", "ppo_cold")))
    for kind, runs in (("warm", r["impala"] + r["ppo"]), ("cold", r["impala_cold"] + r["ppo_cold"])):
        phases = [x["startup_phases_s"] for x in runs]
        print(f"start-up ({kind}), seconds from process start to the end of each phase (median "
              "of the IMPALA and PPO runs): " + ", ".join(
                  f"{name} {fmt(median([p[name] for p in phases]))}" for name in phases[0]))
    if peers:
        print("peers, time to 475 (s): " + "; ".join(
            f"{name} {[fmt(t) + (' (' + x['note'] + ')' if 'note' in x else '') for t, x in zip(times_to_target(times[name]), r[name])]}"
            for name in ("sb3_ppo", "rllib_ppo")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
