"""Ray mode's start-up and stop: under one ``StopRequest`` (a SIGTERM may come while Ray
starts or the learner compiles), makes the run directory, compiles the learner beside
Ray's start, starts this host's actors and hands over to ``rltpu.driver.Loop``; a stop
before the actors start ends the run here, with its checkpoint. Ray is shut down on the
way out unless a notebook keeps it (``rltpu.cluster.keep_ray_up``).
"""
from __future__ import annotations

import concurrent.futures
import sys
import time

import ray

from rltpu import checkpoint, cluster, devices, envs, inference, session
from rltpu.actor import RayRolloutActor
from rltpu.cluster import connect, keep_ray_up
from rltpu.driver import Loop
from rltpu.faults import StopRequest
from rltpu.hosts import LearnerHosts
from rltpu.learner import Learner
from rltpu.metrics import run_start_time
from rltpu.plan import Plan
from rltpu.rundir import create_run_dir
from rltpu.run import Run


def train(plan: Plan, quiet: bool = False, resume: checkpoint.Restored | None = None,
          on_row=None) -> dict:
    """Ray mode's run of a validated plan (``rltpu.run.train``: what it stops on, writes
    and returns; ``on_row``, a ``rltpu.run.RowHook``)."""
    t_start = run_start_time()
    startup = {"imports": time.time() - t_start}  # seconds since the run's start, per phase
    hosts = LearnerHosts.current()
    # From the start: a preemption's SIGTERM may come while Ray starts or the learner
    # compiles, and the run must still end with its checkpoint within the grace period.
    with StopRequest() as stop:
        if hosts.primary:
            create_run_dir(plan, resume)
        run = plan.run
        # The learner initialises and compiles its update while Ray and the actors start:
        # both take seconds, and neither needs the other.
        # In a notebook, a run of the same settings as the last reuses its compiled programs.
        programs_key = session.settings_key(plan, resume, plan.num_devices)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            # (At the process's own CPU priority: a stop during start-up waits for this
            # compile, and at a lower one it would wait behind any other work.)
            learner = pool.submit(Learner, plan.fns, plan.spec,
                                  devices.make_mesh(plan.num_devices), run.seed,
                                  run.unroll_length, run.batch_size,
                                  session.learner_programs(programs_key))
            started_ray = stop.during_ray_init(lambda: connect(run.num_actors))
            startup["ray"] = time.time() - t_start
            try:
                if stop.requested:
                    return _stopped_at_start(plan, learner.result(), hosts, resume, stop, t_start)
                actors = _start_actors(plan, hosts, resume, fresh_ray=started_ray)
                loop = Loop(plan, learner.result(), actors, hosts, resume, stop, startup, quiet,
                            on_row, t_start=t_start)
                session.keep_learner_programs(programs_key, loop.learner.programs)
                return loop.train()
            finally:
                session.run_ended()
                # (ray.init may have been cut short by a stop.) In a notebook the next run
                # reuses the Ray this one started (``cluster.keep_ray_up``).
                if (started_ray and not keep_ray_up()) or stop.requested:
                    cluster.shutdown()


def _stopped_at_start(plan: Plan, learner: Learner, hosts: LearnerHosts,
                      resume: checkpoint.Restored | None, stop: StopRequest,
                      t_start: float) -> dict:
    """A stop before any actor started: the learner's state (a new run's initial one, so
    that ``--resume`` has a checkpoint to start from; a resumed run's is saved already)
    is saved and summarised without Ray."""
    no_faults = {"actor_restarts": 0, "dropped_unrolls": 0, "rejected_unrolls": 0}
    run = Run(plan, resume, t_start, lambda: no_faults, hosts.primary, quiet=True)
    if resume is not None:
        learner.restore(resume.state, resume.step)
    run.started()
    run.end(learner.version, learner.state)
    return run.summary(learner.version, stop.signal_name,
                       {"num_processes": hosts.count, "process_index": hosts.index,
                        "num_actors": plan.run.num_actors})


def _start_actors(plan: Plan, hosts: LearnerHosts, resume: checkpoint.Restored | None,
                  fresh_ray: bool = True) -> list:
    """This host's share of the rollout actors: in a notebook, the last run's when its
    settings were the same (``rltpu.session``), started over with this run's seeds."""
    run, agent = plan.run, plan.agent
    module = type(agent).__module__
    if module != "__main__" and not module.startswith("rltpu.agents."):
        # A user's agent travels to the actors by value, so its module need not be
        # importable there (it may live in a script or a folder only the driver sees).
        ray.cloudpickle.register_pickle_by_value(sys.modules[module])
    # A resumed run's actors get new seeds, so they do not replay the envs of the first leg.
    seed_offset = 0 if resume is None else resume.step
    # Actors ask for a CPU only (never a TPU): Ray may place them on any host of the
    # cluster, CPU-only ones included, and they pin their JAX to the CPU.
    ids = hosts.actor_ids(run.num_actors)
    seeds = [(run.seed * 10_000 + 1000 * (i + 1) + 7919 * seed_offset) % 2**31 for i in ids]
    if run.inference == "central":  # env actors: no agent, no JAX (rltpu.inference)
        return inference.start_env_actors(run, list(zip(ids, seeds)),
                                          envs.reward_discount(run, plan.agent_config))
    actor_class = RayRolloutActor.options(max_restarts=run.max_actor_restarts, max_task_retries=0)
    key = session.settings_key(plan, resume, *ids, actors=True)
    actors = session.take_actors(key, fresh_ray)
    if actors is not None:
        for actor, seed in zip(actors, seeds):
            actor.new_run.remote(seed)  # (runs after any request left from the last run)
    else:
        actors = [actor_class.remote(i, agent, plan.agent_config, run, seed)
                  for i, seed in zip(ids, seeds)]
    session.started(key, actors)
    return actors
