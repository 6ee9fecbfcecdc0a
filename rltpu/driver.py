"""Ray mode's loop on one learner process: actors -> trajectory queue -> feed -> learner ->
versioned params -> actors. On a pod slice every host runs one (``rltpu.hosts``): each owns
its share of the actors and of every batch, they decide together when to stop, and only
process 0 writes the run directory. ``rltpu.startup`` starts Ray, the learner and the
actors, then runs a ``Loop``."""
from __future__ import annotations

import concurrent.futures
import os
import sys
import time

import jax
import numpy as np
import psutil
import ray

from rltpu import checkpoint, console, devices, envs, inference, report, resume as resuming, session
from rltpu.envs.make import RunningStatistics
from rltpu.faults import ActorsExhaustedError, ActorSupervisor, StopRequest, Stopped
from rltpu.feeds import ReplayFeed, TrajectoryFeed
from rltpu.hosts import LearnerHosts, UpdateRecorder
from rltpu.learner import Learner
from rltpu.plan import Plan
from rltpu.run import Run
from rltpu.transport import ParamStore, UnrollQueue
from rltpu.validation import UnrollValidator, unroll_example


class SharedStatistics:
    """One set of running statistics of each kind for this host's rollout actors
    (``--normalize-observations``' and ``--normalize-rewards``'), as RLlib's
    ``MeanStdFilter`` keeps: about every ``every_s`` seconds each actor hands over the
    observations and returns it added since it was last asked, and goes on from the
    statistics of all those the actors have handed over (never waited for: an actor answers
    between unrolls). With one actor they are its own. ``state()`` is what the run's
    checkpoints save, for a resumed run's actors and ``rltpu.load``.

    Args:
      statistics: the statistics of each kind the actors keep, by name
        (``envs.shared_statistics``; a resumed run's, loaded from its checkpoint).
      actors: this host's rollout actors.
    """

    def __init__(self, statistics: dict[str, RunningStatistics], actors: list,
                 every_s: float = 1.0):
        self.statistics = statistics
        self.actors, self.every_s = actors, every_s
        self._pending: dict[ray.ObjectRef, int] = {}  # what an actor hands over -> its index
        self._asked = -float("inf")

    def state(self) -> dict:
        """The statistics as JSON values (``RunningStatistics.state``) by name, of the kinds
        the actors have handed over any of."""
        return {name: statistics.state() for name, statistics in self.statistics.items()
                if statistics.count > 0}

    def poll(self) -> None:
        """Adds what the actors handed over since the last poll; asks again if due."""
        if self._pending:
            ready, _ = ray.wait(list(self._pending), num_returns=len(self._pending), timeout=0)
            for ref in ready:
                del self._pending[ref]
                try:
                    handed = ray.get(ref)
                except ray.exceptions.RayError:
                    continue  # (a restarting actor: what it added since it was asked is lost)
                for name, new in handed.items():
                    self.statistics[name].add(new)
        if time.monotonic() - self._asked < self.every_s:
            return
        self._asked = time.monotonic()
        shared = ray.put({name: statistics.moments() if statistics.count > 0 else None
                          for name, statistics in self.statistics.items()})
        asked = set(self._pending.values())
        for index, actor in enumerate(self.actors):
            if index not in asked:
                self._pending[actor.exchange_statistics.remote(shared)] = index


def _resumed_statistics(kept: dict[str, RunningStatistics],
                        resume: checkpoint.Restored | None) -> dict:
    """Loads into ``kept`` the statistics of its kinds that a resumed run's checkpoint saved
    and that fit (one that does not is left out with a warning: the actors then start their
    own); returns those loaded."""
    saved = {}
    for name, statistics in kept.items():
        state = None if resume is None else resume.counters.get(name)
        if state is None:
            continue
        try:
            statistics.load(state, frozen=False)
        except ValueError as e:
            console.warn(f"checkpoint {resume.path}: {e}; the actors start "
                         f"{statistics.WHAT} of their own")
            continue
        saved[name] = state
    return saved


class Loop:
    """Ray mode's loop on one learner process: feed -> agree -> update -> publish.

    Args:
      plan: the validated settings.
      learner: the learner, initialised and compiled.
      actors: this host's rollout actors, starting.
      hosts: this process's place among the learner processes.
      resume: the checkpoint the run continues from.
      stop: SIGTERM/SIGINT, noted.
      startup: seconds since ``t_start`` at which each start-up phase was done.
      on_row: called with each metrics row (``rltpu.run.RowHook``).
      t_start: when the run started (``metrics.run_start_time``).
    """

    def __init__(self, plan: Plan, learner: Learner, actors: list, hosts: LearnerHosts,
                 resume: checkpoint.Restored | None, stop: StopRequest, startup: dict,
                 quiet: bool = False, on_row=None, *, t_start: float):
        run = plan.run
        self.plan, self.learner, self.actors, self.hosts = plan, learner, actors, hosts
        self.stop, self.startup, self.quiet = stop, startup, quiet
        pids = [a.pid.remote() for a in actors]  # answered once each actor is up
        startup["learner"] = time.time() - t_start
        # Every host must feed batches of one shape and stop on the same rule; the env itself
        # may differ in speed (a host whose actors are slow holds the others, never skips).
        config = plan.config()
        hosts.check_same({"agent": plan.agent.name, "agent_config": config["agent"],
                          "batch": jax.tree.map(lambda x: (x.shape, str(x.dtype)), learner.example),
                          **{k: config["run"][k] for k in (
                              "batch_size", "unroll_length", "envs_per_actor", "num_actors", "seed",
                              "total_env_steps", "target_return", "on_policy", "publish_every")}})
        self.recorder = UpdateRecorder.from_environment(hosts.index)
        if resume is not None:
            learner.restore(resume.state, resume.step)
            resuming.announce_resume(resume, learner.state.params)
        # Each host publishes its own (bitwise identical) params to its own actors: no host
        # waits on another's ray.put, and no params travel between learner hosts.
        central = run.inference == "central"
        self.params = inference.ServedParams() if central else ParamStore()
        self.params.publish(learner.version, learner.host_params())
        self.run = Run(plan, resume, t_start, self._loop_faults, hosts.primary, quiet, stop,
                       on_row)
        self.statistics = None
        kept = envs.shared_statistics(plan.spec.observation_space, run.normalize_observations,
                                      run.normalize_rewards)
        if kept:
            saved = _resumed_statistics(kept, resume)
            if saved:
                for actor in actors:  # (before their first unroll)
                    actor.load_statistics.remote(saved)
            # (each learner host shares statistics among its own actors)
            self.statistics = SharedStatistics(kept, actors)
            self.run.shared_statistics = self.statistics.state
        self.evaluation = None
        if run.evaluates and hosts.primary:  # the params are the same on every learner host
            from rltpu.evaluation import AsyncEvaluation
            self.evaluation = AsyncEvaluation(plan, self.run, learner.version,
                                              0 if resume is None else resume.step,
                                              statistics_actor=actors[0])
        self._watch_starting(pids)
        startup["actors"] = time.time() - t_start
        self.supervisor = ActorSupervisor(actors, run.max_actor_restarts, on_restart=self._watch)
        # One learner process gives up waiting for unrolls on a stop; several stop together
        # at their next agreement (one alone would leave the others in a collective).
        check_stop = stop.check if hosts.count == 1 else None
        self.queue = (inference.make_queue(plan, hosts.actor_ids(run.num_actors), actors,
                                           self.params, self.supervisor, check_stop) if central
                      else UnrollQueue(actors, self.params, run.max_in_flight,
                                       on_policy=run.on_policy, supervisor=self.supervisor,
                                       check_stop=check_stop))
        self.validator = None
        if plan.fns.replay is None:
            self.validator = UnrollValidator(unroll_example(learner.example, run.envs_per_actor))
            self.feed = TrajectoryFeed(self.queue, hosts.share(run.batch_size) // run.envs_per_actor,
                                       run.samples_per_batch, self.validator)
        else:
            self.feed = ReplayFeed(self.queue, plan.fns.replay, run.seed)
        self.timer = report.RunTimer()
        self.lags, self._interval_lags = [], []
        self.acting_s, self.acting_steps = 0.0, 0
        self._put = learner.put if self.recorder is None else self.recorder.recording(learner.put)

    def _watch_starting(self, pids: list) -> None:
        """Watches the actors' processes as they come up; gives up on a stop (actors that
        never start must not hold off a SIGTERM)."""
        waiting = list(pids)
        while waiting and not self.stop.requested:
            ready, waiting = ray.wait(waiting, num_returns=len(waiting), timeout=1.0)
            for pid in ready:
                self._watch(pid)

    def _watch(self, pid_ref) -> None:
        """Adds an actor's process to the memory monitor once it is up."""
        try:
            self.run.memory.add([ray.get(pid_ref) if isinstance(pid_ref, ray.ObjectRef) else pid_ref])
        except (ray.exceptions.RayError, psutil.Error):
            pass  # the actor died already; the supervisor restarts it and watches the new one

    def _loop_faults(self) -> dict:
        if self.stop.requested:  # Ray may be gone (see ActorSupervisor.stop_asking_ray)
            self.supervisor.stop_asking_ray()
        return {"actor_restarts": self.supervisor.total_restarts,
                "dropped_unrolls": self.queue.dropped,
                "rejected_unrolls": 0 if self.validator is None else self.validator.rejected}

    def _next_batch(self):
        """The next batch on its way to the devices, and what arrived with it."""
        self.timer.mark("wait")
        try:
            host_batch, arrivals = self.feed.next(self.params.version)
        except ActorsExhaustedError:
            self.run.checkpoints.wait()  # the last checkpoint is complete on disk
            raise
        self.timer.mark("got", at=self.feed.data_ready_at)
        # Waiting for the copy costs nothing (the update dispatched before it runs
        # meanwhile, and the next update needs the batch) and keeps its time apart.
        batch = devices.wait(self._put(host_batch))
        self.timer.mark("copied")
        return batch, arrivals

    def train(self) -> dict:
        run, learner = self.plan.run, self.learner
        # An upper bound on the episodes that end in one host's share of a batch: each column
        # ends at most one per step.
        max_episodes = run.unroll_length * self.hosts.share(run.batch_size)
        # Learns when each update finishes on the devices (for the bottleneck report) while
        # the loop goes on collecting the next batch.
        update_watch = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="update-watch")
        try:
            batch, arrivals = self._next_batch()
        except Stopped:  # before the first batch: the learner's state is all there is
            self.run.started()
            update_watch.shutdown()
            return self._finish(None)
        self.startup["first_batch"] = time.time() - self.run.t_start
        self.run.started()
        self.timer.start()  # waiting for the first unrolls was start-up
        while True:
            lag = (learner.version - float(np.mean([a.policy_version for a in arrivals]))
                   if arrivals else None)
            if run.on_policy and lag != 0:
                raise RuntimeError(f"on-policy run got a batch {lag} versions old")
            agreed = self.hosts.agree(self.stop.requested, sum(a.env_steps for a in arrivals),
                                      np.concatenate([np.zeros(0, np.float32)]
                                                     + [a.episode_returns for a in arrivals]),
                                      max_episodes)
            self.timer.mark("dispatch")
            metrics = learner.update(batch)
            update_done = update_watch.submit(devices.ready_at, metrics)
            consumed = arrivals
            done = (self.run.env_steps + agreed.env_steps >= run.total_env_steps
                    or bool(agreed.stop_by))
            if not done and not run.on_policy:
                try:
                    batch, arrivals = self._next_batch()  # overlaps with the update
                except Stopped:
                    done = True
            if self.statistics is not None:
                self.statistics.poll()
            metrics = devices.to_host(metrics)
            self.run.update_skipped(bool(metrics.pop("update_skipped")), learner.version)
            self.feed.after_update(metrics)
            self.timer.mark("fetched")
            if not done and (learner.version % run.publish_every == 0 or run.on_policy):
                self.params.publish(learner.version, learner.host_params())
                self.timer.mark("published")
            if not done and run.on_policy:
                try:
                    batch, arrivals = self._next_batch()  # acted with the params just published
                except Stopped:
                    done = True
            self.timer.end_update(update_done.result())
            if self.recorder is not None:
                self.recorder.updated(learner.version, learner.host_params())
            self._record(agreed, consumed, lag)
            self.run.checkpoint_if_due(learner.version, learner.state)
            if self.run.log(learner.version, self.run.reached or done,
                            lambda interval: self._row(metrics, interval)):
                self._interval_lags = []
            if self.evaluation is not None and not done:
                # Never waits: the newest params the actors have (a ref, copied nowhere).
                self.evaluation.step(learner.version, lambda: (
                    self.params.version, self.params.latest()[1][0]))
            if self.run.reached or done:
                break
        update_watch.shutdown()
        return self._finish(agreed)

    def _record(self, agreed, consumed: list, lag: float | None) -> None:
        """Counts an update's batch: every host's share (the same on every host), and what
        this host's actors measured, for its bottleneck report."""
        self.run.record(agreed.env_steps, agreed.episode_returns, self.feed.samples_per_batch)
        for a in consumed:
            self.acting_s += a.acting_s
            self.acting_steps += a.env_steps
            self.timer.add_unroll(a.timings)
        if lag is not None:
            self.lags.append(lag)
            self._interval_lags.append(lag)

    def _row(self, metrics: dict, interval_s: float) -> dict:
        lags = self._interval_lags
        return {"policy_lag": float(np.mean(lags)) if lags else 0.0,
                **{k: float(v) for k, v in metrics.items()}, **self.timer.interval(interval_s)}

    def _finish(self, agreed) -> dict:
        """The final checkpoint (complete before the actors stop), the bottleneck report and
        the summary."""
        run, learner, hosts = self.plan.run, self.learner, self.hosts
        self.run.end(learner.version, learner.state)  # needs nothing of Ray
        if self.evaluation is not None and not self.stop.requested:
            # (after a signal Ray may be gone, and the grace period is for the checkpoint)
            self.evaluation.finish(learner.version, learner.host_params())
        self.queue.close()  # (central inference's server stops before its actors)
        if not self.stop.requested:
            # (after a signal to the whole group Ray's processes are gone, and asking them
            # would wait a minute; the actors end with Ray's shutdown or the driver)
            if not session.keep_actors(self.actors):  # (a notebook keeps them for its next run)
                for actor in self.actors:
                    ray.kill(actor)
        if self.recorder is not None:
            self.recorder.close()
        # This host's view: its actors, its share of the batches and of the devices.
        multi = hosts.count > 1
        bottleneck = report.analyse(self.timer.measurements(
            num_actors=len(self.actors),
            num_devices=devices.local_device_count() if multi else self.plan.num_devices,
            env_steps=self.acting_steps if multi else self.run.leg_env_steps,
            train_s=self.run.train_s, cpus=os.cpu_count() or 1, on_policy=run.on_policy,
            inference=run.inference, inference_s=getattr(self.queue, "inference_s", 0.0),
            accelerator=devices.platform() != "cpu"))
        env_sps = self.run.leg_env_steps / self.run.train_s
        fields = {
            "num_processes": hosts.count, "process_index": hosts.index,
            "num_actors": run.num_actors, "envs_per_actor": run.envs_per_actor,
            "startup_phases_s": self.startup,  # when each phase of start-up was done
            "actor_sps": self.acting_steps / max(self.acting_s, 1e-9),
            "mean_policy_lag": float(np.mean(self.lags)) if self.lags else 0.0,
            "actor_sps_each": bottleneck["actor_sps_each"],
            "learner_sps_per_device": bottleneck["learner_sps_per_device"],
            "bottleneck": bottleneck}
        if run.plan_steps is not None:
            fields["plan"] = report.plan(run.plan_steps, env_sps, self.run.startup_s)
        stopped_by = self.stop.signal_name or (
            f"a signal to learner process {agreed.stop_by[0]}"
            if agreed is not None and agreed.stop_by else None)
        summary = self.run.summary(learner.version, stopped_by, fields)
        if hosts.primary and not self.quiet:
            print(report.format_report(bottleneck, summary.get("plan")), file=sys.stderr,
                  flush=True)
        return summary
