"""``validate``: every setting checked against the env, the agent and the devices before
anything starts, producing the ``Plan`` a run is carried out from.

The plan carries what validation had to build anyway (the env's spec, the agent's
functions, a JAX env's functions in Anakin mode), so nothing is built twice: the CLI
restores a checkpoint with ``plan.fns.init`` and both modes' loops take the plan as it is.
"""
from __future__ import annotations

import dataclasses
import datetime
import os
from typing import Any

from rltpu import devices, envs
from rltpu.agent import Agent, AgentFns
from rltpu.config import RunConfig
from rltpu.envs import jax_envs
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
        if run.normalize_observations:
            raise ValueError("--normalize-observations is not supported in --mode anakin; "
                             "use --mode ray")
        jax_env, spec = jax_envs.make(run.env)
    elif jax_envs.is_jax_env(run.env):
        raise ValueError(f"--env {run.env!r} is a JAX env: train it with --mode anakin "
                         "(--mode ray steps gymnasium envs, e.g. CartPole-v1)")
    else:
        spec = envs.make_spec(run.env, **run.env_options())
    agent.check_spec(spec)
    fns = agent.build(spec, agent_config, run)  # raises on bad combinations
    if run.mode == "anakin" and fns.replay is not None:
        raise ValueError(f"--agent {agent.name} learns from a replay buffer, which --mode anakin "
                         "does not have; train it with --mode ray")
    return spec, fns, jax_env


def validate(agent: Agent, agent_config: Any, run: RunConfig, resume: bool = False) -> Plan:
    """Checks the settings against the env, the agent and the devices; starts nothing.

    Args:
      resume: the run continues in ``run.run_dir``, which must exist.

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
    spec, fns, jax_env = check_env_and_agent(agent, agent_config, run)
    num_devices = _check_devices(agent, fns, run)
    if run.wandb:
        from rltpu import sinks
        sinks.check_wandb()
    return Plan(agent, agent_config, run, spec, fns, num_devices,
                _run_dir(agent, run, resume), jax_env)


def _check_devices(agent: Agent, fns: AgentFns, run: RunConfig) -> int:
    """The learner devices the run uses; checks that its batches split over them."""
    available = devices.device_count()
    num_devices = run.num_devices or available
    if num_devices > available:
        raise ValueError(f"--num-devices {num_devices} but only {available} "
                         f"{devices.platform()} devices are present")
    processes = devices.process_count()
    if processes > 1:
        if run.mode == "anakin":
            raise ValueError(f"--mode anakin runs on one host; {processes} learner processes "
                             "were started (use --mode ray for a multi-host learner)")
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
    return num_devices


def _run_dir(agent: Agent, run: RunConfig, resume: bool) -> str:
    """The run directory: the one given (new, or existing when resuming) or a new default."""
    if devices.process_index() != 0:
        return run.run_dir or "(process 0's run directory)"  # only process 0 writes it
    if run.run_dir is not None:
        if resume and not os.path.isdir(run.run_dir):
            raise ValueError(f"--resume {run.run_dir}: no such run directory")
        if not resume and os.path.exists(run.run_dir):
            raise ValueError(f"--run-dir {run.run_dir} already exists; runs are never "
                             "overwritten, pass a new path")
        return run.run_dir
    if resume:
        raise ValueError("resuming needs the run directory")
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    name = f"{agent.name}-{run.env.replace('/', '_').replace(':', '_')}-{stamp}"
    base = run_dir = os.path.join("runs", name)
    n = 1
    while os.path.exists(run_dir):
        run_dir, n = f"{base}-{n}", n + 1
    return run_dir
