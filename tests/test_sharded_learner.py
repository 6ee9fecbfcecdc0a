"""The data-parallel learner on 8 CPU devices gives the 1-device result."""
import dataclasses

import jax
import numpy as np
import pytest

from rltpu import agents
from rltpu.config import RunConfig
from rltpu import envs
from rltpu import devices
from rltpu.learner import Learner, example_replay_sample
from tests.test_impala_loss import random_batch


def run_updates(num_devices, batches, spec, fns):
    learner = Learner(fns, spec, devices.make_mesh(num_devices), seed=3, unroll_length=8,
                      batch_size=16)
    metrics = [devices.to_host(learner.update(learner.put(b))) for b in batches]
    return devices.to_host(learner.state.params), metrics, learner


def assert_same_updates(fns, params_1, metrics_1, params_8, metrics_8) -> None:
    """The 8-device updates equal the 1-device ones (params and every metric), none was
    skipped, and they moved the params away from their initial values (a check that
    learning happened, so equal-because-untouched cannot pass)."""
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
                 params_1, params_8)
    for m1, m8 in zip(metrics_1, metrics_8):
        for name in m1:
            np.testing.assert_allclose(m1[name], m8[name], rtol=2e-5, atol=2e-6, err_msg=name)
    assert not any(m["update_skipped"] for m in metrics_8)
    initial = devices.to_host(jax.jit(fns.init)(jax.random.key(3)).params)
    assert any(not np.allclose(a, b) for a, b in zip(jax.tree.leaves(initial),
                                                      jax.tree.leaves(params_8)))


# Every pair of values of the three settings (the agent and its minibatches, the action
# space, the network library) is a case once: six cases, not all twelve combinations, each
# two compiles of a few seconds. How the batch is split and the gradients averaged does not
# depend on all three at once.
@pytest.mark.parametrize("agent_name,minibatches,env_id,network_lib", [
    ("impala", None, "CartPole-v1", "flax"), ("impala", None, "Pendulum-v1", "haiku"),
    ("ppo", 4, "CartPole-v1", "haiku"), ("ppo", 4, "Pendulum-v1", "flax"),
    ("ppo", 1, "CartPole-v1", "flax"), ("ppo", 1, "Pendulum-v1", "haiku")])
def test_eight_devices_equal_one(agent_name, minibatches, env_id, network_lib):
    assert devices.device_count() == 8, "conftest asks for 8 CPU devices"
    agent = agents.get(agent_name)
    spec = envs.make_spec(env_id)
    config = agent.Config(network_lib=network_lib)
    if minibatches:  # several epochs of shuffled minibatches (or the whole batch) in one update
        config = dataclasses.replace(config, num_epochs=3, num_minibatches=minibatches)
    fns = agent.build(spec, config, RunConfig(unroll_length=8, batch_size=16))
    params = jax.eval_shape(fns.init, jax.random.key(0)).params
    batches = [random_batch(fns, spec, params, T=8, B=16, seed=s) for s in range(3)]

    params_1, metrics_1, _ = run_updates(1, batches, spec, fns)
    params_8, metrics_8, learner_8 = run_updates(8, batches, spec, fns)

    assert jax.tree.leaves(learner_8.state.params)[0].sharding.mesh.size == 8
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(params_8))
    assert_same_updates(fns, params_1, metrics_1, params_8, metrics_8)


@pytest.mark.parametrize("agent_name,minibatches,core,network_lib,env_id", [
    ("impala", None, "lstm", "flax", "CartPole-v1"), ("impala", None, "gru", "haiku", "Pendulum-v1"),
    ("ppo", 4, "gru", "haiku", "CartPole-v1"), ("ppo", 1, "lstm", "flax", "Pendulum-v1")])
def test_recurrent_eight_devices_equal_one(agent_name, minibatches, core, network_lib, env_id):
    # The start states [1, B, ...] are split over the devices with their sequences, and
    # PPO's minibatches of whole sequences are gathered across them.
    agent = agents.get(agent_name)
    spec = envs.make_spec(env_id)
    config = agent.Config(network_lib=network_lib, core=core, core_size=16)
    if minibatches:
        config = dataclasses.replace(config, num_epochs=2, num_minibatches=minibatches)
    fns = agent.build(spec, config, RunConfig(unroll_length=8, batch_size=16))
    params = jax.eval_shape(fns.init, jax.random.key(0)).params
    batches = [random_batch(fns, spec, params, T=8, B=16, seed=s) for s in range(2)]
    assert batches[0].start.core_state["h"].shape == (1, 16, 16)
    params_1, metrics_1, _ = run_updates(1, batches, spec, fns)
    params_8, metrics_8, learner_8 = run_updates(8, batches, spec, fns)
    shards = learner_8.put(batches[0]).start.core_state["h"].addressable_shards
    assert len(shards) == 8 and all(s.data.shape == (1, 2, 16) for s in shards)
    assert_same_updates(fns, params_1, metrics_1, params_8, metrics_8)


def test_batch_is_split_over_the_data_axis():
    agent = agents.get("impala")
    spec = envs.make_spec("CartPole-v1")
    fns = agent.build(spec, agent.Config(), RunConfig())
    params = jax.eval_shape(fns.init, jax.random.key(0)).params
    learner = Learner(fns, spec, devices.make_mesh(8), 0, 8, 16)
    batch = learner.put(random_batch(fns, spec, params, T=8, B=16))
    shards = batch.reward.addressable_shards
    assert len(shards) == 8 and all(s.data.shape == (8, 2) for s in shards)


@pytest.mark.parametrize("network_lib", ["flax", "haiku"])
def test_dqn_eight_devices_equal_one(network_lib):
    agent = agents.get("dqn")
    spec = envs.make_spec("CartPole-v1")
    run = RunConfig(unroll_length=8, batch_size=16)
    fns = agent.build(spec, agent.Config(network_lib=network_lib, sample_size=32,
                                         target_update_period=2), run)
    params = jax.eval_shape(fns.init, jax.random.key(0)).params
    example = example_replay_sample(fns, spec, params, run.unroll_length)
    rng = np.random.default_rng(0)

    def sample():
        s = jax.tree.map(lambda x: rng.normal(size=x.shape).astype(x.dtype), example)
        s["transitions"]["action"] = rng.integers(0, 2, 32).astype(s["transitions"]["action"].dtype)
        s["weights"] = rng.random(32).astype(np.float32)
        return s

    batches = [sample() for _ in range(3)]
    results = []
    for n in (1, 8):
        learner = Learner(fns, spec, devices.make_mesh(n), 3, run.unroll_length, run.batch_size)
        metrics = [devices.to_host(learner.update(learner.put(b))) for b in batches]
        results.append((devices.to_host(learner.state.params), metrics))
    (p1, m1), (p8, m8) = results
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), p1, p8)
    for a, b in zip(m1, m8):
        np.testing.assert_allclose(a["priorities"], b["priorities"], rtol=2e-5, atol=2e-6)
    # the target network was copied at update 2, so after update 3 it differs from online
    online, target = jax.tree.leaves(p8["online"]), jax.tree.leaves(p8["target"])
    assert any(not np.allclose(o, t) for o, t in zip(online, target))


@pytest.mark.parametrize("network_lib,burn_in", [("flax", 3), ("haiku", 0)])
def test_r2d2_eight_devices_equal_one(network_lib, burn_in):
    # Replayed sequences [N, T, ...] with their start states are split on N.
    agent = agents.get("r2d2")
    spec = envs.make_spec("CartPoleNoVel-v1")
    run = RunConfig(env="CartPoleNoVel-v1", unroll_length=8, batch_size=16)
    fns = agent.build(spec, agent.Config(network_lib=network_lib, sample_size=16, core_size=16,
                                         burn_in=burn_in, target_update_period=2), run)
    params = jax.eval_shape(fns.init, jax.random.key(0)).params
    example = example_replay_sample(fns, spec, params, run.unroll_length)
    assert example["transitions"]["observation"].shape == (16, 9, 2)
    assert example["transitions"]["start"].core_state["h"].shape == (16, 16)
    rng = np.random.default_rng(0)

    def sample():
        def fill(x):
            if x.dtype == np.bool_:
                return rng.random(x.shape) < 0.1
            if np.issubdtype(x.dtype, np.integer):
                return rng.integers(0, 2, x.shape).astype(x.dtype)
            return rng.normal(size=x.shape).astype(x.dtype)
        s = jax.tree.map(fill, example)
        s["transitions"]["valid"] = ~s["transitions"]["valid"]
        s["weights"] = rng.random(16).astype(np.float32)
        return s

    batches = [sample() for _ in range(3)]
    results = []
    for n in (1, 8):
        learner = Learner(fns, spec, devices.make_mesh(n), 3, run.unroll_length, run.batch_size)
        metrics = [devices.to_host(learner.update(learner.put(b))) for b in batches]
        results.append((devices.to_host(learner.state.params), metrics))
    (p1, m1), (p8, m8) = results
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), p1, p8)
    for a, b in zip(m1, m8):
        assert a["priorities"].shape == (16,) and (a["priorities"] > 0).all()
        np.testing.assert_allclose(a["priorities"], b["priorities"], rtol=2e-5, atol=2e-6)
        np.testing.assert_allclose(a["loss"], b["loss"], rtol=2e-5, atol=2e-6)
    online, target = jax.tree.leaves(p8["online"]), jax.tree.leaves(p8["target"])
    assert any(not np.allclose(o, t) for o, t in zip(online, target))
