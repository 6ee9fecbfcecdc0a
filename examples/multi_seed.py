"""Several seeds of one configuration, then their learning curves as mean and spread::

    python examples/multi_seed.py --seeds 3 --agent ppo     # runs/seeds-ppo/seed-*
    rltpu plot runs/seeds-ppo/seed-*                         # (done at the end too)

Each seed is an ordinary run directory; ``rltpu plot`` groups runs whose settings differ
only in the seed and shades their spread. For grids and searches over settings use
``rltpu sweep`` (Ray Tune), which does the same for every configuration.
"""
from __future__ import annotations

import argparse
import os

import rltpu
from rltpu import agents, plot


def main(agent_name: str = "ppo", seeds: int = 3, total_env_steps: int = 100_000,
         root: str = "runs") -> str:
    agent = agents.get(agent_name)
    folder = os.path.join(root, f"seeds-{agent_name}")
    run_dirs = []
    for seed in range(seeds):
        run_dir = os.path.join(folder, f"seed-{seed}")
        rltpu.train(agent, agent.Config(), rltpu.RunConfig(
            seed=seed, total_env_steps=total_env_steps, target_return=None, run_dir=run_dir),
            quiet=True)
        run_dirs.append(run_dir)
    return plot.plot(run_dirs, os.path.join(folder, "curves.png"))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agent", default="ppo")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--total-env-steps", type=int, default=100_000)
    opts = parser.parse_args()
    print(main(opts.agent, opts.seeds, opts.total_env_steps))
