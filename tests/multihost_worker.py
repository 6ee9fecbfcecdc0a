"""One learner process of a simulated pod (run by tests/test_multihost.py).

usage: python -m tests.multihost_worker PROCESS_ID NUM_PROCESSES PORT OUT.npz
Joins the others with jax.distributed on loopback (4 CPU devices each, gloo), builds the
learner over the global mesh, feeds it this process's half of each test batch, and saves
the params after every update.
"""
import sys

from rltpu import devices


def main(process_id: int, num_processes: int, port: int, out: str) -> None:
    devices.initialize_distributed(f"127.0.0.1:{port}", num_processes, process_id, cpu_devices=4)
    import jax
    import numpy as np

    from tests.test_multihost import BATCH, UNROLL, learner_and_batches

    assert devices.device_count() == 4 * num_processes and devices.local_device_count() == 4
    learner, batches = learner_and_batches(devices.make_mesh())
    share = BATCH // num_processes
    saved = {}
    for i, batch in enumerate(batches):
        local = jax.tree.map(lambda x: x[:, process_id * share:(process_id + 1) * share], batch)
        assert local.reward.shape == (UNROLL, share)
        learner.update(learner.put(local))
        for j, leaf in enumerate(jax.tree.leaves(learner.host_params())):
            saved[f"update{i}_leaf{j}"] = leaf
    np.savez(out, **saved)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
