"""The agent interface: what an algorithm hands the runtime.

A new algorithm is a config dataclass, networks, a policy step for the actors and a
pure update for the learner. The runtime jits the policy step on the actors' CPUs and the
update over the learner's device mesh; it never looks inside either.

Example (see ``agents/impala`` for a complete one)::

    class MyAgent:
        name = "my-agent"
        Config = MyConfig                       # frozen dataclass, defaults for every field

        def check_spec(self, spec): ...        # raise ValueError if it cannot act in spec
        def build(self, spec, config, run) -> AgentFns: ...
"""
from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable, Protocol, runtime_checkable

from rltpu.types import ActorOutput, EnvSpec, Metrics, Params, TrainState


@dataclasses.dataclass(frozen=True)
class AgentFns:
    """Pure functions built for one env spec and config.

    Attributes:
      init: ``key -> TrainState``; the initial learner state.
      actor_step: ``(params, observation [B, ...], key) -> ActorOutput``; the behaviour
        policy. ``ActorOutput.extras`` (logits, say) is stored in the trajectory.
      update: ``(TrainState, Trajectory) -> (TrainState, metrics)``; one learner step on a
        batch. Losses must be means over the batch: that makes the data-parallel gradient
        equal to the single-device one.
      greedy_step: optional ``(params, observation, key) -> ActorOutput`` for evaluation.
      actor_step_for: optional ``(actor_id, num_actors) -> actor_step``, when actors act
        differently (an exploration ladder, say); each actor then uses its own.
      replay: optional ``rltpu.replay.ReplaySpec``. With it, actors' trajectories go to a
        replay actor and ``update`` receives replay samples (``{"transitions", "weights"}``,
        batch on axis 0) instead of trajectories; a ``"priorities"`` entry ``[N]`` in its
        metrics is written back to the replay.
      initial_core_state: optional ``num_envs -> core state`` (a pytree of ``[num_envs, ...]``
        arrays) for a recurrent agent; None (the default) for a feed-forward one. With it,
        ``actor_step``, ``greedy_step`` and the steps of ``actor_step_for`` take the core
        state and the step's ``rltpu.types.StepContext`` and return the next core state:
        ``(params, observation, key, core_state, context) -> (ActorOutput, core_state)``;
        trajectories carry the state before their first step in ``Trajectory.start``
        (see ``rltpu.recurrent``).
    """

    init: Callable[[Any], TrainState]
    actor_step: Callable[[Params, Any, Any], ActorOutput]
    update: Callable[[TrainState, Any], tuple[TrainState, Metrics]]
    greedy_step: Callable[[Params, Any, Any], ActorOutput] | None = None
    actor_step_for: Callable[[int, int], Callable] | None = None
    replay: Any = None
    initial_core_state: Callable[[int], Any] | None = None


@runtime_checkable
class Agent(Protocol):
    """An algorithm, as the runtime and the CLI see it."""

    name: str
    Config: type

    def check_spec(self, spec: EnvSpec) -> None:
        """Raises ValueError, naming what is wrong, if the agent cannot act in ``spec``."""

    def build(self, spec: EnvSpec, config: Any, run: Any) -> AgentFns:
        """Returns the pure functions for this env spec, agent config and run config
        (``rltpu.RunConfig``: batch geometry and step budget, for agents that derive
        sizes or schedules from them)."""


def load_agent(name: str, builtin: dict[str, str]) -> Agent:
    """Resolves a built-in agent name or a ``module:Attribute`` path to an agent instance.

    The module is imported from ``sys.path`` as it is: the current directory is not added
    (a run directory or a download someone runs rltpu from must not supply modules). Put
    your own agent's folder on ``PYTHONPATH`` or install it.

    Raises:
      ValueError: no such agent, its module fails to import (whatever it raised), or the
        object is not an agent.
    """
    path = builtin.get(name, name)
    if ":" not in path:
        raise ValueError(f"unknown agent {name!r}; valid: {', '.join(sorted(builtin))} "
                         "or a module:Agent path (its module importable: on PYTHONPATH)")
    module_name, attr = path.split(":", 1)
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # the user's module, failing as it may: one line naming it
        hint = ("; is its folder on PYTHONPATH?" if isinstance(e, ModuleNotFoundError) else "")
        raise ValueError(f"cannot load agent {name!r}: importing {module_name} raised "
                         f"{type(e).__name__}: {_one_line(e)}{hint}") from None
    try:
        obj = getattr(module, attr)
    except AttributeError:
        raise ValueError(f"cannot load agent {name!r}: module {module_name} has no "
                         f"{attr!r}") from None
    try:
        agent = obj() if isinstance(obj, type) else obj
    except Exception as e:
        raise ValueError(f"cannot load agent {name!r}: {attr}() raised "
                         f"{type(e).__name__}: {_one_line(e)}") from None
    missing = [a for a in ("name", "Config", "check_spec", "build") if not hasattr(agent, a)]
    if missing:
        raise ValueError(f"agent {name!r} lacks {', '.join(missing)}; see rltpu.Agent")
    return agent


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())
