"""Learner processes placed by Ray (``rltpu train --learner-hosts N``) on a Ray cluster of two
nodes that each declare 4 TPU chips (CPU devices stand in for them): one learner per node,
joined with jax.distributed, in lockstep, and the driver's signal reaches both."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import psutil
import pytest

from rltpu.placement import FAILURE_GRACE_S
from tests.processes import ended, said
from tests.test_multihost import ROOT
from tests.test_multihost_train import RUN, digests, pod_env


@pytest.fixture(scope="module")
def two_tpu_hosts():
    tmp = tempfile.mkdtemp(prefix="rtpl", dir="/tmp")
    os.environ["RAY_TMPDIR"] = tmp
    from ray.cluster_utils import Cluster

    from rltpu import cluster as connecting
    connecting.force_token_auth()  # as on a real cluster: rltpu joins with a token, always
    connecting.private_token_file()
    node = {"num_cpus": 2, "resources": {"TPU": 4}, "node_ip_address": "127.0.0.1"}
    cluster = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
    cluster.add_node(**node)
    yield cluster, tmp
    cluster.shutdown()
    os.environ.pop("RAY_TMPDIR", None)
    shutil.rmtree(tmp, ignore_errors=True)


def driver(cluster, tmp, record_dir, *args):
    return subprocess.Popen([sys.executable, "-m", "rltpu.cli", "train", "--learner-hosts", "2",
                             *RUN, "--env", "rltpu.envs.fake:CountingEnv", *args],
                            env=pod_env(cluster.address, tmp, record_dir), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def learners():
    """The learner processes of this test's runs: Ray starts them (on the cluster's nodes,
    here this test process's children's children), so they are found among this process's
    descendants, never among the machine's."""
    found = []
    for p in psutil.Process().children(recursive=True):
        try:
            cmdline = p.cmdline()
        except psutil.Error:
            continue  # ended meanwhile
        # (started through the installed rltpu command: python .../bin/rltpu train ...)
        started = any(arg.endswith(os.sep + "rltpu") for arg in cmdline[:2])
        if started and "train" in cmdline and "--process-id" in cmdline:
            found.append(p)
    return found


def test_a_cluster_without_tpu_hosts_is_one_line_and_exit_2(ray_local, tmp_path):
    env = {**os.environ, "PYTHONPATH": ROOT,
           "RAY_ADDRESS": ray_local.get_runtime_context().gcs_address}
    result = subprocess.run([sys.executable, "-m", "rltpu.cli", "train", "--learner-hosts", "2",
                             "--run-dir", str(tmp_path / "run")], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == (
        "rltpu: error: --learner-hosts: no node of the Ray cluster has TPU resources; start "
        "Ray on the TPU hosts (python -m launch.tpu ray does) or name the resources a learner "
        "host holds with --learner-resources")
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_ray_places_one_learner_per_tpu_host_and_a_signal_stops_both(two_tpu_hosts, tmp_path):
    cluster, tmp = two_tpu_hosts
    run_dir, record_dir = tmp_path / "run", tmp_path / "record"
    proc = driver(cluster, tmp, record_dir, "--run-dir", str(run_dir), "--target-return", "none",
                  "--total-env-steps", "10000000")
    with ended(proc):
        deadline = time.time() + 300
        while not ((record_dir / "process1.digests").exists() and len(digests(record_dir, 1)) >= 3):
            assert time.time() < deadline and proc.poll() is None, said(proc)[-4000:]
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)  # to the driver alone: it tells both learners
        output, _ = proc.communicate(timeout=180)
    assert proc.returncode == 0, output[-4000:]
    (line,) = [x for x in output.splitlines() if "2 learner processes started by Ray on" in x]
    nodes = re.findall(r"\(node (\w+)\)", line.split("; coordinator")[0])
    assert len(nodes) == 2 and len(set(nodes)) == 2  # one per host, each holding its 4 "chips"
    first, second = digests(record_dir, 0), digests(record_dir, 1)
    assert len(first) >= 3 and first == second
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["num_processes"] == 2 and summary["num_devices"] == 8
    assert summary["learner_updates"] == len(first)
    assert summary["stopped_by"] is not None
    assert os.listdir(run_dir / "checkpoints") == [str(len(first))]


@pytest.mark.slow
def test_a_learner_that_dies_ends_the_run_with_its_status(two_tpu_hosts, tmp_path):
    """Learner process 1 is killed mid-run: the driver says so and exits with a failure's
    status, leaving no learner behind. Process 0 either fails on its own (gloo aborts when
    its peer's socket closes under a read; or its watchdog names process 1 lost, within
    about --peer-timeout-s, 10 s here) or is stopped after the grace period (30 s); which
    one is a race, and all must end the run."""
    cluster, tmp = two_tpu_hosts
    record_dir = tmp_path / "record"
    proc = driver(cluster, tmp, record_dir, "--run-dir", str(tmp_path / "run"),
                  "--target-return", "none", "--total-env-steps", "10000000",
                  "--peer-timeout-s", "10")
    with ended(proc):
        deadline = time.time() + 300
        while not ((record_dir / "process1.digests").exists() and len(digests(record_dir, 1)) >= 2):
            assert time.time() < deadline and proc.poll() is None, said(proc)[-4000:]
            time.sleep(0.2)
        (victim,) = [p for p in learners() if p.cmdline()[-1] == "1"]
        victim.kill()
        output, _ = proc.communicate(timeout=FAILURE_GRACE_S + 120)
    assert proc.returncode > 128, output[-4000:]  # a learner's death by a signal: 128 + N
    (endings,) = re.findall(r"rltpu: learner processes ended: (.*)", output)
    # (or process 0 names the lost process 1 itself and exits with status 1: the
    # watchdog's --peer-timeout-s races the grace period)
    assert re.fullmatch(r"0 \((stopped|status 1|status -\d+)\), 1 \(status -9\)", endings), endings
    assert not learners()
