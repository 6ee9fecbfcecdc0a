"""JAX's persistent compilation cache: a run fills it (learner and actors), and a second
run with the same agent and shapes loads its programs instead of compiling them."""
import os
import warnings

import jax

from rltpu import agents
import rltpu
from rltpu import devices

CACHE_HIT = "/jax/compilation_cache/cache_hits"


def train(run_dir, cache):
    agent = agents.get("impala")
    run = rltpu.RunConfig(env="rltpu.envs.fake:CountingEnv", run_dir=str(run_dir), num_devices=1,
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


def test_the_cache_keeps_to_its_size_bound(tmp_path):
    """Past its bound the cache evicts the least recently used programs: with room for
    about two of five programs, the programs on disk stay within the bound."""
    cache = tmp_path / "xla"

    def entries():
        return [f for f in cache.iterdir() if f.name.endswith("-cache")]

    devices.use_compilation_cache(str(cache), max_bytes=10**9)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)  # these compile fast
    try:
        programs = [jax.jit(lambda x, k=k: jax.numpy.sin(x) * k + x ** k) for k in range(5)]
        x = jax.numpy.ones(3)
        programs[0](x).block_until_ready()
        one = max(f.stat().st_size for f in entries() if f.name.startswith("jit__lambda"))
        bound = int(2.5 * one)
        devices.use_compilation_cache(str(cache), max_bytes=bound)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
        assert jax.config.jax_compilation_cache_max_size == bound
        for f in programs[1:]:
            f(x).block_until_ready()
        assert sum(f.stat().st_size for f in entries()) <= bound
        assert 1 <= sum(f.name.startswith("jit__lambda") for f in entries()) <= 2
    finally:
        devices.use_compilation_cache(None)


def test_a_program_without_a_last_use_time_does_not_stop_the_cache(tmp_path):
    """JAX's bounded cache fails every write once one program in it has no last-use time
    (written without a bound, or by a process killed between its two files); rltpu dates
    such programs when it opens the cache, and new programs are cached again."""
    cache = tmp_path / "xla"
    cache.mkdir()
    (cache / "jit_old-0123-cache").write_bytes(b"a program written without a bound")
    devices.use_compilation_cache(str(cache))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)  # this compiles fast
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # JAX warns when a write fails
            jax.jit(lambda x: jax.numpy.cos(x) * 3.0 + 1.0)(jax.numpy.ones(3)).block_until_ready()
        names = {f.name for f in cache.iterdir()}
        assert "jit_old-0123-atime" in names
        assert any(n.startswith("jit__lambda") and n.endswith("-cache") for n in names)
    finally:
        devices.use_compilation_cache(None)
