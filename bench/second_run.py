"""A second ``rltpu.train`` in one process (a notebook's): where its time to the first batch goes.

Connects Ray once (as a notebook's first run leaves it up), then trains the same short run
``--runs`` times in this process (with a compilation cache of its own, empty at first, as
a fresh runtime's) and prints each run's start-up phases (seconds from the
call: ``ray``, ``learner``, ``actors``, ``first_batch``) and the seconds ``validate`` took
before them, with the load average beside them.

usage: python bench/second_run.py [--runs 3] [--agent ppo] [--env CartPole-v1] [--keep-actors no]
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--agent", default="ppo")
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--num-actors", type=int, default=2)
    parser.add_argument("--keep-actors", choices=["yes", "no"], default="yes",
                        help="no: every run starts new actors and compiles its learner "
                             "(as before rltpu.session)")
    args = parser.parse_args()

    import rltpu
    from rltpu import agents, cluster, plan as planning, progress, run as running, session
    from rltpu.config import RunConfig

    # As in a notebook: Ray stays up between runs and each run counts from its own call.
    progress.in_jupyter_kernel = lambda: True
    if args.keep_actors == "no":
        session.settings_key = lambda *_: None

    cluster.connect(args.num_actors)  # the notebook's first run leaves Ray up
    agent = agents.get(args.agent)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.runs):
            run = RunConfig(env=args.env, run_dir=os.path.join(tmp, f"run{i}"),
                            num_actors=args.num_actors, total_env_steps=4096,
                            target_return=None,
                            compilation_cache=os.path.join(tmp, "jax-cache"))
            load = os.getloadavg()[0]
            t0 = time.time()
            plan = planning.validate(agent, agent.Config(), run)
            validate_s = time.time() - t0
            summary = running.train_plan(plan, quiet=True)
            rows.append({"run": i + 1, "keep_actors": args.keep_actors, "validate_s": round(validate_s, 2),
                         **{k: round(v, 2) for k, v in summary["startup_phases_s"].items()},
                         "load_1min": round(load, 1)})
            print(json.dumps(rows[-1]), flush=True)
    import ray
    ray.shutdown()
    del rltpu


if __name__ == "__main__":
    main()
