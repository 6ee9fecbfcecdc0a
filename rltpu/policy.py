"""A trained policy from Python: ``rltpu.load(RUN_DIR)`` and ``Policy.act``.

Example::

    policy = rltpu.load("runs/impala-CartPole-v1-...")
    env = gymnasium.make("CartPole-v1")
    observation, _ = env.reset(seed=0)
    action = policy.act(observation)            # one observation -> one action
    actions = policy.act(observations)          # a batch [B, ...] -> [B] actions

A run directory is data: ``load`` builds only the built-in agents and envs that its
``config.json`` names. A run of your own agent or of a ``module:Class`` env is loaded by
passing them: ``rltpu.load(run_dir, agent=MyAgent(), env="my_module:MyEnv")``.
"""
from __future__ import annotations

from typing import Any

import jax
import numpy as np

from rltpu import checkpoint as checkpoints
from rltpu import devices, spaces
from rltpu.agent import Agent
from rltpu.config import RunConfig
from rltpu.types import EnvSpec


class Policy:
    """A checkpoint's policy, on this process's CPU.

    Attributes:
      params: the network parameters (on the CPU).
      spec: the env spec the networks were built for.
      agent, agent_config, run: the agent and the settings of the run.
      checkpoint: the checkpoint's update count.
      run_dir: the run directory (None if the params did not come from one).

    A run trained with ``--normalize-observations`` normalised observations by running
    statistics kept in each actor, which are not saved: this policy sees observations as
    given.
    """

    def __init__(self, agent: Agent, agent_config: Any, run: RunConfig, spec: EnvSpec, params,
                 checkpoint: int | None = None, run_dir: str | None = None, seed: int = 0):
        """
        Args:
          params: the params of ``agent`` built for ``spec``, ``agent_config`` and ``run``.
          seed: seeds the sampling of ``act(..., greedy=False)``.
        """
        self.agent, self.agent_config, self.run, self.spec = agent, agent_config, run, spec
        self.checkpoint, self.run_dir = checkpoint, run_dir
        self.fns = agent.build(spec, agent_config, run)
        self.params = devices.to_actor_device(params)
        self._key = jax.random.key(seed)
        self._greedy_key = jax.random.key(0)
        fns = self.fns
        # (A greedy policy draws no random numbers; its step takes a key all the same.)
        self._greedy = (None if fns.greedy_step is None else
                        jax.jit(lambda p, obs, key: fns.greedy_step(p, obs, key).action))
        self._sampled = jax.jit(lambda p, obs, key: fns.actor_step(p, obs, key).action)

    def act(self, observation, greedy: bool = True) -> np.ndarray:
        """The action for one observation, or the actions for a batch of them.

        Args:
          observation: one observation (the env's observation shape) or a batch of them
            (a leading batch axis); any array-like, cast to the observation space's dtype.
            For a Dict or Tuple space, a dict or tuple of such arrays, each with the same
            leading batch axis in a batch (as a gymnasium vector env returns them).
          greedy: the most likely action (the agent's ``greedy_step``); False: sampled from
            the behaviour policy the actors used (``actor_step``).

        Returns:
          One action, or an array of actions with the batch's leading axis.

        Raises:
          ValueError: the observation's shape is neither the env's nor a batch of it, or
            the agent has no ``greedy_step`` (pass ``greedy=False``).
        """
        if self.fns.initial_core_state is not None:
            # act() takes an observation alone; a recurrent policy also needs its core state
            # and the previous action and reward (rltpu.evaluate.play keeps them per episode).
            raise ValueError(f"agent {self.agent.name!r} is recurrent: Policy.act does not "
                             "carry its core state yet; evaluate it with rltpu eval")
        if greedy and self._greedy is None:
            raise ValueError(f"agent {self.agent.name!r} has no greedy_step; act with "
                             "greedy=False (its behaviour policy)")
        batch, single = spaces.as_batch(observation, self.spec.observation_space)
        if greedy:  # (the sampling key only moves on when sampling)
            actions = np.asarray(self._greedy(self.params, batch, self._greedy_key))
        else:
            self._key, key = jax.random.split(self._key)
            actions = np.asarray(self._sampled(self.params, batch, key))
        return actions[0] if single else actions


def load(run_dir: str, checkpoint: int | None = None, *, agent: Agent | None = None,
         env: str | None = None, seed: int = 0) -> Policy:
    """The policy of a run's checkpoint.

    Args:
      run_dir: a run directory (``rltpu train`` made it).
      checkpoint: the checkpoint (its update count) to load; default the newest complete one.
      agent: the agent to build, for a run whose ``config.json`` names one that is not
        built in (a ``module:Agent`` path is never imported from a run directory).
      env: the env to build the spec from instead of the run's, for a run of a
        ``module:Class`` env (likewise never imported from a run directory).
      seed: seeds ``act(..., greedy=False)``.

    Raises:
      ValueError: no run directory or checkpoint there, a run of an agent or env that is
        not built in and not passed, or settings this agent does not take.
    """
    from rltpu import agents, resume
    from rltpu.envs import jax_envs

    saved = resume.read_run_config(run_dir, flag="")
    name = saved["run"].get("agent")
    if agent is None:
        if name not in agents.BUILTIN:
            raise ValueError(f"{run_dir}: agent {name!r} is not a built-in agent, and a run "
                             "directory never decides what code is imported: pass it, "
                             f"rltpu.load(run_dir, agent=...) or rltpu eval --agent {name}")
        agent = agents.get(name)
    env_id = env if env is not None else saved["run"].get("env", RunConfig.env)
    if env is None and ":" in env_id and not jax_envs.is_jax_env(env_id):
        raise ValueError(f"{run_dir}: env {env_id!r} is a module path, and a run directory "
                         f"never decides what code is imported: pass it, "
                         f"rltpu.load(run_dir, env={env_id!r}) or rltpu eval --env {env_id}")
    run = _settings(RunConfig, {**saved["run"], "env": env_id}, run_dir, "run")
    agent_config = _settings(agent.Config, saved["agent"], run_dir, f"agent {agent.name}")
    if jax_envs.is_jax_env(env_id):
        _, spec = jax_envs.make(env_id)
    else:
        from rltpu import envs
        spec = envs.make_spec(env_id, **run.env_options())
    agent.check_spec(spec)
    fns = agent.build(spec, agent_config, run)
    restored = checkpoints.restore(run_dir, fns.init, checkpoint)
    return Policy(agent, agent_config, run, spec, restored.state.params, restored.step, run_dir,
                  seed)


def _settings(cls, values: dict, run_dir: str, what: str):
    import dataclasses
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"{run_dir}: config.json's {what} settings {', '.join(unknown)} are "
                         "not settings of this version")
    try:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
    except (TypeError, ValueError) as e:
        raise ValueError(f"{run_dir}: config.json's {what} settings: {e}") from None
