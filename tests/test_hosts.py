"""What each learner process owns, and the single-process case of their agreement (the
multi-process one runs in tests/test_multihost_train.py)."""
import numpy as np
from rltpu import devices
from rltpu.hosts import LearnerHosts


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
