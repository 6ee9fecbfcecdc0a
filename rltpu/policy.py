"""A trained policy from Python: ``rltpu.load(RUN_DIR)`` and ``Policy.act``.

Example::

    policy = rltpu.load("runs/impala-CartPole-v1-...")
    env = gymnasium.make("CartPole-v1")
    observation, _ = env.reset(seed=0)
    action = policy.act(observation)            # one observation -> one action
    actions = policy.act(observations)          # a batch [B, ...] -> [B] actions

A recurrent run's policy keeps its core state per batch row between calls::

    policy.reset()                              # every row starts an episode
    action = policy.act(observation)
    observation, reward, terminated, truncated, _ = env.step(action)
    action = policy.act(observation, reward=reward)   # the reward the last action earned

A run directory is data: ``load`` builds only the built-in agents and envs that its
``config.json`` names. A run of your own agent or of a ``module:Class`` env is loaded by
passing them: ``rltpu.load(run_dir, agent=MyAgent(), env="my_module:MyEnv")``.
"""
from __future__ import annotations

from typing import Any

import jax
import numpy as np

from rltpu import checkpoint as checkpoints
from rltpu import devices, recurrent, spaces
from rltpu.agent import Agent
from rltpu.config import RunConfig
from rltpu.types import EnvSpec, StepContext


class Policy:
    """A checkpoint's policy, on this process's CPU.

    Attributes:
      params: the network parameters (on the CPU).
      spec: the env spec the networks were built for.
      agent, agent_config, run: the agent and the settings of the run.
      checkpoint: the checkpoint's update count.
      run_dir: the run directory (None if the params did not come from one).
      core_state, context: a recurrent agent's kept core state and ``StepContext`` per batch
        row (None before the first ``act`` and after ``reset()``).

    A run trained with ``--normalize-observations`` normalised observations by running
    statistics its actors shared; its checkpoints save them (``observation_statistics``),
    and ``act`` normalises by them, frozen. A checkpoint without them (saved before the
    actor first answered, or by rltpu before 0.2) leaves observations as given.
    """

    def __init__(self, agent: Agent, agent_config: Any, run: RunConfig, spec: EnvSpec, params,
                 checkpoint: int | None = None, run_dir: str | None = None, seed: int = 0,
                 observation_statistics=None):
        """
        Args:
          params: the params of ``agent`` built for ``spec``, ``agent_config`` and ``run``.
          seed: seeds the sampling of ``act(..., greedy=False)``.
          observation_statistics: with ``run.normalize_observations``, the statistics to
            normalise observations by (``rltpu.envs.make.ObservationStatistics.state``).

        Raises:
          ValueError: ``observation_statistics`` do not fit ``spec``'s observations.
        """
        self.agent, self.agent_config, self.run, self.spec = agent, agent_config, run, spec
        self.checkpoint, self.run_dir = checkpoint, run_dir
        self.observation_statistics = self._normalizer = None
        if run.normalize_observations and observation_statistics is not None:
            from rltpu.envs.make import ObservationStatistics
            self._normalizer = ObservationStatistics(spec.observation_space)
            self._normalizer.load(observation_statistics)  # (frozen)
            self.observation_statistics = observation_statistics
        self.fns = agent.build(spec, agent_config, run)
        self.params = devices.to_actor_device(params)
        self._key = jax.random.key(seed)
        self._greedy_key = jax.random.key(0)
        fns = self.fns
        # (A greedy policy draws no random numbers; its step takes a key all the same.)
        # A recurrent agent's steps also take and return its core state (see ``act``).
        self._greedy = (None if fns.greedy_step is None else
                        jax.jit(_action_step(fns, greedy=True)))
        self._sampled = jax.jit(_action_step(fns, greedy=False))
        self.core_state = self.context = None  # a recurrent agent's, per batch row

    def act(self, observation, greedy: bool = True, *, reward=None,
            episode_start=None) -> np.ndarray:
        """The action for one observation, or the actions for a batch of them.

        A recurrent agent's policy (``--core lstm|gru``) keeps its core state, the previous
        action and whether an episode starts, per batch row, from call to call: give it each
        env's observations in order, the ``reward`` the previous action earned, and
        ``episode_start`` where an observation begins a new episode (``reset()`` starts
        every row afresh). Row ``i`` of every call must be the same env.

        Args:
          observation: one observation (the env's observation shape) or a batch of them
            (a leading batch axis); any array-like, cast to the observation space's dtype.
            For a Dict or Tuple space, a dict or tuple of such arrays, each with the same
            leading batch axis in a batch (as a gymnasium vector env returns them).
          greedy: the most likely action (the agent's ``greedy_step``); False: sampled from
            the behaviour policy the actors used (``actor_step``).
          reward: recurrent agents: the reward of the previous call's action, per row (a
            scalar for one observation); needed on every row that does not start an episode.
          episode_start: recurrent agents: True where the observation begins an episode
            (the core restarts there); a bool or ``[B]`` bools. The first call after
            ``reset()`` (or the first ever) starts every row.

        Returns:
          One action, or an array of actions with the batch's leading axis.

        Raises:
          ValueError: the observation's shape is neither the env's nor a batch of it, the
            agent has no ``greedy_step`` (pass ``greedy=False``), or (recurrent agents) no
            ``reward`` for a row that continues an episode, or a batch size other than the
            one the kept state has (call ``reset()`` first).
        """
        if greedy and self._greedy is None:
            raise ValueError(f"agent {self.agent.name!r} has no greedy_step; act with "
                             "greedy=False (its behaviour policy)")
        batch, single = spaces.as_batch(observation, self.spec.observation_space)
        if self._normalizer is not None:
            batch = self._normalizer.normalize(batch, batched=True)
        size = len(jax.tree.leaves(batch)[0])
        # (checked before the key moves on: a refused call changes nothing)
        context = self._context_for(size, reward, episode_start) if self.recurrent else None
        if greedy:  # (the sampling key only moves on when sampling)
            key = self._greedy_key
        else:
            self._key, key = jax.random.split(self._key)
        step = self._greedy if greedy else self._sampled
        if context is None:
            actions = np.asarray(step(self.params, batch, key))
        else:
            if self.core_state is None:
                self.core_state = self.fns.initial_core_state(size)
            actions, self.core_state = step(self.params, batch, key, self.core_state, context)
            actions = np.asarray(actions)
            # The next call continues every row's episode unless it says otherwise.
            self.context = recurrent.next_context(context, actions, context.prev_reward,
                                                  np.zeros(size, bool))
        return actions[0] if single else actions

    @property
    def recurrent(self) -> bool:
        """Whether the agent is recurrent (``act`` then keeps a core state per batch row)."""
        return recurrent.is_recurrent(self.fns)

    def reset(self) -> None:
        """Forgets the kept core states: the next ``act`` starts an episode in every row,
        from the agent's initial core state (any batch size). Nothing to do for a
        feed-forward agent."""
        self.core_state = self.context = None

    def _context_for(self, size: int, reward, episode_start) -> StepContext:
        """The context of this call's ``size`` observations, from the kept one (or a fresh
        one after ``reset()``), the rewards the last actions earned and the episode starts."""
        kept = self.context
        if kept is None:  # after reset(): every row starts from the initial state
            self.core_state = None
            kept = recurrent.initial_context(self.spec, size)
        elif kept.first.shape[0] != size:
            raise ValueError(f"a batch of {size} observations: this policy keeps the core "
                             f"states of {kept.first.shape[0]} envs; call reset() to "
                             "start over with another batch size")
        first = kept.first
        if episode_start is not None:
            first = first | np.broadcast_to(np.asarray(episode_start, bool), (size,))
        prev_reward = kept.prev_reward
        if reward is not None:
            prev_reward = np.broadcast_to(np.asarray(reward, np.float32), (size,))
        elif not first.all():
            raise ValueError(f"agent {self.agent.name!r} is recurrent: pass reward= (what the "
                             "previous action earned) for rows that do not start an episode "
                             "(episode_start=True there), or call reset()")
        return StepContext(first=np.array(first), prev_action=kept.prev_action,
                           prev_reward=np.array(prev_reward, np.float32))


def policy_step(fns, greedy: bool = True):
    """``fns.greedy_step`` (or, not ``greedy``, ``fns.actor_step``) as ``(params, obs, key,
    core, context) -> (action, core)``; a feed-forward agent's core state is ``()`` and it
    ignores the context."""
    act = fns.greedy_step if greedy else fns.actor_step
    if recurrent.is_recurrent(fns):
        def step(params, observation, key, core, context):
            out, core = act(params, observation, key, core, context)
            return out.action, core
        return step
    return lambda params, observation, key, core, context: (
        act(params, observation, key).action, core)


def _action_step(fns, greedy: bool):
    """``policy_step`` without a core for a feed-forward agent: ``(params, obs, key) ->
    action``; a recurrent agent's as it is."""
    step = policy_step(fns, greedy)
    if recurrent.is_recurrent(fns):
        return step
    return lambda params, observation, key: step(params, observation, key, (), None)[0]


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
    try:
        return Policy(agent, agent_config, run, spec, restored.state.params, restored.step,
                      run_dir, seed, restored.counters.get("observation_statistics"))
    except ValueError as e:
        raise ValueError(f"checkpoint {restored.path}: {e}") from None


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
