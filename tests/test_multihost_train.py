"""A simulated pod trains through ``rltpu train``: 2 learner processes x 4 CPU devices, joined
with jax.distributed on loopback (gloo), on a Ray cluster of two nodes; each process owns
one rollout actor and feeds its half of every batch.

Each process records the SHA-256 of its params after every update and its share of the
first batches (``RLTPU_RECORD_UPDATES``), so the tests can check that the processes stayed
in lockstep with bitwise-identical params, and that one process over 8 devices fed the
same (concatenated) batches computes the same params.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from rltpu import agents
from rltpu import envs
from rltpu import devices
from rltpu.config import RunConfig
from rltpu.learner import Learner
from tests.processes import end, ended, said
from tests.test_multihost import ROOT

# Each host feeds 8 of the 16 trajectories of a batch, from its one actor.
RUN = ["--num-actors", "2", "--envs-per-actor", "8", "--batch-size", "16",
       "--unroll-length", "16", "--log-every-s", "1", "--seed", "0"]


@pytest.fixture(scope="module")
def two_node_cluster():
    """Two Ray nodes of one CPU each on this machine (a head and a worker, as on a pod's
    first two hosts), for the learner processes to connect to."""
    import tempfile
    tmp = tempfile.mkdtemp(prefix="rtmh", dir="/tmp")
    os.environ["RAY_TMPDIR"] = tmp
    from ray.cluster_utils import Cluster

    from rltpu import cluster as connecting
    connecting.force_token_auth()  # as on a real cluster: rltpu joins with a token, always
    connecting.private_token_file()
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "include_dashboard": False, "node_ip_address": "127.0.0.1"})
    cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1")
    yield cluster, tmp
    cluster.shutdown()
    os.environ.pop("RAY_TMPDIR", None)
    shutil.rmtree(tmp, ignore_errors=True)


def pod_env(ray_address: str, ray_tmpdir: str, record_dir=None) -> dict:
    """The environment of a simulated pod's learner process: 4 CPU devices, this checkout,
    the given Ray (and the update recording, with ``record_dir``)."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_NUM_CPU_DEVICES": "4",
           "PYTHONPATH": ROOT, "RAY_ADDRESS": ray_address, "RAY_TMPDIR": ray_tmpdir,
           # Ray would swap the loopback address for this host's own, which a sandboxed
           # machine may not route; a loopback cluster is reached on loopback.
           "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    if record_dir is not None:
        env["RLTPU_RECORD_UPDATES"] = str(record_dir)
    env.pop("XLA_FLAGS", None)
    return env


def learner_processes(args_per_process, env, cwd, port, metadata=None, **popen):
    """One ``rltpu train`` learner process per entry, joined on loopback ``port`` (held for
    them: the ``coordinator_port`` fixture): named by flags, or with ``metadata`` (each
    process's metadata server, ``tests.processes.metadata_server``) by ``--distributed
    auto``, as on the hosts of a TPU slice."""
    def joining(i):
        if metadata is None:
            return ["--coordinator", f"127.0.0.1:{port}",
                    "--num-processes", str(len(args_per_process)), "--process-id", str(i)], env
        return ["--distributed", "auto"], {**env, "GCE_METADATA_IP": metadata[i],
                                           "JAX_COORDINATOR_PORT": str(port)}
    return [subprocess.Popen(
        [sys.executable, "-m", "rltpu.cli", "train", *joining(i)[0], *args],
        env=joining(i)[1], cwd=cwd, text=True, **popen)
        for i, args in enumerate(args_per_process)]


def tpu_vm_metadata(worker: int, workers: int) -> dict[str, str]:
    """What a TPU VM's metadata server says of worker ``worker`` of a slice of ``workers``
    hosts, all on loopback here."""
    return {"agent-worker-number": str(worker), "tpu-env": "ACCELERATOR_TYPE: 'v4-16'\n",
            "worker-network-endpoints": ",".join(f"t1k-w-{i}:{i}:127.0.0.1"
                                                 for i in range(workers))}


def start_learners(cluster, tmp, run_dir, record_dir, args_per_process, port, run_dir_flag=True,
                   metadata=None):
    run_dir_args = ["--run-dir", str(run_dir)] if run_dir_flag else []
    return learner_processes([[*run_dir_args, *args] for args in args_per_process],
                             pod_env(cluster.address, tmp, record_dir), ROOT, port, metadata,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def refusals(args_per_process, tmp_path, ray_tmpdir, port) -> list[str]:
    """Each learner process's stderr; every one must exit with status 2."""
    procs = learner_processes(args_per_process, pod_env("", ray_tmpdir), tmp_path, port,
                              stderr=subprocess.PIPE)
    stderrs = []
    with ended(*procs):
        for p in procs:
            try:
                _, stderr = p.communicate(timeout=180)
            except subprocess.TimeoutExpired:
                raise AssertionError(f"learner process {procs.index(p)} hung") from None
            assert p.returncode == 2, stderr
            stderrs.append(stderr)
    return stderrs


def finish(procs, timeout):
    """Each process's output, once all have exited with status 0; a hang or a failure ends
    them all (and what they started)."""
    outputs = []
    with ended(*procs):
        for p in procs:
            try:
                output, _ = p.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                end(procs)
                raise AssertionError("a learner process hung: "
                                     + "\n".join(said(q)[-2000:] for q in procs)) from None
            outputs.append(output)
    for p, output in zip(procs, outputs):
        assert p.returncode == 0, output[-4000:]
    return outputs


def test_settings_a_pod_cannot_run_are_refused_on_every_host(tmp_path, ray_tmpdir,
                                                             coordinator_port):
    """Checked after the processes join (the device count is the pod's), before Ray starts."""
    args = ["--run-dir", str(tmp_path / "run"), "--envs-per-actor", "8", "--num-actors", "1"]
    for stderr in refusals([args, args], tmp_path, ray_tmpdir, coordinator_port):
        assert stderr.strip() == ("rltpu: error: --num-actors 1 is fewer than the 2 learner "
                                  "processes; each needs at least one actor"), stderr
    assert not os.listdir(ray_tmpdir) and not (tmp_path / "run").exists()


def test_a_bad_resume_is_refused_on_every_host(tmp_path, ray_tmpdir, coordinator_port):
    """Process 0 reads the run for both (host 1 has no copy): its error reaches host 1 too,
    which would otherwise wait for process 0 for ever."""
    (tmp_path / "run").mkdir()
    for stderr in refusals([["--resume", str(tmp_path / "run")],
                            ["--resume", str(tmp_path / "elsewhere")]], tmp_path, ray_tmpdir,
                           coordinator_port):
        assert stderr.strip().splitlines()[-1] == (
            f"rltpu: error: --resume {tmp_path / 'run'}: cannot read its config.json ([Errno 2] "
            f"No such file or directory: '{tmp_path / 'run' / 'config.json'}')"), stderr
    assert not os.listdir(ray_tmpdir) and os.listdir(tmp_path / "run") == []


def digests(record_dir, i):
    return (record_dir / f"process{i}.digests").read_text().split()


@pytest.mark.slow
def test_uneven_actors_keep_the_hosts_in_lockstep_a_signal_stops_both_and_both_resume(
        two_node_cluster, tmp_path, coordinator_port):
    """Host 1's envs sleep 5 ms a step (its actor makes unrolls several times slower than
    host 0's): host 0 must wait for it at every update, never step alone. A SIGTERM to host
    1 alone stops both at the same update, and only process 0 writes the run directory.
    Both then resume from process 0's checkpoint."""
    cluster, tmp = two_node_cluster
    run_dir, record_dir = tmp_path / "run", tmp_path / "record"
    common = [*RUN, "--target-return", "none", "--total-env-steps", "10000000"]
    procs = start_learners(cluster, tmp, run_dir, record_dir, [
        [*common, "--env", "rltpu.envs.fake:CountingEnv"],
        [*common, "--env", "rltpu.envs.fake:SlowCountingEnv"]], coordinator_port)
    with ended(*procs):
        deadline = time.time() + 240
        while not ((record_dir / "process1.digests").exists() and len(digests(record_dir, 1)) >= 4):
            assert time.time() < deadline and all(p.poll() is None for p in procs), \
                "\n".join(said(p)[-2000:] for p in procs)
            time.sleep(0.2)
        procs[1].send_signal(signal.SIGTERM)
        finish(procs, timeout=120)

    first, second = digests(record_dir, 0), digests(record_dir, 1)
    assert len(first) >= 4
    assert first == second  # the same number of updates, with the same params after each
    assert len(set(first)) == len(first)  # every update changed the params
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["learner_updates"] == len(first)
    assert summary["num_processes"] == 2 and summary["num_devices"] == 8
    assert summary["stopped_by"] == "a signal to learner process 1"
    # Process 0 counts both hosts' halves of every batch: one half holds at most 8 x 16 env
    # steps (fewer: autoreset steps are masked), so one host's alone could not reach this.
    assert 128 * len(first) < summary["env_steps"] <= 256 * len(first)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["learner_updates"] == len(first)
    assert sorted(os.listdir(run_dir)) == sorted(
        ["config.json", "metrics.jsonl", "summary.json", "checkpoints",
         *[n for n in os.listdir(run_dir) if n.startswith("events.")]])
    assert os.listdir(run_dir / "checkpoints") == [str(len(first))]  # the final one, by process 0

    # Resume on both hosts. Host 1 is given a path it does not have (on a pod only host 0
    # holds the run directory): process 0 reads the settings and the checkpoint for both.
    record_dir = tmp_path / "record2"
    budget = ["--total-env-steps", str(summary["env_steps"] + 1500)]
    procs = start_learners(cluster, tmp, run_dir, record_dir, [
        ["--resume", str(run_dir), *budget], ["--resume", str(tmp_path / "not-here"), *budget]],
        coordinator_port, run_dir_flag=False)
    outputs = finish(procs, timeout=180)
    for output in outputs:  # both start from the checkpoint's params, bitwise
        assert f"(update {len(first):,}, {summary['env_steps']:,} env steps; params sha256 " \
               f"{first[-1]})" in output, output[-3000:]
    resumed = digests(record_dir, 0)
    assert resumed and resumed == digests(record_dir, 1)
    summary2 = json.loads((run_dir / "summary.json").read_text())
    assert summary2["learner_updates"] == len(first) + len(resumed)
    assert summary2["env_steps"] >= summary["env_steps"] + 1500
    assert not (tmp_path / "not-here").exists()


@pytest.mark.slow
def test_two_learner_hosts_learn_cartpole_with_equal_params(two_node_cluster, tmp_path,
                                                            coordinator_port):
    cluster, tmp = two_node_cluster
    run_dir, record_dir = tmp_path / "run", tmp_path / "record"
    procs = start_learners(cluster, tmp, run_dir, record_dir, [RUN, RUN], coordinator_port)
    finish(procs, timeout=420)

    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["final_return"] >= 475 and summary["time_to_target_s"] is not None
    first, second = digests(record_dir, 0), digests(record_dir, 1)
    assert first == second and len(first) == summary["learner_updates"] > 20

    # One process over 8 devices, fed each update's two halves side by side, computes the
    # params both processes held.
    agent = agents.get("impala")
    spec = envs.make_spec("CartPole-v1")
    run = RunConfig(num_actors=2, envs_per_actor=8, batch_size=16, unroll_length=16)
    learner = Learner(agent.build(spec, agent.Config(), run), spec, devices.make_mesh(8), 0,
                      run.unroll_length, run.batch_size)
    structure = jax.tree.structure(learner.example)
    halves = [np.load(record_dir / f"process{i}.npz") for i in range(2)]
    n_leaves = structure.num_leaves
    for u in range(20):
        batch = jax.tree.unflatten(structure, [
            np.concatenate([h[f"batch{u}_leaf{j}"] for h in halves], axis=1)
            for j in range(n_leaves)])
        learner.update(learner.put(batch))
        for j, leaf in enumerate(jax.tree.leaves(learner.host_params())):
            np.testing.assert_array_equal(halves[0][f"params{u}_leaf{j}"],
                                          halves[1][f"params{u}_leaf{j}"])
            np.testing.assert_allclose(halves[0][f"params{u}_leaf{j}"], leaf, rtol=1e-4,
                                       atol=1e-5, err_msg=f"update {u} leaf {j}")
