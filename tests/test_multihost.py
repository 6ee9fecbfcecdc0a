"""A simulated pod: 2 learner processes x 4 CPU devices, joined with jax.distributed on
loopback (gloo), each feeding its own half of the global batch, give the same params as a
single process fed the whole batches."""
import os
import subprocess
import sys

import jax
import numpy as np

from rltpu import agents
from rltpu import envs
from rltpu import devices
from rltpu.config import RunConfig
from rltpu.learner import Learner
from tests.processes import ended, said

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UNROLL, BATCH, UPDATES = 8, 16, 3


def learner_and_batches(mesh):
    """The same learner and batches in every process (seeded)."""
    from tests.test_impala_loss import random_batch
    agent = agents.get("impala")
    spec = envs.make_spec("CartPole-v1")
    fns = agent.build(spec, agent.Config(), RunConfig(unroll_length=UNROLL, batch_size=BATCH))
    params = jax.eval_shape(fns.init, jax.random.key(0)).params
    batches = [random_batch(fns, spec, params, UNROLL, BATCH, seed=s) for s in range(UPDATES)]
    return Learner(fns, spec, mesh, 3, UNROLL, BATCH), batches


def test_two_processes_equal_one(tmp_path, coordinator_port):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": ROOT}
    env.pop("XLA_FLAGS", None)
    outs = [tmp_path / f"process{i}.npz" for i in range(2)]
    procs = [subprocess.Popen([sys.executable, "-m", "tests.multihost_worker", str(i), "2",
                               str(coordinator_port), str(out)], env=env, cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i, out in enumerate(outs)]
    with ended(*procs):  # (a failed or hung process 0 leaves process 1 waiting for it)
        for p in procs:
            try:
                output, _ = p.communicate(timeout=300)
            except subprocess.TimeoutExpired:
                raise AssertionError(f"process {procs.index(p)} hung: {said(p)[-3000:]}") from None
            assert p.returncode == 0, output[-3000:]

    learner, batches = learner_and_batches(devices.make_mesh(8))
    expected = {}
    for i, batch in enumerate(batches):
        learner.update(learner.put(batch))
        for j, leaf in enumerate(jax.tree.leaves(learner.host_params())):
            expected[f"update{i}_leaf{j}"] = leaf

    first, second = (np.load(out) for out in outs)
    assert sorted(first.files) == sorted(expected)
    for name, value in expected.items():
        # both processes hold bitwise the same params after every update...
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)
        # ...equal to one process over 8 devices fed the whole batches
        np.testing.assert_allclose(first[name], value, rtol=1e-4, atol=1e-5, err_msg=name)
    assert not np.allclose(first["update0_leaf0"], first[f"update{UPDATES - 1}_leaf0"])
