"""Anakin mode against its peers, measured in one run on this machine.

Prints a markdown table of:
  - bare gymnax stepping: gymnax CartPole-v1 with --num-envs envs (2048), random actions,
    a jitted vmapped step in a ``lax.scan``: env steps/s (the ceiling of any agent);
  - Anakin PPO training on the same env and env count: env steps/s while training (after
    compiling), and its ratio to the bare rate (the issue's goal: at least 30%);
  - the Anakin loop acting only (PPO's policy, an update that does nothing): where the
    training time goes;
  - time from process start to a mean return of 475 (last 20 training episodes): Anakin PPO
    on gymnax CartPole-v1 against Ray-mode PPO on gymnasium CartPole-v1 (default settings,
    2 actors), median of --seeds runs each.

usage: python bench/anakin.py [--num-envs 2048] [--seeds 1] [--quick]
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

# Throughput: many envs, short unrolls, a few epochs of large minibatches (PureJaxRL's
# shape of PPO for wide env batches).
THROUGHPUT_PPO = ["--unroll-length", "16", "--num-epochs", "4", "--num-minibatches", "4",
                  "--updates-per-call", "4", "--target-return", "none"]
# Time to 475: the settings tests/test_anakin.py learns with (16 envs x 64 steps).
SOLVE_ANAKIN = ["--mode", "anakin", "--agent", "ppo", "--env", "gymnax:CartPole-v1",
                "--batch-size", "16", "--unroll-length", "64", "--num-epochs", "10",
                "--num-minibatches", "4", "--updates-per-call", "4", "--total-env-steps", "500000"]
SOLVE_RAY = ["--agent", "ppo", "--env", "CartPole-v1", "--total-env-steps", "500000"]


def rltpu_run(args: list[str], tmp: str) -> dict:
    run_dir = os.path.join(tmp, f"run-{time.time_ns()}")
    result = subprocess.run([sys.executable, "-m", "rltpu.cli", "train", "--quiet", "--run-dir",
                             run_dir, *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "RAY_ADDRESS": ""})
    if result.returncode != 0:
        raise RuntimeError(f"rltpu train {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    with open(os.path.join(run_dir, "summary.json")) as f:
        return json.load(f)


def bare_gymnax_sps(num_envs: int, steps: int, repeats: int = 3) -> float:
    """gymnax's own step (with its autoreset), vmapped over ``num_envs``, random actions,
    ``steps`` steps per jitted call; the best of ``repeats`` calls after compiling."""
    import jax
    import gymnax

    env, params = gymnax.make("CartPole-v1")

    def run(key, state):
        def one(carry, _):
            key, state = carry
            key, act_key, step_key = jax.random.split(key, 3)
            action = jax.random.randint(act_key, (num_envs,), 0, env.num_actions)
            _, state, reward, *_ = jax.vmap(env.step, in_axes=(0, 0, 0, None))(
                jax.random.split(step_key, num_envs), state, action, params)
            return (key, state), reward.sum()
        (key, state), rewards = jax.lax.scan(one, (key, state), None, length=steps)
        return key, state, rewards.sum()

    run = jax.jit(run)
    key = jax.random.key(0)
    _, state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(key, num_envs), params)
    key, state, _ = jax.block_until_ready(run(key, state))  # compile
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        key, state, _ = jax.block_until_ready(run(key, state))
        best = max(best, num_envs * steps / (time.perf_counter() - start))
    return best


def anakin_acting_sps(num_envs: int, unroll_length: int = 16, calls: int = 3) -> float:
    """The Anakin loop with PPO's policy but an update that does nothing: env steps/s of
    acting alone, to show how training's time splits between acting and learning."""
    from rltpu import agents
    from rltpu.envs import jax_envs
    from rltpu import anakin, devices
    from rltpu.agent import AgentFns
    from rltpu.config import RunConfig

    agent = agents.get("ppo")
    env, spec = jax_envs.make("gymnax:CartPole-v1")
    fns = agent.build(spec, agent.Config(), RunConfig(mode="anakin", batch_size=num_envs))
    fns = AgentFns(init=fns.init, actor_step=fns.actor_step,
                   update=lambda state, trajectory: (state, {"valid": trajectory.valid.mean()}))
    program = anakin.Program(fns, env, devices.make_mesh(1), 0, 1, num_envs, unroll_length,
                             updates_per_call=8)
    program.run()  # compiled already; this warms up
    best = 0.0
    for _ in range(calls):
        start = time.perf_counter()
        outputs = program.run()
        best = max(best, int(outputs.env_steps.sum()) / (time.perf_counter() - start))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-envs", type=int, default=2048)
    parser.add_argument("--seeds", type=int, default=1, help="runs per time-to-475 entry")
    parser.add_argument("--quick", action="store_true", help="fewer training steps, no Ray run")
    args = parser.parse_args()
    import jax
    print(f"# Anakin benchmark: {platform.node()}, {os.cpu_count()} CPUs, "
          f"{jax.device_count()} {jax.devices()[0].platform} device(s), "
          f"load {os.getloadavg()[0]:.1f} at start", flush=True)

    bare = bare_gymnax_sps(args.num_envs, steps=100)
    acting = anakin_acting_sps(args.num_envs)
    updates = 8 if args.quick else 32
    with tempfile.TemporaryDirectory() as tmp:
        train = rltpu_run(["--mode", "anakin", "--agent", "ppo", "--env", "gymnax:CartPole-v1",
                           "--batch-size", str(args.num_envs), *THROUGHPUT_PPO,
                           "--total-env-steps", str(updates * 16 * args.num_envs)], tmp)
        # Warm: the compiled programs come from the cache an earlier (untimed) run filled,
        # as from a user's second run on; cold: everything is compiled.
        modes = {"anakin": SOLVE_ANAKIN, **({} if args.quick else {"ray": SOLVE_RAY})}
        caches = {"": ["--compilation-cache", os.path.join(tmp, "xla")],
                  "_cold": ["--compilation-cache", "none"]}
        for mode_args in modes.values():
            rltpu_run([*mode_args, "--seed", "99", *caches[""]], tmp)
        solve = {mode + cache: [] for mode in ("anakin", "ray") for cache in caches}
        for seed in range(args.seeds):
            for mode, mode_args in modes.items():
                for cache, cache_args in caches.items():
                    solve[mode + cache].append(
                        rltpu_run([*mode_args, "--seed", str(seed), *cache_args], tmp))

    def median_time(runs):
        times = [r["time_to_target_s"] for r in runs]
        if not times or None in times:
            return None, times
        return statistics.median(times), times

    print("\n| measure | Anakin | peer | ratio |\n| --- | --- | --- | --- |")
    ratio = train["env_sps"] / bare
    print(f"| env steps/s, gymnax CartPole-v1, {args.num_envs} envs: PPO training vs bare "
          f"random-action stepping | {train['env_sps']:,.0f} | {bare:,.0f} | {ratio:.1%} "
          f"(goal >= 30%: {'met' if ratio >= 0.3 else 'not met'}) |")
    print(f"| env steps/s, same env and envs: Anakin acting only (PPO policy, no update) vs "
          f"bare stepping | {acting:,.0f} | {bare:,.0f} | {acting / bare:.1%} |")
    fmt = lambda t: "not reached" if t is None else f"{t:.1f} s"
    for cache, kind in (("", "compilation cache warm"), ("_cold", "cold compile")):
        anakin_t, _ = median_time(solve["anakin" + cache])
        ray_t, _ = median_time(solve["ray" + cache])
        peer = "not run (--quick)" if args.quick else f"{fmt(ray_t)} (Ray mode, 2 actors)"
        speedup = f"{anakin_t / ray_t:.2f}x (Anakin / Ray)" if anakin_t and ray_t else "n/a"
        print(f"| time to 475 from process start, PPO, {kind} (median of {args.seeds}) | "
              f"{fmt(anakin_t)} | {peer} | {speedup} |")
    print(f"\nAnakin training run: {train['env_steps']:,} env steps, {train['learner_updates']} "
          f"updates, start-up (imports, compile) {train['startup_s']:.1f} s. Time to 475 runs "
          "(start-up in brackets): " + "; ".join(
              f"{name} {[(round(r['time_to_target_s'] or 0, 1), round(r['startup_s'], 1)) for r in runs]}"
              for name, runs in solve.items() if runs) + ".")


if __name__ == "__main__":
    main()
