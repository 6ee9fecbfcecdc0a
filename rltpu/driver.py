"""``train``: envs -> actors -> trajectory queue -> learner -> versioned params -> actors.

The driver process is the learner. On a pod slice every host runs one (see
``rltpu.hosts``): each owns its share of the actors and of every batch, they decide
together when to stop, and only process 0 writes the run directory. Everything is checked
(``validate``) before Ray starts, so a bad setting costs nothing.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime
import os
import sys
import threading
import time
from typing import Any

import jax
import numpy as np
import psutil
import ray

from rltpu import envs
from rltpu.envs import jax_envs
from rltpu import checkpoint, devices, report, sinks
from rltpu.actor import RayRolloutActor
from rltpu.agent import Agent
from rltpu.config import RunConfig
from rltpu.faults import ActorsExhaustedError, ActorSupervisor, StopRequest
from rltpu.feeds import ReplayFeed, TrajectoryFeed
from rltpu.hosts import LearnerHosts, UpdateRecorder
from rltpu.learner import Learner
from rltpu.metrics import (EpisodeWindow, MemoryMonitor, process_start_time, run_counters,
                           whole_run, write_json)
from rltpu.transport import ParamStore, UnrollQueue
from rltpu.types import EnvSpec
from rltpu.validation import NonFiniteGuard, NonFiniteUpdatesError, UnrollValidator, unroll_example


@dataclasses.dataclass(frozen=True)
class Plan:
    """What ``validate`` established: everything ``train`` needs before it starts processes."""

    spec: EnvSpec
    num_devices: int
    run_dir: str


def check_env_and_agent(agent: Agent, agent_config: Any, run: RunConfig):
    """The env's spec and the agent's functions for it (nothing compiles, no device is
    asked), or a ValueError naming what does not fit."""
    if run.mode == "anakin":
        if not jax_envs.is_jax_env(run.env):
            raise ValueError(f"--mode anakin needs a JAX env, {jax_envs.PREFIX}NAME (e.g. "
                             f"{jax_envs.PREFIX}CartPole-v1); got --env {run.env!r}, which "
                             "--mode ray steps")
        if run.normalize_observations:
            raise ValueError("--normalize-observations is not supported in --mode anakin; "
                             "use --mode ray")
        _, spec = jax_envs.make(run.env)
    elif jax_envs.is_jax_env(run.env):
        raise ValueError(f"--env {run.env!r} is a JAX env: train it with --mode anakin "
                         "(--mode ray steps gymnasium envs, e.g. CartPole-v1)")
    else:
        spec = envs.make_spec(run.env, **envs.run_options(run))
    agent.check_spec(spec)
    fns = agent.build(spec, agent_config, run)  # raises on bad combinations
    if run.mode == "anakin" and fns.replay is not None:
        raise ValueError(f"--agent {agent.name} learns from a replay buffer, which --mode anakin "
                         "does not have; train it with --mode ray")
    return spec, fns


def validate(agent: Agent, agent_config: Any, run: RunConfig, resume: bool = False) -> Plan:
    """Checks the settings against the env, the agent and the devices; starts nothing.

    Raises:
      ValueError: naming the bad value and what would be valid.
    """
    if os.environ.get("RAY_AUTH_MODE", "").strip().lower() == "disabled":
        raise ValueError("RAY_AUTH_MODE=disabled: rltpu runs Ray only with token authentication "
                         "(anyone who can reach a Ray cluster can run code on it); unset it")
    cache = run.compilation_cache
    if cache is not None and os.path.exists(os.path.expanduser(cache)) and not os.path.isdir(
            os.path.expanduser(cache)):
        raise ValueError(f"--compilation-cache {cache!r} is not a directory; give a directory "
                         "(made if missing) or none")
    spec, fns = check_env_and_agent(agent, agent_config, run)
    available = devices.device_count()
    num_devices = run.num_devices or available
    if num_devices > available:
        raise ValueError(f"--num-devices {num_devices} but only {available} "
                         f"{devices.platform()} devices are present")
    processes = devices.process_count()
    if processes > 1:
        if fns.replay is not None:
            raise ValueError(f"--agent {agent.name} learns from a replay buffer, which is not "
                             "split over learner processes yet; use a trajectory agent "
                             "(impala, ppo) or one learner process")
        if num_devices != available:
            raise ValueError(f"--num-devices {num_devices}: {processes} learner processes use "
                             f"every device of every host, {available}")
        if run.batch_size % (processes * run.envs_per_actor):
            raise ValueError(f"--batch-size {run.batch_size} must be a multiple of "
                             f"{processes} learner processes x --envs-per-actor "
                             f"{run.envs_per_actor} (each host feeds whole unrolls)")
        if run.num_actors < processes:
            raise ValueError(f"--num-actors {run.num_actors} is fewer than the {processes} "
                             f"learner processes; each needs at least one actor")
    if fns.replay is not None and fns.replay.sample_size % num_devices:
        raise ValueError(f"--sample-size {fns.replay.sample_size} is not divisible by the "
                         f"{num_devices} learner devices; use a multiple of {num_devices}")
    if run.batch_size % num_devices:
        raise ValueError(f"--batch-size {run.batch_size} is not divisible by the {num_devices} "
                         f"learner devices; use a multiple of {num_devices}"
                         + (" (in --mode anakin it is the number of envs, split over them)"
                            if run.mode == "anakin" else ""))
    if run.mode == "anakin" and devices.process_count() > 1:
        raise ValueError(f"--mode anakin runs on one host; {devices.process_count()} learner "
                         "processes were started (use --mode ray for a multi-host learner)")
    if devices.process_index() != 0:
        run_dir = run.run_dir or "(process 0's run directory)"  # only process 0 writes it
    elif run.run_dir is not None:
        run_dir = run.run_dir
        if resume:
            if not os.path.isdir(run_dir):
                raise ValueError(f"--resume {run_dir}: no such run directory")
        elif os.path.exists(run_dir):
            raise ValueError(f"--run-dir {run_dir} already exists; runs are never overwritten, "
                             "pass a new path")
    elif resume:
        raise ValueError("resuming needs the run directory")
    else:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        base = os.path.join("runs", f"{agent.name}-{run.env.replace('/', '_').replace(':', '_')}-{stamp}")
        run_dir, n = base, 1
        while os.path.exists(run_dir):
            run_dir, n = f"{base}-{n}", n + 1
    if run.wandb:
        sinks.check_wandb()
    return Plan(spec, num_devices, run_dir)


def _start_ray(num_actors: int) -> bool:
    """Starts a local Ray (loopback only, no dashboard) unless one is already connected;
    returns whether this call started it."""
    if ray.is_initialized():
        return False
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"])
        return True
    start_local_ray(max(num_actors, os.cpu_count() or 1))
    return True


def start_local_ray(num_cpus: int) -> None:
    """Starts a Ray of this machine alone, with every port on loopback and no dashboard.

    Ray rewrites a node address of 127.0.0.1 to the machine's routable address and binds its
    gRPC servers to all interfaces; its switch for single-machine Ray (the default on macOS
    and Windows) keeps every listening socket on loopback instead. The switch is read when
    ``ray`` is imported, hence the module attribute too; the environment carries it to Ray's
    processes.

    Token authentication stays on, as Ray (>= 2.52) sets it for a new local cluster; rltpu
    chooses it explicitly (RAY_AUTH_MODE=token), which is all that keeps Ray from saying so
    on stderr with an invitation to opt out.

    Ray starts its head processes (GCS, raylet) with ``subprocess`` and a ``preexec_fn``, so
    Python runs its fork hooks, and JAX's (installed once its backend is up: validation has
    counted the devices, as it must before any process starts) warns that a fork in a
    multithreaded process may deadlock. Not this one: between fork and exec the child runs
    only Ray's ``preexec_fn``, two system calls (``pthread_sigmask``, and ``prctl`` through
    a ctypes function the parent resolved) that take no lock another thread could hold; so
    that one warning is not shown while Ray starts.
    """
    import warnings

    from ray._private import ray_constants

    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    if os.environ.get("RAY_AUTH_MODE") is None:  # (validation refuses "disabled")
        try:
            from ray._private.authentication import authentication_token_setup as auth
        except ImportError:
            auth = None  # a Ray before token authentication: nothing to choose, nothing said
        if auth is not None:
            # What Ray does when it turns token authentication on: the environment, which
            # its processes inherit, and its config in this process, which read the
            # environment when ``ray`` was imported.
            auth._enable_token_auth()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called",
                                category=RuntimeWarning)
        ray.init(num_cpus=num_cpus, include_dashboard=False, configure_logging=False)


def train(agent: Agent, agent_config: Any, run: RunConfig, quiet: bool = False,
          resume: checkpoint.Restored | None = None) -> dict:
    """Trains ``agent`` with rollout actors on Ray and a learner on this process's devices,
    or, with ``run.mode == "anakin"``, in one compiled program (``rltpu.anakin``).

    Stops when the mean return of the last 20 finished training episodes reaches
    ``run.target_return``, after ``run.total_env_steps``, or on SIGTERM/SIGINT (after the
    current update; ``summary["stopped_by"]`` names the signal). Writes ``summary.json``,
    ``metrics.jsonl`` (appended to on resume) and TensorBoard events to the run directory,
    checkpoints to ``RUN_DIR/checkpoints`` (always one at the end), and returns the summary.

    Args:
      resume: a checkpoint of ``run.run_dir`` (``checkpoint.restore``) to continue from.
    """
    t_start = process_start_time()
    startup = {"imports": time.time() - t_start}  # seconds since process start, per phase
    plan = validate(agent, agent_config, run, resume=resume is not None)
    devices.use_compilation_cache(run.compilation_cache)
    if run.mode == "anakin":
        from rltpu import anakin
        return anakin.train(agent, agent_config, run, plan, quiet, resume)
    config = {"run": dataclasses.asdict(run), "agent": dataclasses.asdict(agent_config)}
    if devices.process_index() == 0:
        if resume is None:
            os.makedirs(plan.run_dir)
        else:
            checkpoint.set_aside(plan.run_dir, resume)
        write_json(os.path.join(plan.run_dir, "config.json"), config)
    # The learner initialises and compiles its update while Ray and the actors start:
    # both take seconds, and neither needs the other.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        fns = agent.build(plan.spec, agent_config, run)
        learner = pool.submit(_at_low_priority, Learner, fns,
                              plan.spec, devices.make_mesh(plan.num_devices), run.seed,
                              run.unroll_length, run.batch_size)
        started_ray = _start_ray(run.num_actors)
        startup["ray"] = time.time() - t_start
        try:
            # After ray.init, which installs a SIGTERM handler of its own.
            with StopRequest() as stop:
                return _train(agent, agent_config, fns, run, plan, learner, t_start, quiet,
                              config, resume, stop, startup)
        finally:
            if started_ray:
                ray.shutdown()


def _at_low_priority(fn, *args):
    """Calls ``fn`` in this thread at the lowest CPU priority (on Linux, where priority is
    per thread). Start-up waits on Ray's processes, one after another; a learner compiling
    beside them at equal priority slows each one, at the lowest it takes the cores they
    leave idle. XLA's compile threads, started here, keep the low priority; the threads
    that run updates were started with the backend, before, and keep the normal one."""
    if sys.platform.startswith("linux"):  # elsewhere a thread id may name another process
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    return fn(*args)


def _train(agent, agent_config, fns, run: RunConfig, plan: Plan, learner_future, t_start: float,
           quiet: bool, config: dict, resume: checkpoint.Restored | None, stop: StopRequest,
           startup: dict) -> dict:
    if type(agent).__module__ != "__main__" and not type(agent).__module__.startswith("agents."):
        # A user's agent travels to the actors by value, so its module need not be
        # importable there (it may live in a script or a folder only the driver sees).
        ray.cloudpickle.register_pickle_by_value(sys.modules[type(agent).__module__])
    hosts = LearnerHosts.current()
    resumed = {} if resume is None else resume.counters
    # A resumed run's actors get new seeds, so they do not replay the envs of the first leg.
    seed_offset = 0 if resume is None else resume.step
    # Actors ask for a CPU only (never a TPU): Ray may place them on any host of the
    # cluster, CPU-only ones included, and they pin their JAX to the CPU.
    actor_class = RayRolloutActor.options(max_restarts=run.max_actor_restarts, max_task_retries=0)
    actors = [actor_class.remote(i, agent, agent_config, run,
                                 (run.seed * 10_000 + 1000 * (i + 1) + 7919 * seed_offset) % 2**31)
              for i in hosts.actor_ids(run.num_actors)]
    pids = [a.pid.remote() for a in actors]  # answered once each actor is up
    learner = learner_future.result()
    startup["learner"] = time.time() - t_start
    # Every host must feed batches of one shape and stop on the same rule; the env itself
    # may differ in speed (a host whose actors are slow holds the others, never skips).
    hosts.check_same({"agent": agent.name, "agent_config": config["agent"],
                      "batch": jax.tree.map(lambda x: (x.shape, str(x.dtype)), learner.example),
                      **{k: config["run"][k] for k in (
                          "batch_size", "unroll_length", "envs_per_actor", "num_actors", "seed",
                          "total_env_steps", "target_return", "on_policy", "publish_every")}})
    recorder = UpdateRecorder.from_environment(hosts.index)
    if resume is not None:
        learner.restore(resume.state, resume.step)
        checkpoint.announce_resume(resume, learner.state.params)
    # Each host publishes its own (bitwise identical) params to its own actors: no host
    # waits on another's ray.put, and no params travel between learner hosts.
    params = ParamStore()
    params.publish(learner.version, learner.host_params())
    memory = MemoryMonitor()

    def watch(pid_ref) -> None:
        try:
            memory.add([ray.get(pid_ref) if isinstance(pid_ref, ray.ObjectRef) else pid_ref])
        except (ray.exceptions.RayError, psutil.Error):
            pass  # the actor died already; the supervisor restarts it and watches the new one

    for pid in pids:
        watch(pid)
    startup["actors"] = time.time() - t_start
    supervisor = ActorSupervisor(actors, run.max_actor_restarts, on_restart=watch)
    queue = UnrollQueue(actors, params, run.max_in_flight, on_policy=run.on_policy,
                        supervisor=supervisor)
    validator = None
    if fns.replay is None:
        validator = UnrollValidator(unroll_example(learner.example, run.envs_per_actor))
        feed = TrajectoryFeed(queue, learner, hosts.share(run.batch_size) // run.envs_per_actor,
                              run.unroll_length * run.batch_size, validator, params)
    else:
        feed = ReplayFeed(queue, learner, fns.replay, run.seed)
    nonfinite = NonFiniteGuard(run.max_nonfinite_updates)
    if hosts.primary:
        checkpoints = checkpoint.Checkpointer(plan.run_dir, run, config)
        writer = sinks.MetricSinks(plan.run_dir, run.total_env_steps, config, run.wandb, quiet)
    else:  # the params are the same everywhere: process 0's checkpoints and metrics suffice
        checkpoints, writer = checkpoint.NoCheckpoints(), None
    # An upper bound on the episodes that end in one host's share of a batch: each column
    # ends at most one per step.
    max_episodes = run.unroll_length * hosts.share(run.batch_size)
    episodes = EpisodeWindow.resumed(resumed)

    def faults() -> dict:
        return whole_run({"actor_restarts": supervisor.total_restarts,
                          "dropped_unrolls": queue.dropped,
                          "rejected_unrolls": 0 if validator is None else validator.rejected,
                          "skipped_updates": nonfinite.skipped}, resumed)

    def counters() -> dict:
        return run_counters(learner.version, env_steps, samples, episodes, faults())
    timer = report.RunTimer()
    # Learns when each update finishes on the devices (for the bottleneck report) while
    # the loop goes on collecting the next batch.
    update_watch = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="update-watch")

    env_steps = resumed.get("env_steps", 0)
    samples = resumed.get("samples", 0)
    start_env_steps, start_samples, start_version = env_steps, samples, learner.version
    lags, acting_s, acting_steps, local_env_steps = [], 0.0, 0, 0
    time_to_target = None
    interval_steps, interval_lags = 0, []

    def next_batch():
        timer.mark("wait")
        try:
            batch, arrivals = feed.next()
        except ActorsExhaustedError:
            checkpoints.wait()  # the last checkpoint is complete on disk
            raise
        timer.mark("got", at=feed.data_ready_at)
        # Waiting for the copy costs nothing (the update dispatched before it runs
        # meanwhile, and the next update needs the batch) and keeps its time apart.
        batch = devices.wait(batch)
        timer.mark("copied")
        return batch, arrivals

    if recorder is not None:
        learner.put = recorder.recording(learner.put)
    batch, arrivals = next_batch()
    startup_s = startup["first_batch"] = time.time() - t_start
    last_log = t_train = time.time()
    timer.start()  # waiting for the first unrolls was start-up
    while True:
        lag = (learner.version - float(np.mean([a.policy_version for a in arrivals]))
               if arrivals else None)
        if run.on_policy and lag != 0:
            raise RuntimeError(f"on-policy run got a batch {lag} versions old")
        agreed = hosts.agree(stop.requested, sum(a.env_steps for a in arrivals),
                             np.concatenate([np.zeros(0, np.float32)]
                                            + [a.episode_returns for a in arrivals]),
                             max_episodes)
        timer.mark("dispatch")
        metrics = learner.update(batch)
        update_done = update_watch.submit(devices.ready_at, metrics)
        consumed = arrivals
        done_by_steps = env_steps + agreed.env_steps >= run.total_env_steps
        stopping = bool(agreed.stop_by)
        done = done_by_steps or stopping
        if not done and not run.on_policy:
            batch, arrivals = next_batch()  # overlaps with the update running on the devices
        metrics = devices.to_host(metrics)
        try:
            nonfinite.record(bool(metrics.pop("update_skipped")), learner.version)
        except NonFiniteUpdatesError:
            checkpoints.wait()  # the last good checkpoint is complete on disk
            raise
        feed.after_update(metrics)
        timer.mark("fetched")
        if learner.version % run.publish_every == 0 or run.on_policy:
            params.publish(learner.version, learner.host_params())
            timer.mark("published")
        if not done and run.on_policy:
            batch, arrivals = next_batch()  # acted with the params just published
        timer.end_update(update_done.result())
        if recorder is not None:
            recorder.updated(learner.version, learner.host_params())

        # Counts and returns of every host's share, the same on every host.
        episodes.add(agreed.episode_returns)
        env_steps += agreed.env_steps
        interval_steps += agreed.env_steps
        for a in consumed:  # what this host's actors measured, for its bottleneck report
            acting_s += a.acting_s
            acting_steps += a.env_steps
            local_env_steps += a.env_steps
            timer.add_unroll(a.timings)
        samples += feed.samples_per_batch
        if lag is not None:
            lags.append(lag)
            interval_lags.append(lag)
        reached = (run.target_return is not None and episodes.full
                   and episodes.mean >= run.target_return)
        if reached and time_to_target is None:
            time_to_target = time.time() - t_start
        if checkpoints.due(learner.version):
            checkpoints.save(learner.version, learner.state, counters(), episodes.mean)
        now = time.time()
        if writer is not None and (now - last_log >= run.log_every_s or reached or done):
            writer.write({"time_s": now - t_start, "env_steps": env_steps,
                          "env_sps": interval_steps / max(now - last_log, 1e-9),
                          "mean_return": episodes.mean, "episodes": episodes.count,
                          "policy_lag": float(np.mean(interval_lags)) if interval_lags else 0.0,
                          "learner_updates": learner.version, "rss_mb": memory.sample(),
                          **faults(), **{k: float(v) for k, v in metrics.items()},
                          **timer.interval(now - last_log)})
            last_log, interval_steps, interval_lags = now, 0, []
        if reached or done:
            break

    t_end = time.time()
    update_watch.shutdown()
    # The final checkpoint: written completely before the actors stop and the process exits.
    checkpoints.save(learner.version, learner.state, counters(), episodes.mean)
    checkpoints.wait()
    checkpoints.close()
    memory.sample()
    for actor in actors:
        ray.kill(actor)
    train_s = t_end - t_train
    if recorder is not None:
        recorder.close()
    # This host's view: its actors, its share of the batches and of the devices.
    multi = hosts.count > 1
    bottleneck = report.analyse(timer.measurements(
        num_actors=len(actors),
        num_devices=devices.local_device_count() if multi else plan.num_devices,
        env_steps=local_env_steps if multi else env_steps - start_env_steps,
        train_s=train_s, cpus=os.cpu_count() or 1, on_policy=run.on_policy))
    summary = {
        "agent": agent.name, "env": run.env, "seed": run.seed,
        "num_devices": plan.num_devices, "platform": devices.platform(),
        "num_processes": hosts.count, "process_index": hosts.index,
        "num_actors": run.num_actors, "envs_per_actor": run.envs_per_actor,
        "env_steps": env_steps, "wall_s": t_end - t_start, "startup_s": startup_s,
        "startup_phases_s": startup,  # when each phase of start-up was done
        "time_to_target_s": time_to_target, "target_return": run.target_return,
        "final_return": episodes.mean, "episodes": episodes.count,
        "env_sps": (env_steps - start_env_steps) / train_s,
        "actor_sps": acting_steps / max(acting_s, 1e-9),
        "learner_updates": learner.version,
        "learner_samples_per_s": (samples - start_samples) / train_s,
        "mean_policy_lag": float(np.mean(lags)) if lags else 0.0, "peak_rss_mb": memory.peak_mb,
        "run_dir": plan.run_dir, **faults(),
        "resumed_from_update": None if resume is None else start_version,
        "stopped_by": stop.signal_name or (f"a signal to learner process {agreed.stop_by[0]}"
                                            if agreed.stop_by else None),
        "checkpoint": None if checkpoints.last_step is None else
        os.path.join(checkpoint.checkpoint_dir(plan.run_dir), str(checkpoints.last_step)),
        "actor_sps_each": bottleneck["actor_sps_each"],
        "learner_sps_per_device": bottleneck["learner_sps_per_device"],
        "bottleneck": bottleneck,
    }
    if run.plan_steps is not None:
        summary["plan"] = report.plan(run.plan_steps, summary["env_sps"], startup_s)
    if writer is None:
        return summary
    write_json(os.path.join(plan.run_dir, "summary.json"), summary)
    writer.close(summary)
    if not quiet:
        print(report.format_report(bottleneck, summary.get("plan")), file=sys.stderr, flush=True)
    return summary
