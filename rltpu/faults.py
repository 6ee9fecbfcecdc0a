"""Surviving what goes wrong during a run: actors that die or whose env raises, and the
SIGTERM/SIGINT of a preemption or a Ctrl-C.

The learner never stops because an actor failed: ``ActorSupervisor`` logs which actor
and why, has Ray restart it (at most ``max_restarts`` times each) and tells the trajectory
queue when it is back; the restarted actor gets the current params with its next request.
"""
from __future__ import annotations

import os
import signal
import threading
from typing import Callable, Sequence

import psutil
import ray

from rltpu import cluster, console


def rollout_actor_processes(driver_pid: int) -> list[psutil.Process]:
    """The processes of the rollout (or env) actors of the run whose driver is ``driver_pid`` (on
    this machine): for fault injection and for watching their memory."""
    found = []
    for proc in psutil.Process(driver_pid).children(recursive=True):
        try:
            if any(name in " ".join(proc.cmdline()) for name in ("RayRolloutActor", "RayEnvActor")):
                found.append(proc)
        except psutil.Error:
            pass  # ended meanwhile
    return found


class ActorsExhaustedError(RuntimeError):
    """Every rollout actor failed more often than it may be restarted."""


def describe_failure(error: BaseException) -> str:
    """One line saying why an actor's request failed."""
    if isinstance(error, ray.exceptions.RayTaskError):
        cause = error.cause if getattr(error, "cause", None) is not None else error
        text = str(cause).strip().splitlines()
        return f"env raised {type(cause).__name__}: {text[-1] if text else ''}"[:300]
    text = str(error).strip().splitlines()
    return f"died ({type(error).__name__}: {text[0] if text else ''})"[:300]


class ActorSupervisor:
    """Restarts failed rollout actors through Ray and knows which are in service.

    A request that fails with the actor alive (its env raised) gets the actor killed with
    ``no_restart=False``, so Ray builds a fresh one with a fresh env; a process that died
    is restarted by Ray on its own (actors are created with ``max_restarts``). Each failure
    is handled once however many of the actor's requests it took with it: the actor is out
    of service from the first failed request until it answers a ``pid`` probe, and requests
    sent to an earlier incarnation are known by their tag. Restarts are counted by Ray's
    own record (the GCS actor table), so a process killed again while Ray was still
    starting it counts too; a probe that finds the actor gone for good retires it.

    Args:
      actors: the Ray actor handles, indexed like the trajectory queue's.
      max_restarts: restarts allowed per actor (the ``max_restarts`` they were made with).
      on_restart: called with the new process id of each restarted actor.
    """

    def __init__(self, actors: Sequence, max_restarts: int,
                 on_restart: Callable[[int], None] | None = None):
        self._actors = list(actors)
        self._max_restarts = max_restarts
        self._on_restart = on_restart
        self._handled = [0] * len(self._actors)  # failures handled per actor
        self.incarnation = [0] * len(self._actors)  # bumped at each failure handled
        self._probes: dict[int, ray.ObjectRef] = {}  # index -> pid() of the restarting actor
        self.retired: set[int] = set()
        self._ask_ray = True

    def stop_asking_ray(self) -> None:
        """From now on counts restarts from the failures handled alone: after a stop, Ray's
        processes may be gone (a signal to the whole group), and asking its GCS would wait
        a minute."""
        self._ask_ray = False

    def _restarts(self, index: int) -> int:
        """Restarts of actor ``index``: Ray's count, or the failures handled if more (Ray may
        not have recorded the newest yet)."""
        count = max(self._handled[index],
                    _ray_restart_count(self._actors[index]) if self._ask_ray else 0)
        return min(count, self._max_restarts)

    @property
    def total_restarts(self) -> int:
        return sum(self._restarts(index) for index in range(len(self._actors)))

    def in_service(self, index: int) -> bool:
        return index not in self._probes and index not in self.retired

    def check_any_left(self) -> None:
        """Raises ActorsExhaustedError once every actor is retired."""
        if len(self.retired) == len(self._actors):
            raise ActorsExhaustedError(
                f"every rollout actor failed more than --max-actor-restarts "
                f"{self._max_restarts} times; the run stopped (see the lines above)")

    def failed(self, index: int, error: BaseException, incarnation: int | None = None) -> None:
        """Handles a failed request of actor ``index``, sent to its ``incarnation``."""
        if not self.in_service(index) or incarnation not in (None, self.incarnation[index]):
            return  # another request lost to a failure already handled
        self.incarnation[index] += 1
        self._handled[index] += 1
        actor = self._actors[index]
        reason = describe_failure(error)
        if max(self._handled[index], _ray_restart_count(actor)) > self._max_restarts:
            console.say(f"actor {index} {reason}; it has used its {self._max_restarts} restarts, "
                        f"going on without it ({len(self._actors) - len(self.retired) - 1} left)")
            self.retired.add(index)
            ray.kill(actor, no_restart=True)
            return
        console.say(f"actor {index} {reason}; Ray restarts it "
                    f"(restart {self._restarts(index)} of at most {self._max_restarts})")
        if not isinstance(error, ray.exceptions.RayActorError):
            # Its env may be half-stepped: only a fresh actor is known to be sound.
            ray.kill(actor, no_restart=False)
        self._probes[index] = actor.pid.remote()

    def poll(self, timeout: float = 0.0) -> list[int]:
        """Returns the actors that came back since the last call (waits up to ``timeout``)."""
        if not self._probes:
            return []
        refs = list(self._probes.values())
        done, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout)
        done = set(done)
        back = []
        for index, ref in list(self._probes.items()):
            if ref not in done:
                continue
            try:
                pid = ray.get(ref)
            except ray.exceptions.ActorUnavailableError:
                self._probes[index] = self._actors[index].pid.remote()  # still restarting
                continue
            except ray.exceptions.RayError as e:
                console.say(f"actor {index} could not be restarted ({describe_failure(e)}); "
                            "going on without it")
                del self._probes[index]
                self.retired.add(index)
                continue
            del self._probes[index]
            back.append(index)
            if self._on_restart is not None:
                self._on_restart(pid)
        return back


def _ray_restart_count(actor) -> int:
    """How many times Ray has restarted ``actor`` (from the GCS actor table; 0 if unknown)."""
    from ray._private import state  # no public API gives it without the dashboard
    try:
        return int(state.actors(actor._actor_id.hex()).get("NumRestarts", 0))
    except Exception:  # noqa: BLE001 -- a failed lookup leaves our own count
        return 0


class _SignalsReceived:
    """The signals this process receives from now until ``end``, counted by Python's C
    signal handler (``signal.set_wakeup_fd``) whatever Python handler is installed, and
    whether or not that handler's exception survives. Counts nothing outside the main
    thread or while something else (an asyncio loop) holds the wakeup fd."""

    def __init__(self):
        self._read = self._write = None
        self._received: set[int] = set()
        if threading.current_thread() is not threading.main_thread():
            return
        self._read, self._write = os.pipe()
        for fd in (self._read, self._write):
            os.set_blocking(fd, False)
        previous = signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)
        if previous != -1:  # another's: give it back, count nothing
            signal.set_wakeup_fd(previous)
            self._close()

    def seen(self, signum: int) -> bool:
        """Whether ``signum`` has been received so far; counting goes on."""
        self._drain()
        return signum in self._received

    def end(self) -> set[int]:
        """Stops counting (the first call); returns the signal numbers received."""
        if self._read is not None:
            signal.set_wakeup_fd(-1)
            self._drain()
            self._close()
        return self._received

    def _drain(self) -> None:
        if self._read is not None:
            try:
                self._received.update(os.read(self._read, 4096))
            except BlockingIOError:  # none
                pass

    def _close(self) -> None:
        os.close(self._read)
        os.close(self._write)
        self._read = self._write = None


class Stopped(Exception):
    """A wait (for Ray, for unrolls, for actors) gave up because a stop was requested."""


class StopRequest:
    """Turns SIGTERM and SIGINT into a flag the training loop checks after each update and
    every waiting loop checks at least once a second (``Stopped``).

    A second signal while the first is being handled restores the default handlers and
    re-raises, so a stuck shutdown can still be interrupted. Only the main thread can
    install handlers; elsewhere this does nothing. ``ray.init`` replaces the SIGTERM
    handler with one that exits: ``during_ray_init`` keeps a SIGTERM then a stop request.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.signal_name: str | None = None
        self._previous: dict = {}

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    def request(self, reason: str) -> None:
        """Asks for a stop as a signal does; ``reason`` becomes the summary's ``stopped_by``
        (a metrics-row hook's answer, ``rltpu.run.train``'s ``on_row``)."""
        if not self.requested:
            self.signal_name = reason

    def _handle(self, signum, frame):
        if self.requested:
            self._restore()
            signal.raise_signal(signum)
            return
        self.signal_name = signal.Signals(signum).name
        console.say(f"{self.signal_name} received: finishing the current update, then saving a "
                    "checkpoint")

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def check(self) -> None:
        """Raises ``Stopped`` if a stop was requested."""
        if self.requested:
            raise Stopped(self.signal_name)

    def during_ray_init(self, start: Callable[[], bool]) -> bool:
        """Calls ``start`` (which calls ``ray.init``) and puts this object's handlers back
        after it. ``ray.init`` first installs a SIGTERM handler that calls ``sys.exit``; a
        SIGTERM then (or a failure of a Ray whose processes a signal to the whole group
        ended) becomes a stop request. Returns what ``start`` returned, or False then.

        Ray's ``SystemExit`` may never reach here: Python drops it when the handler runs
        inside an after-fork hook as Ray forks its processes (``cluster.ray_init_ends_when``),
        and a CI run once trained on as if no signal had come. So every SIGTERM is also
        counted where Python's C handler receives it, through a wakeup fd (when nothing
        else, an asyncio loop, holds that): one counted there ends ``ray.init`` at its next
        step and is a stop request too."""
        received = _SignalsReceived()
        try:
            with cluster.ray_init_ends_when(lambda: received.seen(signal.SIGTERM)):
                return start()
        except SystemExit as e:
            if e.code != signal.SIGTERM:
                raise
            self.signal_name = self.signal_name or "SIGTERM"
            console.say("SIGTERM received while Ray was starting: stopping")
            return False
        except Exception:  # noqa: BLE001 -- re-raised unless a stop explains it
            if not self.requested and signal.SIGTERM not in received.end():
                raise
            self.signal_name = self.signal_name or "SIGTERM"
            console.say(f"Ray failed to start after {self.signal_name}: stopping")
            return False
        finally:
            if threading.current_thread() is threading.main_thread() and self._previous:
                for signum in self.SIGNALS:
                    signal.signal(signum, self._handle)
            if signal.SIGTERM in received.end() and not self.requested:
                self.signal_name = "SIGTERM"
                console.say("SIGTERM received while Ray was starting: stopping")

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def __exit__(self, *exc) -> None:
        self._restore()
