"""The bottleneck report: where the actors' and the learner's time went, and what to change.

``analyse`` and ``interval_metrics`` are pure functions of measured seconds, so the advice
is tested on numbers; ``RunTimer`` is the accumulator the driver measures them with.

Actor phases come from ``ActorTimings`` (measured inside each actor, summed over actors):
``env`` stepping, policy ``inference``, fetching newer ``params``, ``send`` (packing the
unroll) and ``idle`` (Ray serialising the unroll and waiting for the next request, which
is back-pressure from the learner).

Learner phases split the driver loop's wall time, the devices taking precedence: while an
update computes, the loop collects and copies the next batch, and that time is the
update's. ``update`` is the devices computing (the accelerator's busy fraction),
``wait_data`` the devices idle while the loop waits on the trajectory queue,
``host_to_device`` idle while it stacks and copies a batch, ``publish`` copying params
back and putting them in the object store.

With central inference (``--inference central``) the learner host also chooses the actors'
actions, in a thread beside the loop: ``learner_host`` gives the fractions of wall time it
spent on inference and on updates (they overlap; they may sum past 1). An actor's
``inference`` is then its wait for the served action and ``idle`` its Ray round trips,
which count as acting (not as waiting for the learner) in the verdict.
A run with actor inference whose actors spend most of their time in inference, on a
learner with an accelerator, gets the suggestion to try central inference.
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Mapping

ACTOR_PHASES = ("env", "inference", "params", "send", "idle")
LEARNER_PHASES = ("wait_data", "host_to_device", "update", "publish")

PHASE_WORDS = {"env": "env stepping", "inference": "policy inference",
               "params": "fetching params", "send": "sending", "idle": "idle",
               "wait_data": "waiting for data", "host_to_device": "host-to-device",
               "update": "update compute", "publish": "publishing params", "other": "other"}

# A side that waits this fraction of its time or more is waiting on the other side.
WAIT_THRESHOLD = 0.25


def _outside(start: float, end: float, busy: tuple[float, float]) -> float:
    """Length of ``[start, end)`` outside the interval ``busy`` (the devices computing)."""
    overlap = max(0.0, min(end, busy[1]) - max(start, busy[0]))
    return max(0.0, end - start - overlap)


class RunTimer:
    """The driver's time accounting.

    Per update the driver calls ``mark`` at named moments of its loop (``dispatch``;
    ``wait`` and ``got`` around taking the next unrolls; ``copied`` once that batch is on
    the devices; ``fetched`` once the metrics are on the host; ``published``) and then
    ``end_update`` with the moment the update finished on the devices.
    """

    def __init__(self):
        self.learner = dict.fromkeys(LEARNER_PHASES, 0.0)
        self.actors = dict.fromkeys(ACTOR_PHASES, 0.0)
        self._marks: dict[str, float] = {}
        self._last = (dict(self.actors), dict(self.learner))

    def start(self) -> None:
        """Starts the training loop's accounting (what came before is start-up)."""
        self.__init__()

    def mark(self, name: str, at: float | None = None) -> None:
        """Records moment ``name``: now, or ``at`` (a ``time.perf_counter`` value)."""
        self._marks[name] = time.perf_counter() if at is None else at

    def end_update(self, ready: float) -> None:
        """Attributes the loop's time since ``dispatch``; ``ready``: ``perf_counter`` when
        the update's results were computed."""
        m, self._marks = self._marks, {}
        busy = (m["dispatch"], max(ready, m["dispatch"]))
        self.learner["update"] += busy[1] - busy[0]
        # The next batch is collected while the update computes, or after it is published
        # (on-policy runs); the last update of a run collects none.
        if "got" in m:
            self.learner["wait_data"] += _outside(m["wait"], m["got"], busy)
            self.learner["host_to_device"] += _outside(m["got"], m["copied"], busy)
        if "published" in m:
            self.learner["publish"] += _outside(m["fetched"], m["published"], busy)

    def add_unroll(self, timings) -> None:
        """Adds one unroll's ``ActorTimings`` (fields in ``ACTOR_PHASES`` order)."""
        for phase, seconds in zip(ACTOR_PHASES, timings):
            self.actors[phase] += seconds

    def interval(self, wall_s: float) -> dict[str, float]:
        """``interval_metrics`` since the previous call (or ``start``)."""
        actors, learner = self._last
        row = interval_metrics({k: v - actors[k] for k, v in self.actors.items()},
                               {k: v - learner[k] for k, v in self.learner.items()}, wall_s)
        self._last = (dict(self.actors), dict(self.learner))
        return row

    def measurements(self, **run_facts) -> "Measurements":
        """``Measurements`` of the whole loop; ``run_facts``: its other fields."""
        return Measurements(actor_s=dict(self.actors), learner_s=dict(self.learner), **run_facts)


def _fractions(seconds: Mapping[str, float], total: float) -> dict[str, float]:
    return {k: (v / total if total > 0 else 0.0) for k, v in seconds.items()}


def interval_metrics(actor_s: Mapping[str, float], learner_s: Mapping[str, float],
                     wall_s: float) -> dict[str, float]:
    """The time split of one log interval, as metric-row fields (fractions in [0, 1]).

    Args:
      actor_s: seconds per actor phase, summed over the unrolls taken in the interval.
      learner_s: seconds per learner phase in the interval.
      wall_s: the interval's wall time.
    """
    row = {f"actor/{k}": v for k, v in _fractions(actor_s, sum(actor_s.values())).items()}
    row.update({f"learner/{k}": min(v, 1.0) for k, v in _fractions(learner_s, wall_s).items()})
    return row


@dataclasses.dataclass(frozen=True)
class Measurements:
    """What a run measured, the input of ``analyse``."""

    num_actors: int
    num_devices: int
    env_steps: int
    """Env steps the learner consumed in the training loop."""
    train_s: float
    """Wall time of the training loop (start-up excluded)."""
    actor_s: Mapping[str, float]
    """Seconds per ``ACTOR_PHASES`` entry, summed over the actors."""
    learner_s: Mapping[str, float]
    """Seconds per ``LEARNER_PHASES`` entry."""
    cpus: int
    """CPUs on this machine (each actor takes one)."""
    on_policy: bool = False
    """Synchronous run: actors and learner take turns by design."""
    inference: str = "actor"
    """Where actions were chosen (``RunConfig.inference``)."""
    inference_s: float = 0.0
    """Central inference: seconds the learner host spent in policy calls for its actors."""
    accelerator: bool = False
    """The learner's devices are accelerators (not the CPU)."""

# Actor inference whose actors spend this fraction of their busy time or more in inference,
# beside an accelerator, would act faster centrally (SEED RL's case).
CENTRAL_THRESHOLD = 0.5


def analyse(m: Measurements) -> dict:
    """The bottleneck report: time splits, capacities, a verdict and its message.

    The learner's capacity is env steps per second of learner work (its wall time less
    the time its devices sat idle waiting for data); an actor's is env steps per second
    of its non-idle time. Their ratio is the number of actors that would keep the
    learner busy.

    Returns:
      A JSON-ready dict: ``verdict`` (``actor-bound``, ``learner-bound``,
      ``queue-bound`` or ``balanced``), ``message`` (the verdict in words, with the
      numbers), ``actor_time`` and ``learner_time`` (fractions), ``device_busy`` (the
      same as ``learner_time["update"]``), ``actor_sps_each``, ``learner_sps``,
      ``learner_sps_per_device`` and ``actors_to_keep_learner_busy``.
    """
    actor_total = sum(m.actor_s.values())
    actor_time = _fractions(m.actor_s, actor_total)
    learner_time = _fractions(m.learner_s, m.train_s)
    learner_time["other"] = max(0.0, 1.0 - sum(learner_time.values()))
    device_busy = min(learner_time.get("update", 0.0), 1.0)
    learner_work = max(m.train_s - m.learner_s.get("wait_data", 0.0), 0.0)
    learner_sps = m.env_steps / learner_work if learner_work > 0 else math.inf
    central = m.inference == "central"
    # With central inference an actor's idle time is its round trips through Ray, a cost of
    # acting (each step makes one), not back-pressure from the learner.
    actor_busy = actor_total - (0.0 if central else m.actor_s.get("idle", 0.0))
    # Per actor: steps per second of its own busy time (actor_busy is summed over actors).
    actor_sps_each = m.env_steps / actor_busy if actor_busy > 0 else math.inf
    needed = (math.ceil(learner_sps / actor_sps_each)
              if math.isfinite(learner_sps) and actor_sps_each > 0 else None)

    wait_frac = learner_time.get("wait_data", 0.0)
    idle_frac = 0.0 if central else actor_time.get("idle", 0.0)
    if m.on_policy:
        # The learner waits while the actors act, and the actors while it learns: its own
        # split says which of the two turns is longer.
        verdict = "actor-bound" if wait_frac >= 0.5 else "learner-bound"
        advice = ("more actors or --envs-per-actor would shorten acting"
                  if verdict == "actor-bound"
                  else "more learner devices or a cheaper update would shorten learning")
        message = (f"on-policy, actors and learner take turns: the learner waited for data "
                   f"{wait_frac:.0%} of the time and learned the other {1 - wait_frac:.0%}: "
                   f"{verdict}; {advice}")
    elif wait_frac >= WAIT_THRESHOLD and idle_frac >= WAIT_THRESHOLD:
        verdict = "queue-bound"
        message = (f"learner waited for data {wait_frac:.0%} of the time and actors waited "
                   f"for requests {idle_frac:.0%}: queue-bound; the hand-over between them is "
                   "the bottleneck, raise --max-in-flight")
    elif wait_frac >= WAIT_THRESHOLD:
        verdict = "actor-bound"
        message = _actor_bound(m, wait_frac, needed, actor_sps_each, learner_sps, actor_time)
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
    message += _inference_note(m, actor_busy)
    learner_host = {"inference": m.inference_s / m.train_s if m.train_s > 0 else 0.0,
                    "update": device_busy}
    return {
        "verdict": verdict, "message": message, "inference": m.inference,
        "learner_host": learner_host,
        "actor_time": actor_time, "learner_time": learner_time, "device_busy": device_busy,
        "actor_sps_each": actor_sps_each, "learner_sps": learner_sps,
        "learner_sps_per_device": learner_sps / m.num_devices,
        "actors_to_keep_learner_busy": needed,
    }


def _actor_bound(m: Measurements, wait_frac: float, needed: int | None, actor_sps_each: float,
                 learner_sps: float, actor_time: dict) -> str:
    """The actor-bound verdict's message: how many more actors would keep the learner
    busy, and, past this machine's CPUs, where an actor's time goes."""
    central = m.inference == "central"
    more = max(1, (needed or m.num_actors + 1) - m.num_actors)
    message = (f"learner waited for data {wait_frac:.0%} of the time: actor-bound; "
               f"about {more} more actor{'s' if more > 1 else ''} would keep it busy "
               f"(an actor makes {actor_sps_each:,.0f} env steps/s, the learner can take "
               f"{learner_sps:,.0f})")
    if m.num_actors + more > m.cpus:
        busiest = max((k for k in actor_time if central or k != "idle"), key=actor_time.get)
        word = "Ray round trips" if central and busiest == "idle" else PHASE_WORDS[busiest]
        message += (f"; each actor needs a CPU and this machine has {m.cpus}: use more "
                    "CPUs or make each actor faster (its time goes mostly to "
                    f"{word}, {actor_time[busiest]:.0%})")
    return message


def _inference_note(m: Measurements, actor_busy: float) -> str:
    """What the verdict adds about where actions are chosen: central inference's idle time,
    or the suggestion to move inference to the learner's accelerator."""
    if m.inference == "central":
        return ("; central inference: the actors' idle time is their Ray round trips and "
                "waiting to be batched, counted as acting")
    busy = _fractions({k: v for k, v in m.actor_s.items() if k != "idle"}, actor_busy)
    if m.accelerator and busy.get("inference", 0.0) >= CENTRAL_THRESHOLD:
        return (f"; the actors spend {busy['inference']:.0%} of their busy time in policy "
                "inference and the learner has an accelerator: try --inference central (the "
                "learner host acts for them, batched)")
    return ""


def plan(target_env_steps: int, env_sps: float, startup_s: float) -> dict:
    """Estimated wall time for ``target_env_steps`` at the measured throughput of this
    set-up (same actors, devices and settings), start-up included."""
    train_s = target_env_steps / env_sps if env_sps > 0 else math.inf
    return {"env_steps": target_env_steps, "env_sps": env_sps,
            "estimated_wall_s": startup_s + train_s}


def format_report(bottleneck: Mapping, plan_: Mapping | None = None) -> str:
    """The report as a few lines for the console."""
    def split(fractions):
        return ", ".join(f"{PHASE_WORDS.get(k, k)} {v:.0%}" for k, v in fractions.items())

    lines = ["bottleneck report:",
             f"  actors:  {split(bottleneck['actor_time'])}",
             f"  learner: {split(bottleneck['learner_time'])}; devices busy "
             f"{bottleneck['device_busy']:.0%}",
             *([f"  learner host: policy inference {bottleneck['learner_host']['inference']:.0%}, "
                f"update compute {bottleneck['learner_host']['update']:.0%} of the wall time "
                "(central inference, beside the updates)"]
               if bottleneck.get("inference") == "central" else []),
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
