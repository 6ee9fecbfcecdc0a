"""A notebook's next ``rltpu.train`` of the same settings reuses the last run's rollout
actors (``rltpu.session``), started over with its own seeds, and its learner's compiled
programs; other settings get new ones and the kept actors are killed. Real Ray, real
training."""
import time

import psutil
import ray

import rltpu
from rltpu import agents, progress, session
from rltpu.config import RunConfig

PPO = agents.get("ppo")


def kept_pids() -> list[int]:
    assert session._kept is not None, "the run's actors were not kept"
    return ray.get([actor.pid.remote() for actor in session._kept[1]])


def test_same_settings_reuse_the_actors_others_start_new_ones(ray_local, tmp_path, monkeypatch):
    monkeypatch.setattr(progress, "in_jupyter_kernel", lambda: True)  # as in a notebook
    monkeypatch.setattr(session, "_kept", None)
    monkeypatch.setattr(session, "_programs", None)

    def run(name, seed=0, **settings):
        settings = {"total_env_steps": 2048, "target_return": None, **settings}
        config = RunConfig(run_dir=str(tmp_path / name), seed=seed, num_actors=1,
                           compilation_cache=None, **settings)
        return rltpu.train(PPO, PPO.Config(), config, quiet=True)

    first = run("first")
    pids = kept_pids()
    programs = session._programs[1]  # the learner's compiled init and update
    assert ray.is_initialized()  # (Ray stays up in a notebook)
    second = run("second", seed=5)
    assert kept_pids() == pids  # the same actor process acted for the second run
    assert session._programs[1] is programs  # and the learner compiled nothing
    for summary in (first, second):
        assert summary["env_steps"] >= 2048 and summary["learner_updates"] >= 1
        assert summary["rejected_unrolls"] == 0  # new_run reset the version tags

    # Another step budget and target (as the Colab notebook's second run has): the same
    # actor (a built-in agent acts the same whatever the budget), but the learner's
    # programs are new (its learning-rate schedule reads the budget).
    third = run("third", total_env_steps=3072, target_return=600.0)
    assert kept_pids() == pids and third["env_steps"] >= 3072
    assert third["rejected_unrolls"] == 0
    assert session._programs[1] is not programs

    fourth = run("fourth", envs_per_actor=8)  # other settings: a new actor, the old one killed
    new_pids = kept_pids()
    assert new_pids != pids and fourth["env_steps"] >= 2048
    deadline = time.time() + 30
    while any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
              for p in pids) and time.time() < deadline:
        time.sleep(0.5)
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
                   for p in pids)
    for actor in session._kept[1]:
        ray.kill(actor)
    session._kept = None


def test_outside_a_notebook_nothing_is_kept(ray_local, tmp_path, monkeypatch):
    monkeypatch.setattr(session, "_kept", None)
    monkeypatch.setattr(session, "_programs", None)
    rltpu.train(PPO, PPO.Config(), RunConfig(run_dir=str(tmp_path / "run"), num_actors=1,
                                             total_env_steps=1024, target_return=None,
                                             compilation_cache=None), quiet=True)
    assert session._kept is None and session._handed_out is None and session._programs is None
