"""Learner samples/s against the number of devices, and the cost of several learner processes.

The learner alone (no actors): the IMPALA update on CartPole-shaped batches, fed the same
fixed host batch every update (copied to the devices each time, as in training). Measures

  - one process over 1, 2, 4 and 8 devices (virtual CPU devices here; chips on a TPU VM);
  - 2 processes x 4 devices, joined with jax.distributed on loopback (gloo), each feeding
    its half of every batch, against 1 process x 8 devices measured in the same run: the
    overhead of the multi-process learner at the same total device count.

Each figure is the median of --repeats timings of --updates updates, in a fresh process.

usage: python bench/learner_scaling.py [--batch-size 256] [--unroll-length 32] [--updates 30]
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def worker(args) -> None:
    """One learner process: times ``--updates`` updates, prints samples/s as JSON."""
    from rltpu import devices
    if args.num_processes > 1:
        devices.initialize_distributed(f"127.0.0.1:{args.port}", args.num_processes,
                                       args.process_id, cpu_devices=args.local_devices)
    else:
        import jax
        jax.config.update("jax_num_cpu_devices", args.local_devices)
    import jax
    import numpy as np

    from rltpu import agents
    from rltpu import envs
    from rltpu.config import RunConfig
    from rltpu.learner import Learner

    agent = agents.get("impala")
    spec = envs.make_spec("CartPole-v1")
    T, B = args.unroll_length, args.batch_size
    run = RunConfig(unroll_length=T, batch_size=B, envs_per_actor=B)
    fns = agent.build(spec, agent.Config(), run)
    results = {}
    for n in args.devices:
        learner = Learner(fns, spec, devices.make_mesh(n), 0, T, B)
        rng = np.random.default_rng(0)
        share = B // args.num_processes

        def fill(s):
            shape = (s.shape[0], share, *s.shape[2:])
            if s.dtype == np.bool_:
                return rng.random(shape) < 0.05  # episode ends, masked steps
            if np.issubdtype(s.dtype, np.integer):
                return rng.integers(0, 2, shape).astype(s.dtype)
            return (0.5 * rng.normal(size=shape)).astype(s.dtype)
        batch = jax.tree.map(fill, learner.example)
        batch = batch._replace(valid=~batch.valid,
                               policy_version=np.zeros_like(batch.policy_version))
        for _ in range(3):  # compile and warm up
            metrics = learner.update(learner.put(batch))
        devices.wait(metrics)
        timings = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            for _ in range(args.updates):
                # The driver's loop: the next batch is put while the update runs.
                metrics = learner.update(learner.put(batch))
            devices.wait((metrics, learner.state))
            timings.append(time.perf_counter() - start)
        results[n] = T * B * args.updates / statistics.median(timings)
    print(json.dumps(results), flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_workers(args, num_processes: int, local_devices: int, devices: list[int]) -> dict:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": ROOT}
    env.pop("XLA_FLAGS", None)
    port = free_port()
    procs = [subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--worker",
         "--num-processes", str(num_processes), "--process-id", str(i), "--port", str(port), "--local-devices", str(local_devices),
         "--devices", *map(str, devices), "--batch-size", str(args.batch_size),
         "--unroll-length", str(args.unroll_length), "--updates", str(args.updates),
         "--repeats", str(args.repeats)],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True) for i in range(num_processes)]
    outputs = [p.communicate()[0] for p in procs]
    if any(p.returncode for p in procs):
        raise SystemExit(f"a learner process failed: {outputs}")
    return {int(k): v for k, v in json.loads(outputs[0].strip().splitlines()[-1]).items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--unroll-length", type=int, default=32)
    parser.add_argument("--updates", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--num-processes", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--process-id", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--local-devices", type=int, default=8, help=argparse.SUPPRESS)
    parser.add_argument("--devices", type=int, nargs="+", default=[8], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)

    single = run_workers(args, 1, 8, [1, 2, 4, 8])
    multi = run_workers(args, 2, 4, [8])[8]
    single_again = run_workers(args, 1, 8, [8])[8]  # the peer, measured again after
    peer = statistics.mean([single[8], single_again])
    print(f"learner samples/s, IMPALA update, batch {args.batch_size} x {args.unroll_length} "
          f"steps, {os.cpu_count()} CPU cores, {args.updates} updates x median of {args.repeats}\n")
    print("| processes x devices | samples/s | vs 1 x 1 |\n| --- | --- | --- |")
    for n, sps in single.items():
        print(f"| 1 x {n} | {sps:,.0f} | {sps / single[1]:.2f}x |")
    print(f"| 2 x 4 | {multi:,.0f} | {multi / single[1]:.2f}x |")
    print(f"\n2 x 4 against 1 x 8 (mean of its runs before and after, {single[8]:,.0f} and "
          f"{single_again:,.0f}): {multi / peer:.2f}x the samples/s, an overhead of "
          f"{(peer / multi - 1) * 100:.0f}% per update")


if __name__ == "__main__":
    main()
