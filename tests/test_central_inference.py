"""Central inference (``--inference central``): env actors without JAX, the learner host
choosing the actions. Real Ray, real JAX, real gymnasium envs."""
import json
import re
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from rltpu import agents, devices, envs
from rltpu.actor import RolloutActor
from rltpu.config import RunConfig
from rltpu.env_actor import RayEnvActor
from rltpu.faults import ActorSupervisor
from rltpu.inference import CentralQueue, ServedParams, make_batched_policy  # noqa: F401

IMPALA = agents.get("impala")
JAX_MODULES = ("jax", "jaxlib", "flax", "optax", "chex", "orbax")


def initial_params(agent, agent_config, run):
    fns = agent.build(envs.make_spec(run.env, **run.env_options()), agent_config, run)
    return fns, devices.to_host(jax.jit(fns.init)(jax.random.key(3)).params)


def central_queue(actors, fns, params, run, **kwargs):
    served = ServedParams()
    served.publish(0, params)
    initial_state = None
    if fns.initial_core_state is not None:
        from rltpu import recurrent
        spec = envs.make_spec(run.env, **run.env_options())

        def initial_state(n):
            return (jax.tree.map(np.asarray, fns.initial_core_state(n)),
                    recurrent.initial_context(spec, n))
    return CentralQueue(actors, served, fns.actor_step, initial_state,
                        unroll_length=run.unroll_length, envs_per_actor=run.envs_per_actor,
                        max_in_flight=run.max_in_flight, **kwargs)


def test_env_actors_never_import_jax(ray_local):
    run = RunConfig(env="CartPole-v1", envs_per_actor=2, batch_size=2)
    actor = RayEnvActor.remote(0, run, 1)
    seed, observation = ray_local.get(actor.first_observation.remote())
    ray_local.get(actor.step.remote(np.zeros(2, np.int64)))
    loaded = ray_local.get(actor.loaded_modules.remote())
    assert "rltpu.env_actor" in loaded and "gymnasium" in loaded  # (the check looks where it should)
    assert [m for m in loaded if m.split(".")[0] in JAX_MODULES] == []
    assert seed == 1 and observation.shape == (2, 4)
    ray_local.kill(actor)


def test_importing_the_env_side_loads_no_jax():
    code = ("import sys, rltpu.env_actor, rltpu; from rltpu import RunConfig, Trajectory; "
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {JAX_MODULES!r}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": os.getcwd() + os.pathsep + _repo()},
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
    # and the public names that need JAX still load on first use
    out = subprocess.run([sys.executable, "-c", "import rltpu; print(rltpu.networks.__name__, "
                          "rltpu.recurrent.is_recurrent.__name__)"], capture_output=True,
                         text=True, env={**os.environ, "PYTHONPATH": _repo()}, timeout=120)
    assert out.stdout.split() == ["rltpu.networks", "is_recurrent"], out.stderr


def _repo():
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("core", [None, "lstm"], ids=["feedforward", "recurrent"])
def test_central_and_actor_inference_give_the_same_trajectories(ray_local, core):
    """The same seeds and params: rollout actors acting themselves and env actors served
    centrally (two actors batched into one call) make the same unrolls: bitwise the same
    observations, actions, rewards and returns, the network's outputs and core states to
    float32 rounding."""
    run = RunConfig(env="CartPole-v1", envs_per_actor=3, unroll_length=25, batch_size=3,
                    num_actors=2)
    config = IMPALA.Config() if core is None else IMPALA.Config(core=core, core_size=8)
    fns, params = initial_params(IMPALA, config, run)
    seeds = [101, 202]
    expected = {}
    for actor_id, seed in enumerate(seeds):
        actor = RolloutActor(actor_id, IMPALA, config, run, seed)
        actor.set_params(0, params)
        expected[actor_id] = [actor.unroll_with_current() for _ in range(3)]

    actors = [RayEnvActor.remote(i, run, seed) for i, seed in enumerate(seeds)]
    queue = central_queue(actors, fns, params, run, on_policy=True)
    got = {0: [], 1: []}
    try:
        # Unrolls come as each actor finishes one, in any order: take three of each.
        for _ in range(20):
            for unroll in queue.get(2):
                got[unroll.actor_id].append(unroll)
            if min(map(len, got.values())) >= 3:
                break
        assert queue.inference_calls < queue.served_steps  # actors were batched together
    finally:
        queue.close()
        for actor in actors:
            ray_local.kill(actor)
    for actor_id in (0, 1):
        assert len(got[actor_id]) >= 3
        for mine, theirs in zip(got[actor_id][:3], expected[actor_id]):
            assert mine.actor_id == theirs.actor_id and mine.env_steps == theirs.env_steps
            np.testing.assert_array_equal(mine.episode_returns, theirs.episode_returns)
            np.testing.assert_array_equal(mine.episode_lengths, theirs.episode_lengths)
            leaves = jax.tree_util.tree_leaves_with_path(theirs.trajectory)
            assert len(leaves) == len(jax.tree.leaves(mine.trajectory))
            for (path, want), have in zip(leaves, jax.tree.leaves(mine.trajectory)):
                assert have.dtype == want.dtype and have.shape == want.shape, path
                key = jax.tree_util.keystr(path)
                if np.issubdtype(want.dtype, np.floating) and ("extras" in key
                                                               or "core_state" in key):
                    # the network's outputs and core state: a batch of six rows may round
                    # differently from one of three (JAX 0.7.2's CPU kernels: up to 1 ulp)
                    np.testing.assert_allclose(have, want, rtol=1e-5, atol=1e-7, err_msg=key)
                else:
                    np.testing.assert_array_equal(have, want, err_msg=key)
    # episodes ended inside the unrolls: the autoreset steps were compared too
    assert any(not u.trajectory.valid.all() for u in got[0] + got[1])


def slow_and_fast_actors(step_s, max_restarts=0):
    """Actor 0 sleeps ``step_s`` per step, actor 1 is fast."""
    def run(sleep):
        return RunConfig(env="tests.slow_envs:SleepyCountingEnv", envs_per_actor=2,
                         unroll_length=4, batch_size=2, num_actors=2,
                         env_kwargs=json.dumps({"step_s": sleep}))
    actor_class = RayEnvActor.options(max_restarts=max_restarts, max_task_retries=0)
    return run(0.0), [actor_class.remote(0, run(step_s), 5), actor_class.remote(1, run(0.0), 6)]


def test_bounded_wait_leaves_a_slow_actor_behind(ray_local):
    run, actors = slow_and_fast_actors(step_s=1.0)
    fns, params = initial_params(IMPALA, IMPALA.Config(), run)
    queue = central_queue(actors, fns, params, run)
    try:
        queue.get(1)  # compiled, both actors up
        start = time.perf_counter()
        got = [u.actor_id for _ in range(8) for u in queue.get(1)]
        elapsed = time.perf_counter() - start
    finally:
        queue.close()
        for actor in actors:
            ray_local.kill(actor)
    # 8 unrolls of 4 steps: 32 rounds. Waiting for the slow actor each round would take
    # 32 s; the fast actor makes them while the slow one makes a step or a few.
    assert got.count(1) >= 7, got
    assert elapsed < 12.0, elapsed


def test_an_env_actor_killed_mid_request_is_restarted_and_serving_goes_on(ray_local):
    run, actors = slow_and_fast_actors(step_s=0.5, max_restarts=3)
    fns, params = initial_params(IMPALA, IMPALA.Config(), run)
    restarted = []
    supervisor = ActorSupervisor(actors, 3, on_restart=restarted.append)
    queue = central_queue(actors, fns, params, run, supervisor=supervisor)
    try:
        first = [u.actor_id for u in queue.get(3)]
        pid = ray_local.get(actors[0].pid.remote())
        time.sleep(0.2)  # actor 0 sleeps inside a step (0.5 s each): its request is in flight
        os.kill(pid, signal.SIGKILL)
        got = []
        deadline = time.time() + 120
        while 0 not in got[-4:] or not restarted:
            assert time.time() < deadline, (got, restarted)
            got += [u.actor_id for u in queue.get(1)]
    finally:
        queue.close()
        for actor in actors:
            ray_local.kill(actor)
    assert queue.dropped >= 1  # the unroll actor 0 was filling is lost, never half-sent
    assert restarted and restarted[0] != pid
    assert supervisor.total_restarts >= 1
    assert 1 in first + got


def test_central_with_anakin_is_refused_in_one_line_before_anything_starts(tmp_path):
    out = subprocess.run([sys.executable, "-m", "rltpu.cli", "train", "--mode", "anakin",
                          "--env", "gymnax:CartPole-v1", "--inference", "central",
                          "--run-dir", str(tmp_path / "run")],
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": _repo()})
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "rltpu: error: --inference central is for --mode ray (Anakin mode acts on the learner's "
        "devices already); use --inference actor"]
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_central_inference_learns_cartpole_through_a_killed_env_actor(tmp_path, ray_dir):
    """The real CLI with ``--inference central``: it reaches 475, evaluates, checkpoints,
    and goes on after an env actor's process is killed mid-run."""
    import psutil

    from rltpu.faults import rollout_actor_processes
    from tests.test_faults import train_cli

    run_dir = tmp_path / "run"
    proc = train_cli(["--inference", "central", "--run-dir", str(run_dir), "--eval-every-s", "5",
                      "--eval-episodes", "2", "--checkpoint-every-updates", "50",
                      "--log-every-s", "1"], tmp_path, ray_dir)
    killed = []

    def kill_one_env_actor_once_training():
        while proc.poll() is None and not killed:
            time.sleep(0.5)
            metrics = run_dir / "metrics.jsonl"
            if not (metrics.exists() and metrics.read_text().strip()):
                continue  # training has not started
            try:
                victims = [p for p in rollout_actor_processes(proc.pid)
                           if "RayEnvActor" in " ".join(p.cmdline())]
                if victims:
                    victims[0].send_signal(signal.SIGKILL)
                    killed.append(victims[0].pid)
            except psutil.Error:
                pass

    import threading
    killer = threading.Thread(target=kill_one_env_actor_once_training, daemon=True)
    killer.start()
    from tests.test_faults import outputs
    out, err = outputs(proc, timeout=900)
    killer.join()
    assert proc.returncode == 0, err[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["final_return"] >= 475, summary["final_return"]
    assert summary["bottleneck"]["inference"] == "central"
    assert 0 < summary["bottleneck"]["learner_host"]["inference"] < 1
    # killed a second or two into training, and reaching 475 takes longer
    assert killed and summary["actor_restarts"] >= 1, (killed, err[-3000:])
    assert re.search(r"actor \d died .*; Ray restarts it", err), err[-3000:]
    assert summary["dropped_unrolls"] >= 1  # the unroll it was filling
    assert summary["mean_policy_lag"] >= 0 and summary["learner_updates"] > 10
    assert (run_dir / "checkpoints").is_dir() and os.listdir(run_dir / "checkpoints")
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any("eval/return" in row for row in rows)


from tests.test_multihost_train import two_node_cluster  # noqa: E402,F401 -- a fixture


@pytest.mark.slow
def test_each_learner_host_of_a_simulated_pod_serves_its_own_env_actors(
        two_node_cluster, tmp_path, coordinator_port):
    """2 learner processes x 4 CPU devices, one env actor each, ``--inference central``:
    each host's server acts for its own actor, and the hosts stay in lockstep (bitwise
    equal params after every update) while they learn CartPole."""
    from tests.test_multihost_train import RUN, digests, finish, start_learners
    cluster, tmp = two_node_cluster
    run_dir, record_dir = tmp_path / "run", tmp_path / "record"
    args = [*RUN, "--inference", "central"]
    procs = start_learners(cluster, tmp, run_dir, record_dir, [args, args], coordinator_port)
    finish(procs, timeout=600)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["final_return"] >= 475 and summary["time_to_target_s"] is not None
    assert summary["bottleneck"]["inference"] == "central"
    first, second = digests(record_dir, 0), digests(record_dir, 1)
    assert first == second and len(first) == summary["learner_updates"] > 20
