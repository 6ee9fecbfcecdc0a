"""What one Python process keeps between runs in a notebook: the rollout actors and the
learner's compiled programs.

A notebook's ``rltpu.train`` leaves Ray up (``rltpu.cluster.keep_ray_up``); this keeps
the run's actors up too, with their envs, their imported JAX and their compiled policy
step, so that the next run *of the same settings* (all but where and when it stops, logs,
checkpoints and evaluates, and its seed: ``settings_key``) starts them over with new seeds
(``RolloutActor.new_run``) instead of starting new processes: the largest part of a
second run's time to its first batch. A run of other
settings, a resumed run, or a run after Ray was restarted gets new actors, and the kept
ones are killed first (they hold a CPU each). The learner's compiled init and update
(``rltpu.learner.LearnerPrograms``) are kept likewise, for the same settings on the same
number of devices. Outside a notebook nothing is kept.

Only the driver's process uses it (``rltpu.startup`` and ``rltpu.driver``).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import ray

from rltpu.cluster import keep_ray_up

_kept: tuple[Any, list] | None = None  # (settings key, actor handles) of the last run's actors
_handed_out: tuple[Any, list] | None = None  # the running run's, kept when it ends well


# Settings only the runtime reads (when to stop, log, checkpoint and evaluate; where):
# they change neither an actor's acting nor the learner's programs.
RUNTIME_ONLY = ("run_dir", "seed", "target_return", "log_every_s", "wandb", "plan_steps",
                "checkpoint_every_updates", "checkpoint_every_minutes", "keep_checkpoints",
                "keep_best", "max_nonfinite_updates", "eval_every_updates", "eval_every_s",
                "eval_episodes", "eval_policy")


def settings_key(plan, resume, *extra, actors: bool = False) -> tuple | None:
    """What must be equal for a run to reuse the last run's actors (``actors``) or learner
    programs: the agent (its class, so a notebook cell run again is new), its config, the
    run settings but ``RUNTIME_ONLY``, and ``extra`` (the actors' ids, the device count).
    A built-in agent's actors act the same whatever ``total_env_steps`` (only its learning
    rate schedule reads it), so for them it is left out too. None: never reuse (outside a
    notebook, resuming, or an env imported from a module path, whose code may have changed
    on disk since the actors imported it)."""
    run = plan.run
    if resume is not None or ":" in run.env or not keep_ray_up():
        return None
    ignored = dict.fromkeys(RUNTIME_ONLY)
    if actors and type(plan.agent).__module__.startswith("rltpu.agents."):
        ignored["total_env_steps"] = None
    settings = {k: v for k, v in dataclasses.asdict(run).items() if k not in ignored}
    return (type(plan.agent), plan.agent.name, plan.agent_config, tuple(settings.items()),
            extra)


def take_actors(key, fresh_ray: bool) -> list | None:
    """The last run's actors if ``key`` is theirs and Ray was not restarted since
    (``fresh_ray``); else None, and the kept actors are killed."""
    global _kept
    kept, _kept = _kept, None
    if kept is None:
        return None
    kept_key, actors = kept
    if key is not None and kept_key == key and not fresh_ray:
        return actors
    if not fresh_ray and ray.is_initialized():  # (a new Ray never knew them)
        for actor in actors:
            ray.kill(actor)
    return None


def started(key, actors: list) -> None:
    """Notes the running run's actors and their key (None: not to be kept)."""
    global _handed_out
    _handed_out = None if key is None else (key, actors)


def keep_actors(actors: list) -> bool:
    """Keeps ``actors`` for the next run if they are the running run's and may be kept;
    returns whether it did (the caller kills them otherwise)."""
    global _kept, _handed_out
    handed_out, _handed_out = _handed_out, None
    if handed_out is None or handed_out[1] is not actors:
        return False
    _kept = handed_out
    return True


def run_ended() -> None:
    """Forgets the running run's actors unless ``keep_actors`` kept them (a run that
    failed or was stopped leaves its actors to Ray, as before)."""
    global _handed_out
    _handed_out = None


_programs: tuple[Any, Any] | None = None  # (settings key, LearnerPrograms) of the last run


def learner_programs(key):
    """The last run's learner programs if ``key`` (``settings_key``'s, with the device
    count) is theirs; else None."""
    if key is None or _programs is None or _programs[0] != key:
        return None
    return _programs[1]


def keep_learner_programs(key, programs) -> None:
    """Keeps ``programs`` for the next run of settings ``key`` (nothing if None)."""
    global _programs
    _programs = None if key is None else (key, programs)
