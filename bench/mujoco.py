"""MuJoCo: rltpu's PPO (Ray mode, --preset ppo-mujoco) against Stable-Baselines3's PPO at
rl-zoo's settings, side by side in one run.

Per env and seed, rltpu (``rltpu train --preset ppo-mujoco``: CleanRL's
ppo_continuous_action settings, observation normalisation) and SB3
(bench/peers/sb3_ppo_mujoco.py in the peers' virtualenv: rl-zoo's tuned hyperparameters,
VecNormalize) train for --total-env-steps each; who goes first alternates run by run, so
both meet the same load. Each run keeps a directory under --runs-dir whose metrics.jsonl
holds return against env steps and wall time (``rltpu plot`` draws rltpu's and SB3's
alike; seeds of one env are shaded as a group). Prints a markdown table per env: the median
over seeds of the final training return (mean of the last 20 episodes) each, against
CleanRL's published mean at 1M steps (issue 17's goal: rltpu's median at least that), the
median wall time to the last step each and its ratio (goal: rltpu <= 0.5x SB3's), env
steps/s, and the load average around the runs. Every result is also a JSON line in --out.

With ``--num-actors N`` rltpu's rollout is split between N actors of one env each, 2048 / N
steps apiece: the same 2048-sample update, collected N times faster where cores allow (the
actors share their observation statistics a second or so late, each scales rewards by its
own, and GAE bootstraps at the end of each actor's piece).

usage: python bench/mujoco.py [--envs Hopper-v5,HalfCheetah-v5,Walker2d-v5] [--seeds 3] [--first-seed 0]
           [--total-env-steps 1000000] [--num-actors 1] [--runs-dir DIR] [--out FILE]
           [--peers-python /tmp/peers/bin/python]
       python bench/mujoco.py --table-from FILE   (the table of an earlier run's --out)
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.common import (ROOT, Parser, append_jsonl, csv_choices, fmt, load1,  # noqa: E402
                          read_jsonl, results_paths,
                          machine_line, markdown_table, positive_int, rltpu_train)

ENVS = ("Hopper-v5", "HalfCheetah-v5", "Walker2d-v5")
# CleanRL's ppo_continuous_action on the v4 envs at 1M steps, mean training return over
# seeds (the anchors; CleanRL's benchmark docs).
PUBLISHED = {"Hopper-v5": 2382.9, "HalfCheetah-v5": 1442.6, "Walker2d-v5": 2288.0}
ROLLOUT = 2048  # ppo-mujoco's samples an update (1 env x 2048 steps, CleanRL's)
SB3_RUNNER = os.path.join(ROOT, "bench", "peers", "sb3_ppo_mujoco.py")
PEERS_PYTHON = "/tmp/peers/bin/python"


def parse(argv: list[str]):
    parser = Parser(prog="bench/mujoco.py", description=__doc__.split("\n")[0])
    parser.add_argument("--envs", default=",".join(ENVS), help=f"comma-separated, of {', '.join(ENVS)}")
    parser.add_argument("--seeds", type=positive_int, default=3, help="seeds 0..N-1 per env")
    parser.add_argument("--first-seed", type=int, default=0,
                        help="start the seeds here (K..K+N-1): more seeds for an earlier --out")
    parser.add_argument("--total-env-steps", type=positive_int, default=1_000_000)
    parser.add_argument("--num-actors", type=positive_int, default=1,
                        help=f"rltpu's rollout actors, one env each, {ROLLOUT} / N steps apiece")
    parser.add_argument("--skip", choices=("none", "rltpu", "sb3"), default="none",
                        help="leave one side out (its cells read '-')")
    parser.add_argument("--runs-dir", default=None,
                        help="run directories go here (default: runs/mujoco-DATE)")
    parser.add_argument("--out", default=None, help="JSON lines of results (default: RUNS_DIR/results.jsonl)")
    parser.add_argument("--peers-python", default=PEERS_PYTHON,
                        help="python of a virtualenv with torch, stable-baselines3, gymnasium[mujoco]")
    parser.add_argument("--timeout-s", type=positive_int, default=7200, help="per training run")
    parser.add_argument("--table-from", metavar="FILE", default=None,
                        help="print the table of an earlier run's results and exit")
    args = parser.parse_args(argv)
    args.envs = csv_choices(parser, "--envs", args.envs, ENVS)
    if args.first_seed < 0:
        parser.error(f"--first-seed {args.first_seed}: seeds are non-negative integers")
    if ROLLOUT % args.num_actors:
        parser.error(f"--num-actors {args.num_actors}: must divide ppo-mujoco's {ROLLOUT}-step "
                     "rollout (1, 2, 4, 8, ...)")
    if args.table_from is not None and not os.path.isfile(args.table_from):
        parser.error(f"--table-from {args.table_from}: no such file")
    if (args.table_from is None and args.skip != "sb3"
            and not os.access(args.peers_python, os.X_OK)):
        parser.error(f"--peers-python {args.peers_python}: not an executable (a virtualenv "
                     "with torch, stable-baselines3 and gymnasium[mujoco]; or --skip sb3)")
    return args


def rltpu_flags(num_actors: int) -> list[str]:
    """The flags that split ppo-mujoco's rollout between ``num_actors`` actors of one env."""
    if num_actors == 1:
        return []
    return ["--num-actors", str(num_actors), "--unroll-length", str(ROLLOUT // num_actors),
            "--batch-size", str(num_actors)]


def run_rltpu(env: str, seed: int, total: int, runs_dir: str, timeout_s: float,
              num_actors: int = 1) -> dict:
    suffix = "" if num_actors == 1 else f"-a{num_actors}"
    run_dir = os.path.join(runs_dir, f"rltpu-{env}-s{seed}{suffix}")
    summary = rltpu_train(["--preset", "ppo-mujoco", "--env", env, "--seed", str(seed),
                           "--total-env-steps", str(total), *rltpu_flags(num_actors)],
                          run_dir, timeout_s)
    return {"sps": summary["env_sps"], "final_return": summary["final_return"],
            "env_steps": summary["env_steps"], "wall_s": summary["process_s"],
            "run_dir": run_dir, "num_actors": num_actors}


def run_sb3(env: str, seed: int, total: int, runs_dir: str, python: str, timeout_s: float) -> dict:
    run_dir = os.path.join(runs_dir, f"sb3-{env}-s{seed}")
    start = time.perf_counter()
    result = subprocess.run([python, SB3_RUNNER, env, str(seed), str(total), run_dir],
                            capture_output=True, text=True, timeout=timeout_s)
    if result.returncode != 0:
        raise RuntimeError(f"SB3 {env} seed {seed} failed:\n{result.stderr[-3000:]}")
    line = json.loads(result.stdout.strip().splitlines()[-1])
    return {"sps": line["sps"], "final_return": line["final_return"],
            "env_steps": line["env_steps"], "wall_s": time.perf_counter() - start,
            "run_dir": run_dir}


def median(rows: list[dict], key: str):
    values = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(values) if values else None


def table(rows: list[dict]) -> str:
    """The markdown table of result rows (one per framework, env and seed, as --out holds)."""
    by_env: dict[str, dict[str, list[dict]]] = {}
    for row in rows:
        by_env.setdefault(row["env"], {}).setdefault(row["framework"], []).append(row)
    lines = []
    for env, sides in by_env.items():
        ours, sb3 = sides.get("rltpu", []), sides.get("sb3", [])
        our_return, our_wall = median(ours, "final_return"), median(ours, "wall_s")
        sb3_wall = median(sb3, "wall_s")
        steps = max(r["env_steps"] for side in sides.values() for r in side)
        loads = [r[k] for side in sides.values() for r in side for k in ("load_before", "load_after")]
        published = PUBLISHED[env]
        actors = sorted({r.get("num_actors", 1) for r in ours})
        label = env if actors in ([], [1]) else (
            f"{env} (rltpu: {', '.join(map(str, actors))} actors)")
        return_goal = "-" if our_return is None else (
            "met" if our_return >= published else "not met")
        wall_ratio = "-" if not (our_wall and sb3_wall) else (
            f"{our_wall / sb3_wall:.2f}x ({'met' if our_wall <= 0.5 * sb3_wall else 'not met'})")
        seeds = max(len(ours), len(sb3))
        lines.append([label, f"{steps:,}", str(seeds), fmt(our_return, ".1f"),
                      fmt(median(sb3, "final_return"), ".1f"), f"{published} ({return_goal})",
                      fmt(our_wall, ".0f"), fmt(sb3_wall, ".0f"), wall_ratio,
                      fmt(median(ours, "sps")), fmt(median(sb3, "sps")),
                      f"{min(loads):.1f}-{max(loads):.1f}"])
    return markdown_table(["env", "env steps", "seeds", "rltpu final return (median)",
                           "SB3 final return (median)", "CleanRL at 1M (rltpu's goal)",
                           "rltpu wall s", "SB3 wall s", "wall ratio (goal <= 0.5x)",
                           "rltpu env steps/s", "SB3 env steps/s", "load average (1 min)"], lines)


def main(argv: list[str]) -> int:
    args = parse(argv)
    if args.table_from is not None:
        print(table(read_jsonl(args.table_from)))
        return 0
    runs_dir, out = results_paths(args.runs_dir, args.out, "mujoco")
    last_seed = args.first_seed + args.seeds - 1
    print(f"# MuJoCo: rltpu PPO (Ray mode, {args.num_actors} rollout actor(s)) vs SB3 PPO "
          f"(rl-zoo), {args.total_env_steps:,} env steps per run, seeds {args.first_seed}-"
          f"{last_seed}; {machine_line()}; results to {out}", flush=True)
    sides = {"rltpu": lambda env, seed: run_rltpu(env, seed, args.total_env_steps, runs_dir,
                                                  args.timeout_s, args.num_actors),
             "sb3": lambda env, seed: run_sb3(env, seed, args.total_env_steps, runs_dir,
                                              args.peers_python, args.timeout_s)}
    rows, turn = [], 0
    for env in args.envs:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            order = ["rltpu", "sb3"] if turn % 2 == 0 else ["sb3", "rltpu"]
            turn += 1
            for framework in order:
                if framework == args.skip:
                    continue
                before = load1()
                try:
                    result = sides[framework](env, seed)
                except (RuntimeError, subprocess.TimeoutExpired) as e:
                    print(f"# {framework} {env} seed {seed}: {str(e).splitlines()[0]}", flush=True)
                    continue
                row = {"env": env, "framework": framework, "seed": seed, **result,
                       "load_before": before, "load_after": load1(),
                       "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
                append_jsonl(out, row)
                rows.append(row)
                print(f"# {framework} {env} seed {seed}: final return {fmt(row['final_return'], '.1f')}"
                      f", {row['wall_s']:.0f} s, {row['sps']:,.0f} env steps/s, load "
                      f"{before:.1f} -> {row['load_after']:.1f}", flush=True)
    print()
    print(table(rows))
    print(f"\n{machine_line()} at the end.")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
