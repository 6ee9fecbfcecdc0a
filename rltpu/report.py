"""The bottleneck report: where the actors' and the learner's time went, and what to change.

Everything here is a pure function of measured seconds (plus ``PhaseClock``, the
accumulator the driver measures them with), so the advice can be tested on numbers.

Actor phases come from ``ActorTimings`` (measured inside each actor, summed over actors):
``env`` stepping, policy ``inference``, fetching newer ``params``, ``send`` (packing the
unroll) and ``idle`` (Ray serialising the unroll and waiting for the next request, which
is back-pressure from the learner). Learner phases are measured in the driver loop:
``wait_data`` (blocked on the trajectory queue), ``host_to_device`` (stacking the batch and
copying it to the devices), ``update`` (blocked on the update's result) and ``publish``
(copying params back and putting them in the object store). ``update_compute_s``, the
device time of one update, comes from occasional updates the driver waits on at once.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import statistics
import time
from typing import Mapping

ACTOR_PHASES = ("env", "inference", "params", "send", "idle")
LEARNER_PHASES = ("wait_data", "host_to_device", "update", "publish")

# A side that waits this fraction of its time or more is waiting on the other side.
WAIT_THRESHOLD = 0.25


class PhaseClock:
    """Seconds spent in each named phase, accumulated with ``time.perf_counter``."""

    def __init__(self, phases: tuple[str, ...]):
        self.totals = dict.fromkeys(phases, 0.0)

    @contextlib.contextmanager
    def phase(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.totals[name] += time.perf_counter() - start

    def reset(self) -> None:
        self.totals = dict.fromkeys(self.totals, 0.0)

    def add(self, name: str, seconds: float) -> None:
        self.totals[name] += seconds

    def snapshot(self) -> dict[str, float]:
        return dict(self.totals)

    def since(self, snapshot: Mapping[str, float]) -> dict[str, float]:
        """Seconds per phase since ``snapshot`` was taken."""
        return {k: v - snapshot.get(k, 0.0) for k, v in self.totals.items()}


class RunTimer:
    """The driver's time accounting: learner phases, the actors' timings of the unrolls the
    learner took, and the device time of probed updates."""

    def __init__(self):
        self.learner = PhaseClock(LEARNER_PHASES)
        self.actors = PhaseClock(ACTOR_PHASES)
        self._probes: list[float] = []
        self._marks = (self.actors.snapshot(), self.learner.snapshot(), 0)

    def start(self) -> None:
        """Starts the training loop's accounting (what came before is start-up)."""
        self.learner.reset()
        self.actors.reset()
        self._marks = (self.actors.snapshot(), self.learner.snapshot(), 0)

    def add_unroll(self, timings) -> None:
        """Adds one unroll's ``ActorTimings``."""
        for phase, seconds in zip(ACTOR_PHASES, timings):
            self.actors.add(phase, seconds)

    def add_update_compute(self, seconds: float) -> None:
        self._probes.append(seconds)

    @property
    def update_compute_s(self) -> float | None:
        """Median device seconds of one update (None before any probe)."""
        return statistics.median(self._probes) if self._probes else None

    def interval(self, wall_s: float, updates: int) -> dict[str, float]:
        """``interval_metrics`` since the previous call; ``updates``: applied so far."""
        actor_mark, learner_mark, updates_mark = self._marks
        row = interval_metrics(self.actors.since(actor_mark), self.learner.since(learner_mark),
                               wall_s, (updates - updates_mark) * (self.update_compute_s or 0.0))
        self._marks = (self.actors.snapshot(), self.learner.snapshot(), updates)
        return row

    def measurements(self, **run_facts) -> "Measurements":
        """``Measurements`` of the whole loop; ``run_facts``: its other fields."""
        return Measurements(actor_s=self.actors.snapshot(), learner_s=self.learner.snapshot(),
                            update_compute_s=self.update_compute_s, **run_facts)


def _fractions(seconds: Mapping[str, float], total: float) -> dict[str, float]:
    return {k: (v / total if total > 0 else 0.0) for k, v in seconds.items()}


def interval_metrics(actor_s: Mapping[str, float], learner_s: Mapping[str, float],
                     wall_s: float, device_s: float) -> dict[str, float]:
    """The time split of one log interval, as metric-row fields (fractions in [0, 1]).

    Args:
      actor_s: seconds per actor phase, summed over the unrolls taken in the interval.
      learner_s: seconds per learner phase in the interval.
      wall_s: the interval's wall time.
      device_s: estimated device (accelerator) seconds spent on updates in the interval.
    """
    row = {f"actor/{k}": v for k, v in _fractions(actor_s, sum(actor_s.values())).items()}
    row.update({f"learner/{k}": v for k, v in _fractions(learner_s, wall_s).items()})
    row["learner/device_busy"] = min(device_s / wall_s, 1.0) if wall_s > 0 else 0.0
    return row


@dataclasses.dataclass(frozen=True)
class Measurements:
    """What a run measured, the input of ``analyse``."""

    num_actors: int
    num_devices: int
    env_steps: int
    """Env steps the learner consumed in the training loop."""
    updates: int
    """Learner updates in the training loop."""
    train_s: float
    """Wall time of the training loop (start-up excluded)."""
    actor_s: Mapping[str, float]
    """Seconds per ``ACTOR_PHASES`` entry, summed over the actors."""
    learner_s: Mapping[str, float]
    """Seconds per ``LEARNER_PHASES`` entry."""
    update_compute_s: float | None
    """Device seconds of one update (None: never measured)."""
    cpus: int
    """CPUs on this machine (each actor takes one)."""


def analyse(m: Measurements) -> dict:
    """The bottleneck report: time splits, capacities, a verdict and its message.

    The learner's capacity is env steps per second of learner work (its wall time less
    the time it waited for data, plus any update compute that ran hidden behind that
    wait); an actor's is env steps per second of its non-idle time. Their ratio is the
    number of actors that would keep the learner busy.

    Returns:
      A JSON-ready dict: ``verdict`` (``actor-bound``, ``learner-bound``,
      ``queue-bound`` or ``balanced``), ``message`` (the verdict in words, with the
      numbers), ``actor_time`` and ``learner_time`` (fractions), ``device_busy``,
      ``actor_sps_each``, ``learner_sps``, ``learner_sps_per_device`` and
      ``actors_to_keep_learner_busy``.
    """
    actor_total = sum(m.actor_s.values())
    actor_time = _fractions(m.actor_s, actor_total)
    learner_time = _fractions(m.learner_s, m.train_s)
    learner_time["other"] = max(0.0, 1.0 - sum(learner_time.values()))
    compute = m.update_compute_s or 0.0
    device_busy = min(m.updates * compute / m.train_s, 1.0) if m.train_s > 0 else 0.0

    waited = m.learner_s.get("wait_data", 0.0)
    blocked = m.learner_s.get("update", 0.0)
    hidden_compute = max(0.0, m.updates * compute - blocked)  # ran while waiting for data
    learner_work = max(m.train_s - waited, 0.0) + min(hidden_compute, waited)
    learner_sps = m.env_steps / learner_work if learner_work > 0 else math.inf
    actor_busy = actor_total - m.actor_s.get("idle", 0.0)
    # Per actor: steps per second of its own busy time (actor_busy is summed over actors).
    actor_sps_each = m.env_steps / actor_busy if actor_busy > 0 else math.inf
    needed = (math.ceil(learner_sps / actor_sps_each)
              if math.isfinite(learner_sps) and actor_sps_each > 0 else None)

    wait_frac = learner_time.get("wait_data", 0.0)
    idle_frac = actor_time.get("idle", 0.0)
    if wait_frac >= WAIT_THRESHOLD and idle_frac >= WAIT_THRESHOLD:
        verdict = "queue-bound"
        message = (f"learner waited for data {wait_frac:.0%} of the time and actors waited "
                   f"for requests {idle_frac:.0%}: queue-bound; the hand-over between them is "
                   "the bottleneck, raise --max-in-flight")
    elif wait_frac >= WAIT_THRESHOLD:
        verdict = "actor-bound"
        more = max(1, (needed or m.num_actors + 1) - m.num_actors)
        message = (f"learner waited for data {wait_frac:.0%} of the time: actor-bound; "
                   f"about {more} more actor{'s' if more > 1 else ''} would keep it busy "
                   f"(an actor makes {actor_sps_each:,.0f} env steps/s, the learner can take "
                   f"{learner_sps:,.0f})")
        if m.num_actors + more > m.cpus:
            busiest = max((k for k in actor_time if k != "idle"), key=actor_time.get)
            message += (f"; each actor needs a CPU and this machine has {m.cpus}: use more "
                        f"CPUs or make each actor faster (its time goes mostly to {busiest}, "
                        f"{actor_time[busiest]:.0%})")
    elif idle_frac >= WAIT_THRESHOLD:
        verdict = "learner-bound"
        enough = max(1, min(needed or m.num_actors, m.num_actors))
        message = (f"actors waited for the learner {idle_frac:.0%} of the time and the learner "
                   f"waited for data only {wait_frac:.0%}: learner-bound; the devices were busy "
                   f"{device_busy:.0%}, and {enough} of the {m.num_actors} actors would keep "
                   f"up with the learner ({learner_sps:,.0f} env steps/s); more learner "
                   "devices or a cheaper update would speed the run up")
    else:
        verdict = "balanced"
        message = (f"learner waited for data {wait_frac:.0%} and actors waited for the "
                   f"learner {idle_frac:.0%} of the time: balanced; the devices were busy "
                   f"{device_busy:.0%}")
    return {
        "verdict": verdict, "message": message,
        "actor_time": actor_time, "learner_time": learner_time, "device_busy": device_busy,
        "update_compute_s": m.update_compute_s,
        "actor_sps_each": actor_sps_each, "learner_sps": learner_sps,
        "learner_sps_per_device": learner_sps / m.num_devices,
        "actors_to_keep_learner_busy": needed,
    }


def plan(target_env_steps: int, env_sps: float, startup_s: float) -> dict:
    """Estimated wall time for ``target_env_steps`` at the measured throughput of this
    set-up (same actors, devices and settings), start-up included."""
    train_s = target_env_steps / env_sps if env_sps > 0 else math.inf
    return {"env_steps": target_env_steps, "env_sps": env_sps,
            "estimated_wall_s": startup_s + train_s}


def format_report(bottleneck: Mapping, plan_: Mapping | None = None) -> str:
    """The report as a few lines for the console."""
    def split(fractions):
        return ", ".join(f"{k.replace('_', ' ')} {v:.0%}" for k, v in fractions.items())

    lines = ["bottleneck report:",
             f"  actors:  {split(bottleneck['actor_time'])}",
             f"  learner: {split(bottleneck['learner_time'])}; devices busy "
             f"{bottleneck['device_busy']:.0%}",
             f"  measured: {bottleneck['actor_sps_each']:,.0f} env steps/s per actor, "
             f"{bottleneck['learner_sps_per_device']:,.0f} per learner device",
             f"  verdict: {bottleneck['message']}"]
    if plan_ is not None:
        lines.append(f"  plan: {plan_['env_steps']:,} env steps would take about "
                     f"{_duration(plan_['estimated_wall_s'])} on this set-up "
                     f"({plan_['env_sps']:,.0f} env steps/s)")
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "forever"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s" if m else f"{s}s"
