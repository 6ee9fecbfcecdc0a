"""``validate``: every setting checked against the env, the agent and the devices before
anything starts, producing the ``Plan`` a run is carried out from.

The plan carries what validation had to build anyway (the env's spec, the agent's
functions, a JAX env's functions in Anakin mode), so nothing is built twice: the CLI
restores a checkpoint with ``plan.fns.init`` and both modes' loops take the plan as it is.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any

from rltpu import bounds, envs, rundir
from rltpu.agent import Agent, AgentFns
from rltpu.config import RunConfig
from rltpu.envs import jax_envs
from rltpu.rundir import RunDirLock
from rltpu.types import EnvSpec


@dataclasses.dataclass(frozen=True)
class Plan:
    """What ``validate`` established: everything a run needs before it starts processes."""

    agent: Agent
    agent_config: Any
    run: RunConfig
    spec: EnvSpec
    fns: AgentFns
    """The agent's functions for this spec and config, built once."""
    num_devices: int
    """Learner devices (of every learner process together)."""
    run_dir: str
    """The run directory (on learner processes other than 0, a placeholder: 0 writes it)."""
    jax_env: jax_envs.JaxEnv | None = None
    """Anakin mode: the JAX env's functions."""
    run_dir_lock: RunDirLock | None = None
    """Held on the run directory by learner process 0 from validation until the run ends
    (``release``d by ``rltpu.run.train_plan``): no second process resumes it meanwhile."""

    def config(self) -> dict:
        """The run's settings as ``config.json`` keeps them: ``{"run", "agent"}``; ``run.agent``
        names the agent trained (``agent_id``), whatever ``RunConfig.agent`` said."""
        return {"run": {**dataclasses.asdict(self.run), "agent": agent_id(self.agent, self.run.agent)},
                "agent": dataclasses.asdict(self.agent_config)}


def agent_id(agent: Agent, given: str) -> str:
    """How ``config.json`` names ``agent``: its built-in name, else ``given`` when that is a
    ``module:Agent`` path (the CLI's), else the agent's own ``module:Class``. From Python,
    ``rltpu.train(agents.get("ppo"), ..., RunConfig())`` leaves ``RunConfig.agent`` at its
    default, "impala", which ``rltpu.load`` would then build."""
    from rltpu import agents
    if agent.name in agents.BUILTIN and type(agent) is type(agents.get(agent.name)):
        return agent.name
    return given if ":" in given else f"{type(agent).__module__}:{type(agent).__qualname__}"


def check_env_and_agent(agent: Agent, agent_config: Any, run: RunConfig
                        ) -> tuple[EnvSpec, AgentFns, jax_envs.JaxEnv | None]:
    """The env's spec, the agent's functions for it and, in Anakin mode, the JAX env's
    functions (nothing compiles, no device is asked).

    Raises:
      ValueError: naming what does not fit.
    """
    jax_env = None
    if run.mode == "anakin":
        if not jax_envs.is_jax_env(run.env):
            raise ValueError(f"--mode anakin needs a JAX env, {jax_envs.PREFIX}NAME (e.g. "
                             f"{jax_envs.PREFIX}CartPole-v1); got --env {run.env!r}, which "
                             "--mode ray steps")
        for flag in ("normalize_observations", "normalize_rewards"):
            if getattr(run, flag):
                raise ValueError(f"--{flag.replace('_', '-')} is not supported in --mode "
                                 "anakin; use --mode ray")
        jax_env, spec = jax_envs.make(run.env)
    elif jax_envs.is_jax_env(run.env):
        raise ValueError(f"--env {run.env!r} is a JAX env: train it with --mode anakin "
                         "(--mode ray steps gymnasium envs, e.g. CartPole-v1)")
    else:
        spec = envs.make_spec(run.env, **run.env_options())
    agent.check_spec(spec)
    if run.normalize_rewards and not isinstance(getattr(agent_config, "discount", None), float):
        raise ValueError(f"--normalize-rewards scales rewards by the spread of the return "
                         f"discounted by the agent's discount; agent {run.agent!r} has none")
    fns = agent.build(spec, agent_config, run)  # raises on bad combinations
    if run.evaluates and run.eval_policy == "greedy" and fns.greedy_step is None:
        raise ValueError(f"--agent {agent.name} has no greedy_step to evaluate with; use "
                         "--eval-policy sample or no --eval-every-updates/--eval-every-s")
    if run.mode == "anakin" and fns.replay is not None:
        raise ValueError(f"--agent {agent.name} learns from a replay buffer, which --mode anakin "
                         "does not have; train it with --mode ray")
    return spec, fns, jax_env


def validate(agent: Agent, agent_config: Any, run: RunConfig, resume: bool = False) -> Plan:
    """Checks the settings against the env, the agent, the devices and this machine's CPUs
    and memory, then claims the run directory: a new one is made (atomically: two runs never
    get the same), an existing one (``resume``) locked. Starts no process.

    Args:
      resume: the run continues in ``run.run_dir``, which must exist.

    Raises:
      ValueError: naming the bad value and what would be valid (nothing is left behind).
    """
    if os.environ.get("RAY_AUTH_MODE", "").strip().lower() == "disabled":
        raise ValueError("RAY_AUTH_MODE=disabled: rltpu runs Ray only with token authentication "
                         "(anyone who can reach a Ray cluster can run code on it); unset it")
    cache = run.compilation_cache
    if cache is not None and os.path.exists(os.path.expanduser(cache)) and not os.path.isdir(
            os.path.expanduser(cache)):
        raise ValueError(f"--compilation-cache {cache!r} is not a directory; give a directory "
                         "(made if missing) or none")
    bounds.check_sizes(run)
    spec, fns, jax_env = check_env_and_agent(agent, agent_config, run)
    num_devices = bounds.check_devices(agent, fns, run)
    bounds.check_memory(run, spec)
    if run.wandb:
        from rltpu import sinks
        sinks.check_wandb()
    run_dir, lock = rundir.claim(agent, run, resume)
    return Plan(agent, agent_config, run, spec, fns, num_devices, run_dir, jax_env, lock)
