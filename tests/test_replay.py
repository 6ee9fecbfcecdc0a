"""The replay buffer: prioritised sampling against a direct computation, its capacity bound,
and clear errors when it holds too little; the feed that fills it and samples from it, with
a replay actor on a real local Ray."""
import numpy as np
import pytest

from rltpu.feeds import ReplayFeed
from rltpu.replay import ReplayBuffer, ReplaySpec, SumTree, TooFewTransitions
from rltpu.types import Trajectory, Unroll


def identity_transitions(trajectory):
    """One transition per step of column 0, holding its index."""
    return {"value": np.asarray(trajectory.reward[:, 0], np.float32)}


def unroll(values):
    T = len(values)
    z = np.zeros((T, 1), bool)
    traj = Trajectory(np.zeros((T + 1, 1)), np.zeros((T, 1)), np.asarray(values, np.float32)[:, None],
                      z, z, ~z, {}, np.zeros((T, 1), np.int32))
    return Unroll(traj, np.zeros(0), np.zeros(0), 0, T, 0.0)


def buffer(capacity=100, alpha=0.6, beta=0.4, min_size=0):
    return ReplayBuffer(ReplaySpec(identity_transitions, capacity, 4, min_size, alpha, beta), seed=0)


def test_sum_tree_finds_the_interval_holding_each_mass():
    tree = SumTree(5)
    tree.set(np.arange(5), np.array([1.0, 0.0, 2.0, 3.0, 4.0]))
    assert tree.total == 10
    np.testing.assert_array_equal(tree.find(np.array([0.5, 1.5, 2.9, 3.1, 9.9])), [0, 2, 2, 3, 4])


def test_prioritised_probabilities_and_weights_match_a_direct_computation():
    rb = buffer(alpha=0.6, beta=0.4)
    rb.add(unroll(np.arange(10)))
    priorities = np.linspace(0.1, 2.0, 10)
    rb.update_priorities(np.arange(10), priorities)
    direct = priorities ** 0.6 / np.sum(priorities ** 0.6)
    np.testing.assert_allclose(rb.probabilities(np.arange(10)), direct, rtol=1e-12)

    sample = rb.sample(4)
    idx = sample["indices"]
    np.testing.assert_array_equal(sample["transitions"]["value"], idx)  # data matches indices
    w = (10 * direct[idx]) ** -0.4
    np.testing.assert_allclose(sample["weights"], w / w.max(), rtol=1e-6)

    counts = np.zeros(10)
    for _ in range(4000):
        np.add.at(counts, rb.sample(4)["indices"], 1)
    np.testing.assert_allclose(counts / counts.sum(), direct, atol=0.01)


def test_uniform_sampling_with_exponent_zero():
    rb = buffer(alpha=0.0)
    rb.add(unroll(np.arange(8)))
    rb.update_priorities(np.arange(8), np.arange(1, 9.0))
    np.testing.assert_allclose(rb.probabilities(np.arange(8)), 1 / 8)
    np.testing.assert_allclose(rb.sample(4)["weights"], 1.0)


def test_never_holds_more_than_capacity():
    rb = buffer(capacity=8)
    for start in range(0, 30, 5):
        rb.add(unroll(np.arange(start, start + 5)))
        assert rb.size <= 8
    assert rb.size == 8
    held = np.sort(rb._storage["value"])
    np.testing.assert_array_equal(held, np.arange(22, 30))  # the newest 8 of 30
    assert set(rb.sample(4)["indices"]) <= set(range(8))


def test_sampling_too_early_is_a_clear_error():
    rb = buffer(min_size=6)
    with pytest.raises(TooFewTransitions, match="replay holds 0 transitions; sampling needs at least 6"):
        rb.sample(4)
    rb.add(unroll(np.arange(5)))
    with pytest.raises(TooFewTransitions, match="holds 5 transitions"):
        rb.sample(4)
    rb.add(unroll([5.0]))
    assert len(rb.sample(4)["indices"]) == 4


class UnrollRefs:
    """The feed's side of the trajectory queue: ObjectRefs of finished unrolls (put in the
    real local Ray's object store, as actors' unrolls are), handed over by ``take_ready``."""

    def __init__(self, ray):
        self._ray, self.ready = ray, []

    def add(self, values):
        self.ready.append(self._ray.put(unroll(values)))

    def take_ready(self, block: bool) -> list:
        assert self.ready or not block, "the feed would wait for ever for an unroll"
        taken, self.ready = self.ready, []
        return taken


def replay_feed(queue, spec, seed):
    """The feed under test; its batches stay on the host (the loop hands them to the learner)."""
    return ReplayFeed(queue, spec, seed)


def test_replay_feed_inserts_samples_and_writes_priorities_back(ray_local):
    """Unrolls go into a replay actor on a real Ray, batches come out of it with their
    importance weights, and the priorities an update computes reach the buffer."""
    alpha = 0.6
    queue = UnrollRefs(ray_local)
    feed = replay_feed(queue, ReplaySpec(identity_transitions, 100, 4, 6, alpha, 0.4), seed=0)
    try:
        queue.add(np.arange(0, 5))  # transition i holds the value i, at buffer index i
        queue.add(np.arange(5, 10))
        sample, arrivals = feed.next()
        assert [a.env_steps for a in arrivals] == [5, 5] and not queue.ready
        sampled = np.asarray(sample["transitions"]["value"]).astype(int)
        assert sampled.shape == (4,) and set(sampled) <= set(range(10))
        np.testing.assert_array_equal(sample["weights"], 1.0)  # equal priorities so far

        # The update's priorities go back for the sampled transitions.
        feed.after_update({"priorities": sampled + 1.0, "loss": 0.5})
        priorities = np.ones(10)  # new transitions' priority: the largest so far (1)
        priorities[sampled] = sampled + 1.0
        direct = priorities ** alpha / np.sum(priorities ** alpha)
        held = ray_local.get(feed.replay.probabilities.remote(np.arange(10)))
        np.testing.assert_allclose(held, direct, rtol=1e-12)

        # What arrives next gets the largest priority written back, and is sampled from.
        queue.add([10.0, 11.0])
        sample, arrivals = feed.next()
        assert [a.env_steps for a in arrivals] == [2]
        priorities = np.append(priorities, [priorities.max()] * 2)
        direct = priorities ** alpha / np.sum(priorities ** alpha)
        held = ray_local.get(feed.replay.probabilities.remote(np.arange(12)))
        np.testing.assert_allclose(held, direct, rtol=1e-12)
        indices = np.asarray(sample["transitions"]["value"]).astype(int)
        w = (12 * direct[indices]) ** -0.4
        np.testing.assert_allclose(sample["weights"], w / w.max(), rtol=1e-6)
    finally:
        ray_local.kill(feed.replay)
