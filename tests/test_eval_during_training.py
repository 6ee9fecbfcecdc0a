"""Evaluation during training (``--eval-every-updates``): rows at the right cadence, the
summary's final and best returns, the same episodes as ``rltpu eval`` for the same params
and seeds, and a Ray-mode learner that does not wait for its evaluator."""
import json

import jax
import numpy as np
import pytest

import rltpu
from rltpu import agents, envs, evaluate, evaluation, plot
from rltpu.config import RunConfig
from rltpu.envs import jax_envs
from rltpu.policy import Policy

SMALL_PPO = dict(num_epochs=2, num_minibatches=2, hidden_sizes=(16,))


def rows_of(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_anakin_run_evaluates_every_n_updates(tmp_path):
    """On a mesh of 2 devices (the params replicated, as training holds them)."""
    pytest.importorskip("gymnax")
    agent = agents.get("ppo")
    run = RunConfig(mode="anakin", agent="ppo", env="gymnax:CartPole-v1", batch_size=8,
                    unroll_length=16, updates_per_call=2, target_return=None,
                    total_env_steps=1200, run_dir=str(tmp_path / "run"), num_devices=2,
                    eval_every_updates=4, eval_episodes=3, checkpoint_every_minutes=None)
    summary = rltpu.train(agent, agent.Config(**SMALL_PPO), run, quiet=True)
    rows = rows_of(tmp_path / "run")
    evals = [r for r in rows if "eval/return" in r]
    updates = summary["learner_updates"]
    # Calls of 2 updates: due at each multiple of 4, and the final params once more (unless
    # the last call ended on a multiple, which was just evaluated).
    expected = list(range(4, updates + 1, 4)) + ([] if updates % 4 == 0 else [updates])
    assert [r["eval/learner_updates"] for r in evals] == expected
    for r in evals:
        assert r["eval/episodes"] == 3
        assert 1 <= r["eval/return"] <= 500 and r["eval/return_std"] >= 0  # CartPole-v1's range
        assert r["env_steps"] == r["eval/env_steps"] > 0  # Anakin: evaluated between calls
    # Each row sits after the training row of its update (the same env steps).
    training = {r["learner_updates"]: r["env_steps"] for r in rows if "learner_updates" in r}
    assert all(training.get(r["eval/learner_updates"], r["env_steps"]) == r["env_steps"]
               for r in evals)
    returns = [r["eval/return"] for r in evals]
    assert summary["final_eval_return"] == pytest.approx(returns[-1])
    assert summary["best_eval_return"] == pytest.approx(max(returns))
    assert summary["best_eval_return"] >= summary["final_eval_return"]
    on_disk = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert on_disk["best_eval_return"] == pytest.approx(max(returns))
    # rltpu plot reads them apart from the training curve
    curves = plot.load_run(str(tmp_path / "run"))
    assert list(curves.eval_return) == pytest.approx(returns)
    assert not np.isnan(curves.env_sps[1:]).any()  # eval rows do not break the throughput
    plot.plot([str(tmp_path / "run")], str(tmp_path / "curves.png"))


def test_no_evaluation_by_default(tmp_path):
    pytest.importorskip("gymnax")
    agent = agents.get("ppo")
    run = RunConfig(mode="anakin", agent="ppo", env="gymnax:CartPole-v1", batch_size=8,
                    unroll_length=16, updates_per_call=2, target_return=None,
                    total_env_steps=300, run_dir=str(tmp_path / "run"), num_devices=1)
    summary = rltpu.train(agent, agent.Config(**SMALL_PPO), run, quiet=True)
    assert summary["final_eval_return"] is None and summary["best_eval_return"] is None
    assert not any("eval/return" in r for r in rows_of(tmp_path / "run"))


def _one_episode_at_a_time(env, spec, fns, params, episodes, seed):
    """Greedy episodes of a JAX env stepped from Python, one jitted step at a time (what
    ``rltpu eval`` did before the compiled evaluation): episode ``i`` resets with
    ``jax.random.key(seed + i)`` and splits its key every step."""
    import jax.numpy as jnp
    from rltpu import recurrent
    greedy = evaluate.policy_step(fns)

    @jax.jit
    def step(key, state, observation, core, context):
        action, core = greedy(params, observation[None], key, core, context)
        out = env.step(key, state, action[0])
        if context is not None:
            context = recurrent.next_context(context, action, out.reward[None].astype(jnp.float32),
                                             jnp.zeros(1, bool))
        return out, core, context

    returns, lengths = [], []
    for i in range(episodes):
        key = jax.random.key(seed + i)
        observation, state = env.reset(key)
        core, context = evaluate._initial(fns, spec)
        total, length, done = 0.0, 0, False
        while not done:
            key, step_key = jax.random.split(key)
            out, core, context = step(step_key, state, observation, core, context)
            observation, state = out.observation, out.state
            total, length = total + float(out.reward), length + 1
            done = bool(out.terminated) or bool(out.truncated)
        returns.append(total)
        lengths.append(length)
    return returns, lengths


@pytest.mark.parametrize("core,init_key", [("none", 7), ("gru", 5)])
def test_compiled_greedy_evaluation_plays_as_rltpu_eval(core, init_key):
    """The Anakin evaluation (every episode at once, compiled) gives the returns ``rltpu
    eval`` gives (``play``) for the same params and seeds, and the episodes of a Python loop
    stepping one episode at a time (the same resets, keys and core states)."""
    pytest.importorskip("gymnax")
    agent = agents.get("ppo")
    config = agent.Config(**SMALL_PPO, core=core)
    run = RunConfig(mode="anakin", agent="ppo", env="gymnax:CartPole-v1", batch_size=8)
    env, spec = jax_envs.make(run.env)
    fns = agent.build(spec, config, run)
    # Untrained params whose greedy episodes differ by seed (9-60 steps): long episodes may
    # meet a near-tie of the two actions, which a batch of 6 and one of 1 can round apart.
    params = fns.init(jax.random.key(init_key)).params
    episodes, seed = 6, 321
    returns, lengths, ended = evaluation.make_jax_evaluation(fns, env, spec, episodes)(params, seed)
    assert bool(np.all(ended))
    if core == "none":  # (``Policy`` does not take a recurrent agent yet)
        played = evaluate.play(Policy(agent, config, run, spec, params), episodes, seed=seed)
        assert list(np.asarray(returns)) == played["returns"]
        assert list(np.asarray(lengths)) == played["lengths"]
    loop_returns, loop_lengths = _one_episode_at_a_time(env, spec, fns, params, episodes, seed)
    assert list(np.asarray(returns)) == loop_returns
    assert list(np.asarray(lengths)) == loop_lengths
    assert len(set(loop_lengths)) > 1  # the seeds make different episodes


@pytest.mark.parametrize("core", ["none", "lstm"])
def test_ray_evaluator_plays_as_rltpu_eval(core):
    """The evaluation actor's class (in this process) and ``rltpu.evaluate.play`` give the
    same returns for the same params and seeds; a sampled policy gives others."""
    agent = agents.get("ppo")
    config = agent.Config(**SMALL_PPO, core=core)
    run = RunConfig(agent="ppo", env="CartPole-v1", eval_every_updates=1, eval_episodes=5)
    spec = envs.make_spec(run.env)
    params = agent.build(spec, config, run).init(jax.random.key(3)).params
    result = evaluation.Evaluator(agent, config, run).evaluate(9, params, 77)
    if core == "none":
        played = evaluate.play(Policy(agent, config, run, spec, params), 5, seed=77)
    else:  # (``Policy`` does not take a recurrent agent yet: play's own episode loop)
        played = dict(zip(("returns", "lengths"), evaluate.EpisodePlayer(
            agent.build(spec, config, run), spec).play(envs.make_one(run.env), params, 5, 77)))
    assert result["version"] == 9 and result["returns"] == played["returns"]
    assert result["lengths"] == played["lengths"]
    sampled = evaluation.Evaluator(agent, config, RunConfig(
        agent="ppo", env="CartPole-v1", eval_every_updates=1, eval_episodes=5,
        eval_policy="sample")).evaluate(9, params, 77)
    assert sampled["returns"] != played["returns"]


def test_evaluator_plays_with_a_rollout_actors_observation_statistics(ray_local):
    """--normalize-observations: the evaluator plays with the statistics of a rollout
    actor (the Ray actor's, asked for by ref), frozen, as ``EpisodePlayer`` on an env
    normalised by them; its own fresh statistics give other returns, and a ref that fails
    leaves it the statistics it has."""
    from rltpu.actor import RayRolloutActor
    from rltpu.envs.make import normalize_one
    agent = agents.get("ppo")
    config = agent.Config(**SMALL_PPO)
    run = RunConfig(agent="ppo", env="Pendulum-v1", envs_per_actor=2, unroll_length=64,
                    normalize_observations=True, eval_every_updates=1, eval_episodes=2)
    spec = envs.make_spec(run.env)
    fns = agent.build(spec, config, run)
    params = fns.init(jax.random.key(1)).params
    actor = RayRolloutActor.remote(0, agent, config, run, 5)
    ray_local.get(actor.set_params.remote(0, params))
    ray_local.get(actor.unroll_with_current.remote())  # 64 steps: statistics of its own
    statistics = ray_local.get(actor.observation_statistics.remote())
    assert statistics["count"] == pytest.approx(2 * 65 + 1e-4)

    own = evaluation.Evaluator(agent, config, run).evaluate(4, params, 11)
    evaluator = evaluation.RayEvaluator.remote(agent, config, run)
    result = ray_local.get(evaluator.evaluate_boxed.remote(
        4, params, 11, [actor.observation_statistics.remote()]))
    frozen = normalize_one(envs.make_one(run.env))
    frozen.statistics.load(statistics)
    returns, lengths = evaluate.EpisodePlayer(fns, spec).play(frozen, params, 2, 11)
    assert result["returns"] == returns and result["lengths"] == lengths
    assert own["returns"] != returns
    ray_local.kill(actor)
    again = ray_local.get(evaluator.evaluate_boxed.remote(
        4, params, 11, [actor.observation_statistics.remote()]))
    assert again["returns"] == returns  # the statistics it had, still frozen
    ray_local.kill(evaluator)


def test_schedule_by_updates_and_time():
    by_updates = evaluation.EvalSchedule(RunConfig(eval_every_updates=10), version=3, now=0.0)
    assert not by_updates.due(9, 1e9) and by_updates.due(10, 0.0) and by_updates.due(14, 0.0)
    by_updates.started(14, 0.0)  # the next is at the next multiple, 20
    assert not by_updates.due(19, 0.0) and by_updates.due(20, 0.0)
    by_time = evaluation.EvalSchedule(RunConfig(eval_every_s=5.0), version=0, now=100.0)
    assert not by_time.due(10**6, 104.9) and by_time.due(0, 105.0)


@pytest.mark.parametrize("normalize", [False, True])
def test_ray_run_evaluates_without_holding_the_learner(tmp_path, ray_local, normalize):
    """An evaluation long next to an update (20 greedy episodes for each one) is asked for
    after every update: the learner goes on updating while it plays, so evaluations are
    fewer than updates and their results land at later env steps than their params'. With
    --normalize-observations each also asks actor 0 for its statistics."""
    agent = agents.get("ppo")
    run = RunConfig(agent="ppo", env="CartPole-v1", num_actors=2, envs_per_actor=8,
                    batch_size=16, unroll_length=16, total_env_steps=20_000,
                    target_return=None, num_devices=1, run_dir=str(tmp_path / "run"),
                    eval_every_updates=1, eval_episodes=20, log_every_s=0.5,
                    checkpoint_every_minutes=None, normalize_observations=normalize)
    summary = rltpu.train(agent, agent.Config(**SMALL_PPO), run, quiet=True)
    evals = [r for r in rows_of(tmp_path / "run") if "eval/return" in r]
    updates = summary["learner_updates"]
    assert len(evals) >= 2, evals
    assert len(evals) < updates  # evaluations due while one ran were not waited for
    assert any(r["env_steps"] > r["eval/env_steps"] for r in evals[:-1])
    versions = [r["eval/learner_updates"] for r in evals]
    assert versions == sorted(versions) and versions[-1] == updates  # the final params, last
    assert all(r["eval/episodes"] == 20 and 1 <= r["eval/return"] <= 500 for r in evals)
    assert summary["final_eval_return"] == pytest.approx(evals[-1]["eval/return"])
    assert summary["best_eval_return"] == pytest.approx(max(r["eval/return"] for r in evals))


@pytest.mark.parametrize("live", [False, True])
def test_progress_shows_an_eval_row_on_a_line_of_its_own(live):
    import io
    from rltpu.progress import Progress
    stream = io.StringIO()
    progress = Progress(1000, stream=stream, live=live)
    progress.update({"time_s": 3.0, "env_steps": 512, "eval/return": 187.5,
                     "eval/return_std": 12.25, "eval/episodes": 10,
                     "eval/learner_updates": 40, "eval/env_steps": 480})
    text = stream.getvalue()
    assert "eval return 187.5 +- 12.2 over 10 episodes" in text
    assert "update 40" in text and "480 steps" in text and text.endswith("\n")
