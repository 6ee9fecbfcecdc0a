"""Actor against central inference, side by side in one run: env steps/s, memory per actor
and start-up, with 2, 8 and 32 actors, on CartPole-v1 (IMPALA's MLP) and ALE/Pong-v5
(IMPALA with the Nature torso).

Each cell starts its actors on one local Ray (real Ray actors, one process each), takes
unrolls with fixed random params (no learner: the figures are acting's alone) and measures:
  - start-up: from creating the actors until every one of them has delivered an unroll
    (actor mode: each imports JAX and compiles its policy; central: env actors start, the
    server in this process compiles once). The compilation cache is off for both.
  - env steps/s: ``unroll_length * envs_per_actor`` per unroll taken over ``--window-s``
    seconds of steady state, after that first unroll.
  - memory per actor: the mean USS (memory the process alone holds, what killing it would
    free) and RSS (with shared pages) of the actor processes at the window's end; a bare
    Ray actor's, for reference, is the floor Ray itself sets.

Central inference runs its server in this process (as in a run, in the learner's), so its
policy calls share this machine's CPUs with the env actors: on a CPU-only machine that
moves the work, it does not remove it. Prints a markdown table with the date, the CPU
count and the load average before and after.

usage: python bench/inference.py [--window-s 4] [--actors 2 8 32] [--envs cartpole atari]
       [--skip-actor-above N]
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

ENVS = {
    "cartpole": dict(env="CartPole-v1", torso="mlp", envs_per_actor=16, unroll_length=16),
    "atari": dict(env="ALE/Pong-v5", torso="nature", envs_per_actor=8, unroll_length=20),
}


def cell(env_name: str, mode: str, num_actors: int, window_s: float) -> dict:
    """One cell of the table: start ``num_actors`` actors in ``mode`` and measure them."""
    import jax
    import psutil
    import ray

    from rltpu import agents, devices, envs, inference
    from rltpu.actor import RayRolloutActor
    from rltpu.config import RunConfig
    from rltpu.transport import ParamStore, UnrollQueue

    settings = ENVS[env_name]
    run = RunConfig(env=settings["env"], envs_per_actor=settings["envs_per_actor"],
                    unroll_length=settings["unroll_length"], batch_size=settings["envs_per_actor"],
                    num_actors=num_actors, inference=mode, compilation_cache=None,
                    max_actor_restarts=0)
    impala = agents.get("impala")
    config = impala.Config(torso=settings["torso"])
    fns = impala.build(envs.make_spec(run.env), config, run)
    params = devices.to_host(jax.jit(fns.init)(jax.random.key(0)).params)
    seeds = [(i, 1000 * (i + 1)) for i in range(num_actors)]

    start = time.perf_counter()
    if mode == "actor":
        actors = [RayRolloutActor.options(max_restarts=0).remote(i, impala, config, run, seed)
                  for i, seed in seeds]
        store = ParamStore()
        store.publish(0, params)
        queue = UnrollQueue(actors, store, run.max_in_flight)
    else:
        actors = inference.start_env_actors(run, seeds)
        store = inference.ServedParams()
        store.publish(0, params)
        queue = inference.CentralQueue(actors, store, fns.actor_step, None,
                                       unroll_length=run.unroll_length,
                                       envs_per_actor=run.envs_per_actor,
                                       max_in_flight=run.max_in_flight)
    try:
        heard = set()
        while len(heard) < num_actors:
            heard.update(u.actor_id for u in queue.get(1))
        startup_s = time.perf_counter() - start
        steps_per_unroll = run.unroll_length * run.envs_per_actor
        window_start, steps = time.perf_counter(), 0
        while time.perf_counter() - window_start < window_s:
            steps += steps_per_unroll * len(queue.get(1))
        sps = steps / (time.perf_counter() - window_start)
        uss, rss = [], []
        for pid in ray.get([a.pid.remote() for a in actors]):
            info = psutil.Process(pid).memory_full_info()
            uss.append(info.uss / 2**20)
            rss.append(info.rss / 2**20)
    finally:
        queue.close()
        for actor in actors:
            ray.kill(actor)
    time.sleep(1.0)  # the killed processes' memory is back before the next cell starts
    return {"env": settings["env"], "mode": mode, "actors": num_actors, "startup_s": startup_s,
            "sps": sps, "uss_mb": sum(uss) / len(uss), "rss_mb": sum(rss) / len(rss)}


def bare_ray_actor() -> dict:
    """The memory of a Ray actor that imports nothing of its own: the floor under both."""
    import psutil
    import ray

    @ray.remote(num_cpus=1)
    class Bare:
        def pid(self) -> int:
            import os
            return os.getpid()

    actor = Bare.remote()
    info = psutil.Process(ray.get(actor.pid.remote())).memory_full_info()
    ray.kill(actor)
    return {"uss_mb": info.uss / 2**20, "rss_mb": info.rss / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--window-s", type=float, default=4.0)
    parser.add_argument("--actors", type=int, nargs="+", default=[2, 8, 32])
    parser.add_argument("--envs", nargs="+", default=list(ENVS), choices=list(ENVS))
    parser.add_argument("--skip-actor-above", type=int, default=None,
                        help="run actor mode only up to this many actors (each holds JAX: "
                             "about 300 MB, which a small machine may not have 32 times)")
    args = parser.parse_args()

    import ray

    from rltpu.cluster import start_local_ray
    start_local_ray(num_cpus=max(args.actors))  # (one CPU each: oversubscribed on purpose)
    load_before = os.getloadavg()
    rows, skipped = [], []
    try:
        bare = bare_ray_actor()
        for env_name in args.envs:
            for num_actors in args.actors:
                for mode in ("actor", "central"):
                    if (mode == "actor" and args.skip_actor_above is not None
                            and num_actors > args.skip_actor_above):
                        skipped.append((ENVS[env_name]["env"], mode, num_actors))
                        continue
                    row = cell(env_name, mode, num_actors, args.window_s)
                    print(f"{row['env']:12} {mode:8} {num_actors:3} actors: {row['sps']:9,.0f} "
                          f"env steps/s, USS {row['uss_mb']:5.0f} MB, RSS {row['rss_mb']:5.0f} MB, "
                          f"start-up {row['startup_s']:5.1f} s", file=sys.stderr, flush=True)
                    rows.append(row)
    finally:
        ray.shutdown()
    load_after = os.getloadavg()
    print(f"\n{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
          f"{os.cpu_count()} CPUs, load average {load_before[0]:.1f} before, "
          f"{load_after[0]:.1f} after; steady-state window {args.window_s:g} s per cell\n")
    print("| env | actors | inference | env steps/s | USS MB/actor | RSS MB/actor | start-up s |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['env']} | {r['actors']} | {r['mode']} | {r['sps']:,.0f} | "
              f"{r['uss_mb']:.0f} | {r['rss_mb']:.0f} | {r['startup_s']:.1f} |")
    print(f"| (a bare Ray actor, for reference) | 1 | | | {bare['uss_mb']:.0f} | "
          f"{bare['rss_mb']:.0f} | |")
    for env, mode, n in skipped:
        print(f"| {env} | {n} | {mode} | not run (--skip-actor-above) | | | |")


if __name__ == "__main__":
    main()
