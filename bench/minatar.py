"""MinAtar through gymnax: rltpu's Anakin PPO against PureJaxRL's PPO, side by side in one run.

Per game, rltpu (``rltpu train --preset ppo-minatar``) and PureJaxRL's runner
(../shared/peers/purejaxrl/run.py, called there, with the same geometry: 64 envs x 128
steps, 4 epochs x 8 minibatches, learning rate 5e-4 annealed, 64x64 tanh MLPs, discount
0.99) train for --total-env-steps each; who goes first alternates game by game, so both
meet the same load. Prints a markdown table: env steps/s of training (compilation apart)
each and their ratio (issue 17's goal: rltpu / PureJaxRL >= 1.0); the CPU seconds each
spent training per million env steps and their ratio (PureJaxRL's / rltpu's: above 1.0,
rltpu does less work per step), which the load moves far less than env steps/s on a
shared machine (bench.common.CpuClock; rltpu counts only valid steps, not the extra
autoreset step of each episode, which it computes too); the final training
return each (rltpu: the last 20 episodes; PureJaxRL: the episodes ending in its last
update) against gymnax's published PPO return at 10M steps (goal: at least that), and
the load average around each pair. Every result is also a JSON line in --out, and rltpu's
run directories (metrics.jsonl: ``rltpu plot`` draws them) are kept under --runs-dir.

Memory: PureJaxRL's runner keeps every step's episode statistics until training ends; at
10M steps it grew past 16 GB resident and was killed by the kernel on a 24 GB machine
(2026-11-30), so on such a machine pass --total-env-steps 2000000 or so.

usage: python bench/minatar.py [--games Breakout,SpaceInvaders,Freeway,Asterix]
           [--total-env-steps 10000000] [--seed 0] [--runs-dir DIR] [--out FILE]
           [--preset ppo-minatar-blines --skip peer]   (gymnax-blines' settings, rltpu only)
           [--preset impala-minatar --skip peer]       (IMPALA, rltpu only)
       python bench/minatar.py --table-from FILE   (the table of an earlier run's --out)
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.common import (ROOT, CpuClock, Parser, append_jsonl, csv_choices, fmt, load1,  # noqa: E402
                          read_jsonl, results_paths,
                          machine_line, markdown_table, positive_int, rltpu_train)

GAMES = ("Breakout", "SpaceInvaders", "Freeway", "Asterix")
# gymnax's README, PPO column (trained with gymnax-blines' configs, 10M steps).
PUBLISHED = {"Breakout": 28, "SpaceInvaders": 131, "Freeway": 58, "Asterix": 15}
PEER_DIR = os.path.join(os.path.dirname(ROOT), "shared", "peers", "purejaxrl")
# The ppo-minatar preset's geometry, passed to PureJaxRL's runner positionally:
# NUM_ENVS NUM_STEPS TOTAL EPOCHS MINIBATCHES LR (its other settings are the preset's).
PEER_GEOMETRY = ("64", "128")
PEER_TRAINING = ("4", "8", "5e-4")
# rltpu's presets for MinAtar; only the first is what PureJaxRL's runner also runs.
PRESETS = ("ppo-minatar", "ppo-minatar-blines", "impala-minatar")
BATCH = 64 * 128


def parse(argv: list[str]):
    parser = Parser(prog="bench/minatar.py", description=__doc__.split("\n")[0])
    parser.add_argument("--games", default=",".join(GAMES),
                        help=f"comma-separated, of {', '.join(GAMES)}")
    parser.add_argument("--total-env-steps", type=positive_int, default=10_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--preset", choices=PRESETS, default=PRESETS[0],
                        help="rltpu's settings: ppo-minatar (PureJaxRL's network and schedule, "
                             "what its runner runs) or ppo-minatar-blines (gymnax-blines', "
                             "behind the published returns; with --skip peer)")
    parser.add_argument("--skip", choices=("none", "rltpu", "peer"), default="none",
                        help="leave one side out (its cells read '-')")
    parser.add_argument("--runs-dir", default=None,
                        help="rltpu's run directories go here (default: runs/minatar-DATE)")
    parser.add_argument("--out", default=None, help="JSON lines of results (default: RUNS_DIR/results.jsonl)")
    parser.add_argument("--peer-dir", default=PEER_DIR)
    parser.add_argument("--timeout-s", type=positive_int, default=3600, help="per training run")
    parser.add_argument("--table-from", metavar="FILE", default=None,
                        help="print the table of an earlier run's results and exit")
    args = parser.parse_args(argv)
    args.games = csv_choices(parser, "--games", args.games, GAMES)
    if args.total_env_steps < BATCH:
        parser.error(f"--total-env-steps {args.total_env_steps} is less than one update "
                     f"({BATCH} steps: 64 envs x 128)")
    if args.preset != PRESETS[0] and args.skip != "peer" and args.table_from is None:
        parser.error(f"--preset {args.preset}: PureJaxRL's runner cannot take its settings "
                     "(network, discount, step size); add --skip peer")
    if args.table_from is not None and not os.path.isfile(args.table_from):
        parser.error(f"--table-from {args.table_from}: no such file")
    if (args.table_from is None and args.skip != "peer"
            and not os.path.isfile(os.path.join(args.peer_dir, "run.py"))):
        parser.error(f"--peer-dir {args.peer_dir}: no run.py there (PureJaxRL's runner)")
    return args


def run_rltpu(game: str, total: int, seed: int, runs_dir: str, timeout_s: float,
              preset: str = PRESETS[0]) -> dict:
    run_dir = os.path.join(runs_dir, f"rltpu-{game}-s{seed}")
    summary = rltpu_train(["--preset", preset, "--env", f"gymnax:{game}-MinAtar",
                           "--total-env-steps", str(total), "--seed", str(seed)],
                          run_dir, timeout_s)
    return {"sps": summary["env_sps"], "final_return": summary["final_return"],
            "env_steps": summary["env_steps"], "startup_s": summary["startup_s"],
            "process_s": summary["process_s"], "train_cpu_s": summary["train_cpu_s"],
            "run_dir": run_dir}


def run_peer(game: str, total: int, peer_dir: str, timeout_s: float) -> dict:
    # NOTE: PureJaxRL's runner seeds with PRNGKey(0) whatever --seed says.
    clock = CpuClock()
    result = clock.run([sys.executable, "run.py", f"{game}-MinAtar", *PEER_GEOMETRY, str(total),
                        *PEER_TRAINING], timeout_s, cwd=peer_dir)
    if result.returncode != 0:
        killed = " (killed: out of memory?)" if result.returncode == -9 else ""
        raise RuntimeError(f"PureJaxRL run.py {game} failed with exit status "
                           f"{result.returncode}{killed}:\n{result.stderr[-3000:]}")
    line = json.loads(result.stdout.strip().splitlines()[-1])
    # Its times count from its first line (the launch, to a few ms); training is the last
    # run_s seconds of total_s (compilation, and the imports before it, come first).
    return {"sps": line["sps"], "final_return": line["final_return"],
            "env_steps": total // BATCH * BATCH, "startup_s": line["compile_s"],
            "process_s": clock.samples[-1][0] - clock.launched,
            "train_cpu_s": clock.cpu_between(line["total_s"] - line["run_s"], line["total_s"])}


def cpu_per_mstep(row: dict | None) -> float | None:
    """CPU seconds of training per million env steps (None for a row without them)."""
    if row is None or row.get("train_cpu_s") is None:
        return None
    return row["train_cpu_s"] / row["env_steps"] * 1e6


def table(rows: list[dict]) -> str:
    """The markdown table of result rows (one per framework and game, as --out holds)."""
    by_game: dict[str, dict[str, dict]] = {}
    for row in rows:
        by_game.setdefault(row["game"], {})[row["framework"]] = row
    lines = []
    for game, pair in by_game.items():
        ours, peer = pair.get("rltpu"), pair.get("purejaxrl")
        ratio = (f"{ours['sps'] / peer['sps']:.2f}x" if ours and peer else "-")
        cpu_ours, cpu_peer = cpu_per_mstep(ours), cpu_per_mstep(peer)
        cpu_ratio = (f"{cpu_peer / cpu_ours:.2f}x" if cpu_ours and cpu_peer else "-")
        steps = max(r["env_steps"] for r in pair.values())
        loads = [r[k] for r in pair.values() for k in ("load_before", "load_after")]
        published = PUBLISHED[game]
        verdict = ("-" if ours is None or ours["final_return"] is None else
                   ("met" if ours["final_return"] >= published else "not met"))
        lines.append([game, f"{steps / 1e6:.1f}M", fmt(ours and ours["sps"]),
                      fmt(peer and peer["sps"]), ratio, fmt(cpu_ours, ".1f"),
                      fmt(cpu_peer, ".1f"), cpu_ratio,
                      fmt(ours and ours["final_return"], ".1f"),
                      fmt(peer and peer["final_return"], ".1f"), f"{published} ({verdict})",
                      f"{min(loads):.1f}-{max(loads):.1f}"])
    return markdown_table(["game (MinAtar)", "env steps", "rltpu env steps/s",
                           "PureJaxRL env steps/s", "ratio", "rltpu CPU s per 1M steps",
                           "PureJaxRL CPU s per 1M steps", "ratio by CPU time",
                           "rltpu final return",
                           "PureJaxRL final return", "gymnax's PPO at 10M (rltpu's goal)",
                           "load average (1 min)"], lines)


def main(argv: list[str]) -> int:
    args = parse(argv)
    if args.table_from is not None:
        print(table(read_jsonl(args.table_from)))
        return 0
    runs_dir, out = results_paths(args.runs_dir, args.out, "minatar")
    print(f"# MinAtar: rltpu Anakin (--preset {args.preset}) vs PureJaxRL PPO, "
          f"{args.total_env_steps:,} env steps "
          f"per run; {machine_line()}; results to {out}", flush=True)
    rows = []
    sides = {"rltpu": lambda game: run_rltpu(game, args.total_env_steps, args.seed, runs_dir,
                                             args.timeout_s, args.preset),
             "purejaxrl": lambda game: run_peer(game, args.total_env_steps, args.peer_dir,
                                                args.timeout_s)}
    skip = {"rltpu": "rltpu", "peer": "purejaxrl"}.get(args.skip)
    for i, game in enumerate(args.games):
        order = ["rltpu", "purejaxrl"] if i % 2 == 0 else ["purejaxrl", "rltpu"]
        for framework in order:
            if framework == skip:
                continue
            before = load1()
            try:
                result = sides[framework](game)
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                print(f"# {framework} {game}: {str(e).splitlines()[0]}", flush=True)
                continue
            row = {"game": game, "framework": framework, "seed": args.seed, **result,
                   "load_before": before, "load_after": load1(),
                   "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
            append_jsonl(out, row)
            rows.append(row)
            print(f"# {framework} {game}: {row['sps']:,.0f} env steps/s, "
                  f"{cpu_per_mstep(row):.1f} CPU s per 1M steps, final return "
                  f"{row['final_return']:.1f}, load {before:.1f} -> {row['load_after']:.1f}",
                  flush=True)
    print()
    print(table(rows))
    print(f"\n{machine_line()} at the end.")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
