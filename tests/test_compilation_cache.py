"""JAX's persistent compilation cache: a run fills it (learner and actors), and a second
run with the same agent and shapes loads its programs instead of compiling them."""
import os

import jax

import agents
import rltpu
from rltpu import devices

CACHE_HIT = "/jax/compilation_cache/cache_hits"


def train(run_dir, cache):
    agent = agents.get("impala")
    run = rltpu.RunConfig(env="envs.fake:CountingEnv", run_dir=str(run_dir), num_devices=1,
                          num_actors=1, envs_per_actor=4, batch_size=4, unroll_length=8,
                          total_env_steps=400, target_return=None, compilation_cache=cache)
    return rltpu.train(agent, agent.Config(hidden_sizes=(16,)), run, quiet=True)


def test_second_run_loads_compiled_programs_from_the_cache(ray_local, tmp_path):
    cache = tmp_path / "xla"
    hits = []
    jax.monitoring.register_event_listener(
        lambda event, **_: hits.append(event) if event == CACHE_HIT else None)
    try:
        train(tmp_path / "first", str(cache))
        first_hits, written = len(hits), sorted(os.listdir(cache))
        # The learner's init and update (this process), the policy step (the actor's).
        assert any(name.startswith("jit_init") for name in written), written
        assert any(name.startswith("jit_step") for name in written), written
        train(tmp_path / "second", str(cache))
        assert len(hits) - first_hits >= 2  # init and update loaded, not compiled
        # Turned off, a run neither reads nor writes it.
        before, files = len(hits), sorted(os.listdir(cache))
        train(tmp_path / "third", None)
        assert len(hits) == before and sorted(os.listdir(cache)) == files
        assert jax.config.jax_compilation_cache_dir is None
    finally:
        devices.use_compilation_cache(None)
