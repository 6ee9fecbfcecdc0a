"""Atari benchmark: the rltpu actor against a bare loop over the same env and policy, and
the bytes each env step costs on the wire.

Prints markdown tables of, for ALE/Pong-v5 with the Machado et al. 2018 preprocessing:
  - env steps/s of the vector env alone, per backend (ale-py's C++ vector env, gymnasium's
    wrappers, and EnvPool when it is installed), each with one thread;
  - actor efficiency, per torso: an in-process ``RolloutActor`` producing unrolls against a
    bare loop of the same vector env and the same jitted policy step (the same preprocessing,
    the same env count), measured alternately in one process; goal >= 80%;
  - bytes per env step in the trajectories actors send (uint8 frames, and what float32
    frames would cost);
  - unless --quick: one actor's steps/s while acting in a real run (the impala-atari preset
    with one actor, real Ray), against the bare loop of the preset's network. On a machine
    without accelerators the learner's convolutions share the CPUs with that actor.

usage: python bench/atari.py [--envs 16] [--unroll-length 20] [--rounds 3] [--quick]
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
sys.path.insert(0, ROOT)

GAME = "ALE/Pong-v5"


def env_only_sps(num_envs: int, steps: int, rounds: int) -> dict:
    """Env steps/s of each backend alone (random actions), alternately ``rounds`` times
    after a warm-up; medians."""
    import importlib.util

    import numpy as np

    from rltpu import envs
    backends = ["ale", "gymnasium"] + (["envpool"] if importlib.util.find_spec("envpool") else [])
    made = {b: envs.make(GAME, num_envs, seed=0, backend=b)[0] for b in backends}
    actions = np.random.default_rng(0).integers(0, 6, (steps, num_envs))
    sps = {b: [] for b in made}
    for round_ in range(rounds + 1):
        for backend, env in made.items():
            start = time.perf_counter()
            for action in actions:
                env.step(action)
            if round_:  # round 0 warms up
                sps[backend].append(steps * num_envs / (time.perf_counter() - start))
    for env in made.values():
        env.close()
    return {b: statistics.median(v) for b, v in sps.items()}


def actor_efficiency(torso: str, num_envs: int, unroll_length: int, rounds: int) -> dict:
    """A RolloutActor and a bare loop on the actor's own env and jitted policy step,
    alternately, ``rounds`` times each; medians of env steps/s."""
    import jax
    import numpy as np

    from rltpu import agents
    from rltpu import envs
    from rltpu import devices
    from rltpu.actor import RolloutActor
    from rltpu.config import RunConfig

    agent = agents.get("impala")
    config = agent.Config(torso=torso, clip_rewards=True)
    run = RunConfig(env=GAME, num_actors=1, envs_per_actor=num_envs,
                    unroll_length=unroll_length, batch_size=num_envs)
    actor = RolloutActor(0, agent, config, run, seed=0)
    fns = agent.build(envs.make_spec(GAME), config, run)
    actor.set_params(0, devices.to_host(jax.jit(fns.init)(jax.random.key(0)).params))
    step, params = actor._step, actor.params  # the very policy step the actor jitted
    unrolls_per_round = 4
    steps = unrolls_per_round * unroll_length

    def bare() -> float:
        observation, key = actor._observation, jax.random.key(1)
        start = time.perf_counter()
        for _ in range(steps):
            out, key = step(params, observation, key)
            observation, *_ = actor.env.step(np.asarray(out.action))
        actor._observation = observation
        return steps * num_envs / (time.perf_counter() - start)

    def rltpu_actor() -> tuple[float, int]:
        start = time.perf_counter()
        unrolls = [actor.unroll_with_current() for _ in range(unrolls_per_round)]
        sps = steps * num_envs / (time.perf_counter() - start)
        trajectory = unrolls[-1].trajectory
        nbytes = sum(np.asarray(x).nbytes for x in jax.tree.leaves(trajectory))
        return sps, nbytes

    actor.unroll_with_current()  # warm up both paths
    bare()
    bare_sps, actor_sps = [], []
    for _ in range(rounds):
        bare_sps.append(bare())
        sps, nbytes = rltpu_actor()
        actor_sps.append(sps)
    observation_bytes = int(np.prod(actor.env.single_observation_space.shape))  # uint8
    per_step = nbytes / (unroll_length * num_envs)
    return {"torso": torso, "bare_sps": statistics.median(bare_sps),
            "actor_sps": statistics.median(actor_sps), "bytes_per_step": per_step,
            # The same trajectory with float32 frames: 3 more bytes per pixel.
            "bytes_per_step_float32": per_step + 3 * observation_bytes * (unroll_length + 1) / unroll_length}


def run_actor_sps(num_envs: int, total_steps: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = os.path.join(tmp, "run")
        subprocess.run([sys.executable, "-m", "rltpu.cli", "train", "--preset", "impala-atari",
                        "--num-actors", "1", "--envs-per-actor", str(num_envs), "--batch-size",
                        str(num_envs), "--total-env-steps", str(total_steps), "--quiet",
                        "--run-dir", run_dir], check=True, cwd=ROOT, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, env={**os.environ, "RAY_ADDRESS": ""})
        with open(os.path.join(run_dir, "summary.json")) as f:
            return json.load(f)


def fmt(x, digits=0):
    return "n/a" if x is None else f"{x:,.{digits}f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", type=int, default=16, help="envs per actor (and in the bare loop)")
    parser.add_argument("--unroll-length", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3, help="alternations of actor and bare loop")
    parser.add_argument("--run-steps", type=int, default=3_200, help="env steps of the real run")
    parser.add_argument("--quick", action="store_true", help="no real run")
    opts = parser.parse_args()
    from rltpu import devices
    devices.pin_process_to_cpu()  # as in a rollout actor

    env_sps = env_only_sps(opts.envs, 100, opts.rounds)
    efficiency = [actor_efficiency(t, opts.envs, opts.unroll_length, opts.rounds)
                  for t in ("nature", "impala_resnet")]
    run = None if opts.quick else run_actor_sps(opts.envs, opts.run_steps)

    print(f"\nMachine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}; {GAME}, {opts.envs} envs, sticky actions 0.25, "
          f"frame skip 4, 84x84 grey, 4 frames stacked; policy: IMPALA on the CPU.\n")
    print("| env alone (random actions) | env steps/s | ratio |")
    print("| --- | --- | --- |")
    for backend, sps in env_sps.items():
        print(f"| {backend} backend | {fmt(sps)} | {sps / env_sps['gymnasium']:.2f}x gymnasium |")
    print("\n| torso | bare env + policy loop (steps/s) | rltpu actor (steps/s) | "
          "actor efficiency | goal | bytes per env step sent (uint8) | with float32 frames |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for e in efficiency:
        print(f"| {e['torso']} | {fmt(e['bare_sps'])} | {fmt(e['actor_sps'])} | "
              f"{100 * e['actor_sps'] / e['bare_sps']:.0f}% | >= 80% | {fmt(e['bytes_per_step'])} | "
              f"{fmt(e['bytes_per_step_float32'])} |")
    if run is not None:
        bare = efficiency[-1]["bare_sps"]
        print(f"\nReal run (impala-atari preset, 1 actor x {opts.envs} envs, {run['env_steps']:,} "
              f"steps, learner on {run['platform']}): one actor's steps/s while acting "
              f"{fmt(run['actor_sps'])}, {100 * run['actor_sps'] / bare:.0f}% of the bare "
              f"impala_resnet loop; env steps/s overall {fmt(run['env_sps'])}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
