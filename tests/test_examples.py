"""The examples do what their docstrings say."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import rltpu
from examples import anakin_gymnax, load_policy, multi_seed
from examples.a2c import A2C
from examples.custom_env import Corridor
from examples.nnx_a2c import NNXA2C
from rltpu import envs, evaluate, plot


def test_custom_env_is_a_gymnasium_env_whose_target_is_reachable():
    check_env(Corridor(), skip_render_check=True)
    env = Corridor()
    env.reset(seed=0)
    total, done = 0.0, False
    while not done:  # always right: the shortest way, 7 steps
        _, reward, terminated, truncated, _ = env.step(1)
        total, done = total + reward, terminated or truncated
    assert total == pytest.approx(1.0 - 0.07) and total >= 0.9  # the docstring's target
    spec = envs.make_spec("examples.custom_env:Corridor")
    assert spec.observation_space.shape == (8,) and spec.num_actions == 2


def test_nnx_a2c_is_a2c_with_an_nnx_network():
    spec = envs.make_spec("CartPole-v1")
    run = rltpu.RunConfig(on_policy=True)
    config = NNXA2C.Config()
    nnx_fns, haiku_fns = NNXA2C().build(spec, config, run), A2C().build(spec, config, run)
    nnx_state, haiku_state = nnx_fns.init(jax.random.key(0)), haiku_fns.init(jax.random.key(0))
    # Same shapes of weights (two 64-wide tanh MLPs, policy and value), other libraries.
    shapes = lambda tree: sorted(x.shape for x in jax.tree.leaves(tree))  # noqa: E731
    assert shapes(nnx_state.params) == shapes(haiku_state.params)
    assert "flax" in type(nnx_state.params).__module__
    observation = jnp.zeros((3, 4), jnp.float32)
    out = jax.jit(nnx_fns.actor_step)(nnx_state.params, observation, jax.random.key(1))
    assert out.action.shape == (3,) and out.extras["logits"].shape == (3, 2)
    T, B = 4, 3
    trajectory = rltpu.Trajectory(
        observation=jnp.ones((T + 1, B, 4)), action=jnp.zeros((T, B), jnp.int32),
        reward=jnp.ones((T, B)), terminated=jnp.zeros((T, B), bool),
        truncated=jnp.zeros((T, B), bool), valid=jnp.ones((T, B), bool),
        extras={"logits": jnp.zeros((T, B, 2))}, policy_version=jnp.zeros((T, B), jnp.int32))
    new_state, metrics = jax.jit(nnx_fns.update)(nnx_state, trajectory)
    assert np.isfinite(float(metrics["loss"])) and int(new_state.step) == 1
    moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), nnx_state.params,
                         new_state.params)
    assert max(jax.tree.leaves(moved)) > 0


@pytest.mark.slow
def test_anakin_example_learns(tmp_path):
    summary = anakin_gymnax.main(total_env_steps=400_000, run_dir=str(tmp_path / "run"))
    assert summary["mode"] == "anakin" and summary["env_steps"] >= 400_000
    assert summary["final_return"] > 100  # a random policy scores about 20


@pytest.mark.slow
def test_load_policy_example_plays_as_rltpu_eval(tmp_path):
    from rltpu import agents
    agent = agents.get("impala")
    run_dir = str(tmp_path / "run")
    rltpu.train(agent, agent.Config(), rltpu.RunConfig(total_env_steps=30_000, target_return=None,
                                                       run_dir=run_dir), quiet=True)
    returns = load_policy.play(run_dir, episodes=3, seed=7)
    report = evaluate.play(rltpu.load(run_dir), episodes=3, seed=7)
    assert returns == report["returns"]  # the same greedy policy on the same episodes


@pytest.mark.slow
def test_multi_seed_example_plots_the_seeds_as_one_configuration(tmp_path):
    out = multi_seed.main("ppo", seeds=2, total_env_steps=6_000, root=str(tmp_path))
    with open(out, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    runs = [plot.load_run(str(tmp_path / "seeds-ppo" / f"seed-{i}")) for i in range(2)]
    assert runs[0].group == runs[1].group  # seeds differ only in the seed: one curve, shaded
