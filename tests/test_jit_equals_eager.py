"""Each built-in agent's update gives the same state and metrics compiled (jax.jit) as run
op by op (jax.disable_jit): a small batch, one update."""
import jax
import numpy as np
import pytest

from rltpu import agents
from rltpu import envs
from rltpu.config import RunConfig
from rltpu.learner import example_replay_sample
from tests.test_impala_loss import random_batch

T, B = 8, 4


def dqn_sample(fns, spec, params):
    rng = np.random.default_rng(0)
    example = example_replay_sample(fns, spec, params, T)
    sample = jax.tree.map(lambda x: rng.normal(size=x.shape).astype(x.dtype), example)
    n = fns.replay.sample_size
    sample["transitions"]["action"] = rng.integers(0, spec.num_actions, n).astype(
        sample["transitions"]["action"].dtype)
    sample["transitions"]["bootstrap_discount"] = rng.choice([0.0, 0.9], n).astype(np.float32)
    sample["weights"] = rng.random(n).astype(np.float32)
    return sample


@pytest.mark.parametrize("agent_name,env_id,settings", [
    ("impala", "CartPole-v1", {}),
    ("impala", "Pendulum-v1", {}),
    ("ppo", "CartPole-v1", {"num_epochs": 2, "num_minibatches": 2}),
    ("ppo", "Pendulum-v1", {"num_epochs": 2, "num_minibatches": 2}),
    ("dqn", "CartPole-v1", {"sample_size": 16, "target_update_period": 1}),
])
def test_update_with_and_without_jit(agent_name, env_id, settings):
    agent = agents.get(agent_name)
    spec = envs.make_spec(env_id)
    fns = agent.build(spec, agent.Config(hidden_sizes=(16,), **settings),
                      RunConfig(unroll_length=T, batch_size=B, envs_per_actor=B))
    state = jax.jit(fns.init)(jax.random.key(0))
    batch = (dqn_sample(fns, spec, state.params) if agent_name == "dqn"
             else random_batch(fns, spec, state.params, T=T, B=B))

    compiled_state, compiled = jax.jit(fns.update)(state, batch)
    with jax.disable_jit():
        eager_state, eager = fns.update(state, batch)

    assert int(compiled_state.step) == int(eager_state.step) == int(state.step) + 1
    assert set(compiled) == set(eager)
    for name in compiled:
        np.testing.assert_allclose(eager[name], compiled[name], rtol=1e-4, atol=1e-6, err_msg=name)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                 eager_state.params, compiled_state.params)
    # and the update did something
    assert any(not np.allclose(a, b) for a, b in zip(jax.tree.leaves(state.params),
                                                      jax.tree.leaves(compiled_state.params)))
