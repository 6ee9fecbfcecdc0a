"""What each learner process owns, and the single-process case of their agreement (the
multi-process one runs in tests/test_multihost_train.py)."""
import contextlib

import numpy as np
import pytest

from rltpu import devices, hosts
from rltpu.hosts import LearnerHosts
from tests.processes import metadata_server, reserved_port


def test_each_host_owns_a_share_of_the_actors_and_of_each_batch():
    hosts = [LearnerHosts(i, 3) for i in range(3)]
    assert [h.actor_ids(7) for h in hosts] == [[0, 3, 6], [1, 4], [2, 5]]
    assert [h.share(48) for h in hosts] == [16, 16, 16]
    assert [h.primary for h in hosts] == [True, False, False]


def test_one_process_agrees_with_itself():
    host = LearnerHosts(0, 1)
    agreed = host.agree(True, 120, np.array([9.0, 21.0]), max_episodes=4)
    assert agreed.stop_by == (0,) and agreed.env_steps == 120
    np.testing.assert_array_equal(agreed.episode_returns, [9.0, 21.0])
    assert host.agree(False, 0, np.zeros(0), max_episodes=4).stop_by == ()
    # the bound is for the gathered arrays of several processes; one has none to gather
    assert len(host.agree(False, 10, np.ones(5), max_episodes=4).episode_returns) == 5
    host.check_same({"batch_size": 16})  # nothing to compare with


def test_all_processes_stacks_this_process_alone():
    gathered = devices.all_processes({"counts": np.array([1, 2], np.int32)})
    np.testing.assert_array_equal(gathered["counts"], [[1, 2]])


TPU_VM = {"agent-worker-number": "2", "tpu-env": "ACCELERATOR_TYPE: 'v4-32'\nWORKER_ID: '2'\n",
          "worker-network-endpoints": "w-0:0:10.130.0.9,w-1:1:10.130.0.7,w-2:2:10.130.0.8,"
                                      "w-3:3:10.130.0.6"}


@contextlib.contextmanager
def tpu_vm(changes: dict, monkeypatch):
    """A TPU VM's metadata (``TPU_VM`` with ``changes``; None drops a key) served on loopback,
    ``GCE_METADATA_IP`` pointing at it; ``JAX_COORDINATOR_PORT`` among the changes is set
    in the environment instead."""
    attributes = {**TPU_VM, **changes}
    if "JAX_COORDINATOR_PORT" in attributes:
        monkeypatch.setenv("JAX_COORDINATOR_PORT", attributes.pop("JAX_COORDINATOR_PORT"))
    with metadata_server({k: v for k, v in attributes.items() if v is not None}) as address:
        monkeypatch.setenv("GCE_METADATA_IP", address)
        yield


@pytest.mark.parametrize("case,changes,expected", [
    ("triples", {}, ("10.130.0.9:8482", 4, 2)),
    ("host names", {"worker-network-endpoints": "t1k-w-0,t1k-w-1,t1k-w-2"},
     ("t1k-w-0:8482", 3, 2)),
    ("JAX's port variable", {"JAX_COORDINATOR_PORT": "9001"}, ("10.130.0.9:9001", 4, 2)),
    ("no worker number (a GCE VM, not a TPU VM)", {"agent-worker-number": None}, None),
    ("multislice: JAX decides", {"tpu-env": "MEGASCALE_COORDINATOR_ADDRESS: '10.1.0.2'\n"},
     None),
])
def test_a_tpu_vms_metadata_names_the_slice(case, changes, expected, monkeypatch):
    with tpu_vm(changes, monkeypatch):
        assert hosts.cloud_tpu_cluster() == expected, case


def test_no_metadata_server_is_no_tpu_vm(monkeypatch):
    with reserved_port() as port:  # (held, never listening: every connection is refused)
        monkeypatch.setenv("GCE_METADATA_IP", f"127.0.0.1:{port}")
        assert hosts.cloud_tpu_cluster(tries=2) is None


@pytest.mark.parametrize("changes,error", [
    ({"worker-network-endpoints": "w-0:0:10.0.0.1,w-1:10.0.0.2"},
     "--distributed auto: the TPU VM's worker-network-endpoints entry 'w-1:10.0.0.2' is "
     "neither NAME:ID:IP nor a host name"),
    ({"agent-worker-number": "4"},
     "--distributed auto: the TPU VM says it is worker 4 of 4 (worker-network-endpoints: 4 hosts)"),
    ({"JAX_COORDINATOR_PORT": "http"}, "JAX_COORDINATOR_PORT='http' is not a port from 1 to 65535"),
])
def test_a_metadata_fault_is_one_line(changes, error, monkeypatch):
    with tpu_vm(changes, monkeypatch):
        with pytest.raises(ValueError) as raised:
            hosts.cloud_tpu_cluster()
    assert str(raised.value) == error
