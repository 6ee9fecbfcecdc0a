"""Builds gymnasium vector envs and the spec networks are built from."""
from __future__ import annotations

import contextlib
import difflib
import functools
import importlib
import types
from typing import Any, Literal, Mapping, get_args

import gymnasium as gym
import numpy as np

from rltpu.envs import atari
from rltpu import spaces
from rltpu.envs.spec import EnvSpec

Backend = Literal["auto", "gymnasium", "ale", "envpool"]
BACKENDS: tuple[str, ...] = get_args(Backend)


def _resolve(env_id: str):
    """Returns a zero-argument env constructor for ``module:Class`` ids, else None."""
    if atari.is_atari(env_id):
        atari.register()
    if ":" not in env_id:
        if env_id not in gym.envs.registry:
            close = difflib.get_close_matches(env_id, list(gym.envs.registry), n=3)
            hint = f"; did you mean {' or '.join(close)}?" if close else ""
            raise ValueError(f"unknown env {env_id!r}: not a registered gymnasium id "
                             f"nor a module:Class path{hint}")
        return None
    module_name, attr = env_id.split(":", 1)
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # the user's module, failing as it may: one line naming it
        hint = ("; is its folder on PYTHONPATH?" if isinstance(e, ModuleNotFoundError) else "")
        raise ValueError(f"unknown env {env_id!r}: importing {module_name} raised "
                         f"{type(e).__name__}: {' '.join(str(e).split())}{hint}") from None
    try:
        cls = getattr(module, attr)
    except AttributeError:
        raise ValueError(f"unknown env {env_id!r}: module {module_name} has no {attr!r}") from None
    # A gymnasium.Env class, or a function of the user's that returns one (checked when
    # called, in ``_checked``); any other callable (os:getcwd, say) is never called.
    if not ((isinstance(cls, type) and issubclass(cls, gym.Env))
            or isinstance(cls, types.FunctionType)):
        raise ValueError(f"env {env_id!r} is not a gymnasium.Env class nor a Python function "
                         f"returning one (it is {type(cls).__name__} {cls!r:.60})")
    return functools.partial(_checked, cls, env_id)


def _checked(factory, env_id: str, **kwargs) -> gym.Env:
    """``factory(**kwargs)``, refused unless it made a ``gymnasium.Env``."""
    env = factory(**kwargs)
    if not isinstance(env, gym.Env):
        raise ValueError(f"env {env_id!r} made a {type(env).__name__}, not a gymnasium.Env")
    return env


def _atari_backend(env_id: str, backend: str, full_action_space: bool) -> str | None:
    """The Atari backend for ``env_id`` (None if it is not an Atari game); checks the options."""
    if backend not in BACKENDS:
        raise ValueError(f"--env-backend {backend!r} is not one of {', '.join(BACKENDS)}")
    if not atari.is_atari(env_id):
        if backend not in ("auto", "gymnasium"):
            raise ValueError(f"--env-backend {backend} is for Atari games (ALE/...), not {env_id!r}")
        if full_action_space:
            raise ValueError(f"--full-action-space is for Atari games (ALE/...), not {env_id!r}")
        return None
    return "ale" if backend == "auto" else backend


def make(env_id: str, num_envs: int, seed: int, normalize_observations: bool = False,
         backend: str = "auto", full_action_space: bool = False,
         env_kwargs: Mapping[str, Any] | None = None, reward_discount: float | None = None,
         ) -> tuple[gym.vector.VectorEnv, EnvSpec]:
    """Makes ``num_envs`` copies of an env as one vector env, reset with ``seed``.

    Registered ids use the env's numpy-vectorised form when it has one (CartPole,
    Pendulum, ...), else a synchronous vector of single envs (MuJoCo's HalfCheetah-v5 and
    friends). Float64 observations become float32. With ``normalize_observations`` they
    are normalised by running statistics of this vector env (``ObservationStatistics``;
    ``observation_statistics`` reads them, ``exchange_statistics`` shares them) and clipped
    to [-10, 10]. Finished episodes' returns and lengths are reported in ``info["episode"]``
    (RecordEpisodeStatistics), in the env's own reward units, also with
    ``reward_discount``: then the rewards returned are divided by a running estimate of
    the standard deviation of the return discounted by it (gymnasium's NormalizeReward;
    ``ReturnStatistics``, shared as the observations') and clipped to [-10, 10].

    Atari games (``ALE/Pong-v5``) get the preprocessing of ``rltpu.envs.atari`` (uint8 frame
    stacks ``[4, 84, 84]``) from ``backend``: ``ale`` (ale-py's C++ vector env, what
    ``auto`` picks), ``gymnasium`` (the reference wrappers) or ``envpool``;
    ``full_action_space`` gives them all 18 actions.

    ``env_kwargs`` go to each env: ``gym.make(env_id, **env_kwargs)`` or
    ``Class(**env_kwargs)`` (not to Atari games, which take the options above).

    Returns:
      The vector env (already reset; its first observation is ``env.first_observation``)
      and the spec of one env.
    """
    if num_envs < 1:
        raise ValueError(f"num_envs must be >= 1, got {num_envs}")
    atari_backend = _atari_backend(env_id, backend, full_action_space)
    factory = _resolve(env_id)
    env_kwargs = _check_env_kwargs(env_id, env_kwargs, atari_backend is not None)
    if atari_backend is not None:
        env = atari.make_vector(env_id, num_envs, atari_backend,
                                atari.AtariSettings(full_action_space=full_action_space))
    elif factory is None:
        spec = gym.envs.registry[env_id]
        mode = "vector_entry_point" if spec.vector_entry_point is not None else "sync"
        with _naming_env_kwargs(env_id, env_kwargs):
            env = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode=mode, **env_kwargs)
    else:
        with _naming_env_kwargs(env_id, env_kwargs):
            env = gym.vector.SyncVectorEnv([functools.partial(factory, **env_kwargs)
                                            for _ in range(num_envs)])
    spaces.check_observation_space(env.single_observation_space, env_id)
    if getattr(env.single_observation_space, "dtype", None) == np.float64:
        env = gym.wrappers.vector.DtypeObservation(env, np.float32)
    elif spaces.is_container(env.single_observation_space):
        env = _float32_leaves(env)
    if normalize_observations:
        env = _NormalizeObservations(env)
    if isinstance(env.single_action_space, gym.spaces.Box):
        # Agents sample unbounded (Gaussian) actions and learn from the sample; the env
        # gets it clipped to its bounds.
        env = gym.wrappers.vector.ClipAction(env)
    env = gym.wrappers.vector.RecordEpisodeStatistics(env)
    if reward_discount is not None:
        # (outside RecordEpisodeStatistics, so that episode returns stay in the env's units)
        env = _NormalizeRewards(env, gamma=reward_discount)
        env = gym.wrappers.vector.ClipReward(env, -REWARD_CLIP, REWARD_CLIP)
    observation, _ = env.reset(seed=seed)
    env.first_observation = observation
    return env, EnvSpec(env_id, env.single_observation_space, env.single_action_space)


REWARD_CLIP = 10.0
"""Normalised rewards are clipped to [-REWARD_CLIP, REWARD_CLIP] (CleanRL's, SB3's bound)."""
OBSERVATION_CLIP = 10.0
"""Normalised observations are clipped to [-OBSERVATION_CLIP, OBSERVATION_CLIP] (CleanRL's,
SB3's ``VecNormalize``'s bound): the first steps, normalised by statistics of a few samples,
stay in range."""


def _clip_observation(x: np.ndarray) -> np.ndarray:
    return np.clip(x, -OBSERVATION_CLIP, OBSERVATION_CLIP)


def reward_discount(run, agent_config) -> float | None:
    """``make``'s ``reward_discount`` for a run: the agent's discount with
    ``--normalize-rewards``, else None."""
    return agent_config.discount if run.normalize_rewards else None


def _float32(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float32) if x.dtype == np.float64 else x


def _float32_leaves(env: gym.vector.VectorEnv) -> gym.vector.VectorEnv:
    """``env`` with the float64 leaves of its Dict or Tuple observations cast to float32
    (as ``DtypeObservation`` does for a Box); unchanged if it has none."""
    def cast_space(space):
        if isinstance(space, gym.spaces.Box) and space.dtype == np.float64:
            return gym.spaces.Box(space.low.astype(np.float32), space.high.astype(np.float32),
                                  space.shape, np.float32)
        return space
    single = _map_leaf_spaces(cast_space, env.single_observation_space)
    if single == env.single_observation_space:
        return env
    return gym.wrappers.vector.TransformObservation(
        env, lambda o: spaces.tree_map(_float32, o),
        observation_space=gym.vector.utils.batch_space(single, env.num_envs),
        single_observation_space=single)


def _map_leaf_spaces(fn, space: gym.Space) -> gym.Space:
    if isinstance(space, gym.spaces.Dict):
        return gym.spaces.Dict({k: _map_leaf_spaces(fn, s) for k, s in space.spaces.items()})
    if isinstance(space, gym.spaces.Tuple):
        return gym.spaces.Tuple(tuple(_map_leaf_spaces(fn, s) for s in space.spaces))
    return fn(space)


class RunningStatistics:
    """Running mean and variance of each float leaf of values of ``space`` (gymnasium's
    ``RunningMeanStd``; a Box is one leaf; integer leaves have none), which rollout actors
    share and checkpoints keep.

    ``state()`` and ``load(state)`` carry the statistics from one env to another (an
    actor's to the evaluator's, a checkpoint's to a resumed run's actors and to
    ``rltpu.load``'s policy); ``exchange`` shares them among actors
    (``rltpu.driver.SharedStatistics``).
    """

    WHAT, OF = "statistics", "values"  # (what errors call them and their values)

    def __init__(self, space: gym.Space, count: float = 1e-4):
        """``count``: the weight of the mean 0 and variance 1 the statistics start from
        (gymnasium's 1e-4; 0 for none)."""
        self.space = space
        self.frozen = False
        self.running = self._running(count)
        self._new = self._running(0.0)  # of the values since the last ``take_new``

    def _running(self, count: float):
        from gymnasium.wrappers.utils import RunningMeanStd
        return spaces._map_space(
            lambda s: (RunningMeanStd(count, shape=s.shape, dtype=s.dtype)
                       if np.issubdtype(s.dtype, np.floating) else None), self.space)

    def update(self, values, batched: bool) -> None:
        """Adds ``values`` (a batch of them if ``batched``) to the statistics, unless frozen."""
        if self.frozen:
            return

        def leaf(x, rms, new):
            if rms is not None:  # (as ``RunningMeanStd.update``, into both)
                batch = x if batched else x[None]
                moments = np.mean(batch, axis=0), np.var(batch, axis=0), batch.shape[0]
                rms.update_from_moments(*moments)
                new.update_from_moments(*moments)
        spaces.tree_map(leaf, values, self.running, self._new)

    @property
    def count(self) -> float:
        """How many values (and the starting weight) the statistics hold."""
        counts = [rms.count for rms in _leaves(self.running) if rms is not None]
        return counts[0] if counts else 0.0

    def moments(self):
        """The statistics: per float leaf ``{"mean", "var", "count"}`` (arrays), None per
        integer leaf, in the values' structure."""
        return _moments(self.running)

    def state(self):
        """``moments()`` as JSON values (lists of floats, nested as the leaf's shape; a
        Tuple's as a list), as checkpoints save them."""
        return spaces.tree_map(
            lambda rms: None if rms is None else {
                "mean": np.asarray(rms.mean, np.float64).tolist(),
                "var": np.asarray(rms.var, np.float64).tolist(), "count": float(rms.count)},
            self.running)

    def take_new(self):
        """The moments (``moments()``'s form) of the values added since the last call, which
        start anew (``count`` 0: none): what an actor hands over to statistics shared across
        actors (``rltpu.driver.SharedStatistics``)."""
        new, self._new = self._new, self._running(0.0)
        return _moments(new)

    def add(self, new) -> None:
        """Adds ``new`` (another's ``take_new()``) to the statistics, as if its values had
        been added here."""
        def leaf(rms, moments):
            if rms is not None and moments["count"] > 0:
                rms.update_from_moments(moments["mean"], moments["var"], moments["count"])
        spaces.tree_map(leaf, self.running, new)

    def exchange(self, shared):
        """For statistics shared across actors: hands over the values added since the last
        exchange (``take_new``) and goes on from ``shared`` (the statistics of all the values
        handed over so far, ``moments()``'s or ``state()``'s form; None: none yet) with them
        added.

        Raises:
          ValueError: ``shared`` does not fit the values (as ``load``).
        """
        new = self.take_new()
        if shared is not None:
            self.load(shared, frozen=False)
            self.add(new)
        return new

    def load(self, state, frozen: bool = True) -> None:
        """Takes ``state`` (another's ``state()``); ``frozen``: ``update`` no longer
        changes the statistics.

        Raises:
          ValueError: ``state`` is not statistics of values of this space (the statistics
            are unchanged).
        """
        what = self.WHAT
        if not _same_structure(self.running, state):
            raise ValueError(f"{what} do not have the {self.OF}' structure")
        loaded = []

        def leaf(rms, saved):
            if rms is None:
                return
            try:
                mean, var = (np.asarray(saved[k], np.float64) for k in ("mean", "var"))
                count = float(saved["count"])
            except (TypeError, KeyError, ValueError):
                raise ValueError(f"{what} {str(saved)[:60]!r} are not "
                                 "{'mean', 'var', 'count'} of numbers") from None
            if mean.shape != rms.mean.shape or var.shape != rms.mean.shape or not count > 0:
                raise ValueError(f"{what} of shape {mean.shape} (count {count}) do not fit "
                                 f"{self.OF} of shape {rms.mean.shape}")
            if not (np.isfinite(mean).all() and np.isfinite(var).all() and (var >= 0).all()
                    and np.isfinite(count)):
                raise ValueError(f"{what} hold a non-finite mean or variance, or a negative "
                                 "variance")
            loaded.append((rms, mean, var, count))
        spaces.tree_map(leaf, self.running, state)
        for rms, mean, var, count in loaded:
            rms.mean, rms.var, rms.count = mean, var, count
        self.frozen = frozen


class ObservationStatistics(RunningStatistics):
    """Running statistics of an env's observations, by which ``normalize`` scales them to
    about zero mean and unit variance, clipped to [-OBSERVATION_CLIP, OBSERVATION_CLIP]
    (gymnasium's ``NormalizeObservation``); integer leaves (MultiBinary) pass as they are."""

    WHAT, OF = "observation statistics", "observations"

    def __init__(self, space: gym.Space, epsilon: float = 1e-8, count: float = 1e-4):
        super().__init__(space, count)
        self.epsilon = epsilon

    def normalize(self, observations, batched: bool):
        """Updates the statistics with ``observations`` (unless frozen) and returns them
        normalised."""
        self.update(observations, batched)

        def leaf(x, rms):
            if rms is None:
                return x
            normalized = (x - rms.mean) / np.sqrt(rms.var + self.epsilon)
            return _clip_observation(normalized).astype(x.dtype)
        return spaces.tree_map(leaf, observations, self.running)


class ReturnStatistics(RunningStatistics):
    """Running statistics of the discounted returns by whose standard deviation
    ``--normalize-rewards`` divides rewards: gymnasium's ``NormalizeReward`` keeps them as its
    ``return_rms``, the part (``update``, ``var``) this plays in ``make``'s envs."""

    WHAT, OF = "return statistics", "returns"

    def __init__(self, count: float = 1e-4):
        super().__init__(gym.spaces.Box(-np.inf, np.inf, (), np.float64), count)

    def update(self, values, batched: bool = True) -> None:
        super().update(values, batched)

    @property
    def var(self):
        return self.running.var


def _moments(running):
    return spaces.tree_map(
        lambda rms: None if rms is None else {"mean": rms.mean, "var": rms.var,
                                              "count": float(rms.count)}, running)


def _leaves(tree) -> list:
    if isinstance(tree, dict):
        return [leaf for key in tree for leaf in _leaves(tree[key])]
    if isinstance(tree, tuple):
        return [leaf for part in tree for leaf in _leaves(part)]
    return [tree]


def _same_structure(tree, state) -> bool:
    """Whether ``state`` has ``tree``'s dicts (the same keys) and tuples (as lists or
    tuples of the same length) down to ``tree``'s leaves."""
    if isinstance(tree, dict):
        return (isinstance(state, dict) and set(state) == set(tree)
                and all(_same_structure(tree[k], state[k]) for k in tree))
    if isinstance(tree, tuple):
        return (isinstance(state, (list, tuple)) and len(state) == len(tree)
                and all(_same_structure(t, s) for t, s in zip(tree, state)))
    return True


class _NormalizeObservations(gym.vector.VectorObservationWrapper):
    """A vector env's observations normalised by running statistics of its own."""

    def __init__(self, env: gym.vector.VectorEnv):
        super().__init__(env)
        self.statistics = ObservationStatistics(env.single_observation_space)

    def observations(self, observations):
        return self.statistics.normalize(observations, batched=True)


class _NormalizeObservationsOne(gym.ObservationWrapper):
    """The same for one (unvectorised) env, as evaluation plays."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.statistics = ObservationStatistics(env.observation_space)

    def observation(self, observation):
        return self.statistics.normalize(observation, batched=False)


def normalize_one(env: gym.Env) -> gym.Env:
    """One env with its observations normalised by running statistics of its own (its
    ``statistics``), as ``make(..., normalize_observations=True)`` does."""
    return _NormalizeObservationsOne(env)


class _NormalizeRewards(gym.wrappers.vector.NormalizeReward):
    """gymnasium's ``NormalizeReward`` whose running statistics (``return_rms``) are
    ``ReturnStatistics``, which actors share and checkpoints keep."""

    def __init__(self, env: gym.vector.VectorEnv, gamma: float):
        super().__init__(env, gamma=gamma)
        self.statistics = self.return_rms = ReturnStatistics()


_KEPT = {"observation_statistics": _NormalizeObservations, "return_statistics": _NormalizeRewards}
"""The running statistics a vector env from ``make`` may keep, by the name checkpoints save
them under, and the wrapper that keeps them."""


def shared_statistics(observation_space: gym.Space, normalize_observations: bool,
                      normalize_rewards: bool) -> dict[str, RunningStatistics]:
    """Empty (count 0) statistics of each kind the envs of a run with these options keep,
    by ``_KEPT``'s names: what ``rltpu.driver.SharedStatistics`` merges the actors' into."""
    kept = {}
    if normalize_observations:
        kept["observation_statistics"] = ObservationStatistics(observation_space, count=0.0)
    if normalize_rewards:
        kept["return_statistics"] = ReturnStatistics(count=0.0)
    return kept


def _statistics(env: gym.vector.VectorEnv) -> dict[str, RunningStatistics]:
    """The running statistics ``env`` (from ``make``) keeps, by ``_KEPT``'s names."""
    kept = {}
    while env is not None:
        kept.update({name: env.statistics for name, wrapper in _KEPT.items()
                     if isinstance(env, wrapper)})
        env = getattr(env, "env", None)
    return kept


def observation_statistics(env: gym.vector.VectorEnv):
    """The state of the statistics ``env`` (from ``make``) normalises observations by
    (``ObservationStatistics.state``); None if it does not normalise them."""
    statistics = _statistics(env).get("observation_statistics")
    return None if statistics is None else statistics.state()


def load_statistics(env: gym.vector.VectorEnv, saved: dict) -> None:
    """``env`` (from ``make``) goes on from the statistics ``saved`` (a resumed run's
    actors from its checkpoint's: ``RunningStatistics.state``s by ``_KEPT``'s names),
    updating them as before. The observation it holds already was normalised by its own
    first statistics.

    Raises:
      ValueError: ``env`` does not keep statistics of a kind ``saved`` has, or they do not
        fit.
    """
    kept = _statistics(env)
    for name, state in saved.items():
        if name not in kept:
            raise ValueError(f"this env keeps no {name.replace('_', ' ')}")
        kept[name].load(state, frozen=False)


def exchange_statistics(env: gym.vector.VectorEnv, shared: dict) -> dict:
    """For statistics shared across actors (``rltpu.driver.SharedStatistics``): of each
    kind ``env`` (from ``make``) keeps, the values since the last exchange
    (``RunningStatistics.take_new``) are handed over, and ``env`` goes on from ``shared``'s
    (None or absent: none yet) with them added (``RunningStatistics.exchange``).

    Returns:
      What was handed over, by ``_KEPT``'s names.

    Raises:
      ValueError: ``shared`` does not fit.
    """
    return {name: statistics.exchange(shared.get(name))
            for name, statistics in _statistics(env).items()}


def make_spec(env_id: str, backend: str = "auto", full_action_space: bool = False,
              env_kwargs: Mapping[str, Any] | None = None) -> EnvSpec:
    """The spec of ``env_id`` without keeping an env (used to validate before Ray starts)."""
    # (normalisation keeps the observation space)
    env, spec = make(env_id, 1, seed=0, backend=backend, full_action_space=full_action_space,
                     env_kwargs=env_kwargs)
    env.close()
    return spec


def make_one(env_id: str, render_mode: str | None = None, full_action_space: bool = False,
             env_kwargs: Mapping[str, Any] | None = None) -> gym.Env:
    """One (unvectorised) env, for evaluation; ``render_mode="rgb_array"`` to record video.
    Atari games get the same preprocessing as in training (gymnasium's wrappers).

    Raises:
      ValueError: unknown env, or one that cannot render in ``render_mode``.
    """
    is_atari = _atari_backend(env_id, "auto", full_action_space) is not None
    env_kwargs = _check_env_kwargs(env_id, env_kwargs, is_atari)
    if is_atari:
        return atari.make_one(env_id, atari.AtariSettings(full_action_space=full_action_space),
                              render_mode)
    factory = _resolve(env_id)
    kwargs = dict(env_kwargs) if render_mode is None else {**env_kwargs, "render_mode": render_mode}
    try:
        return gym.make(env_id, **kwargs) if factory is None else factory(**kwargs)
    except TypeError as e:
        raise ValueError(f"env {env_id!r} cannot render as {render_mode!r}: {e}") from None


def _check_env_kwargs(env_id: str, env_kwargs: Mapping[str, Any] | None,
                      is_atari: bool) -> dict[str, Any]:
    """``env_kwargs`` as a dict; Atari games take none (their options are flags)."""
    if not env_kwargs:
        return {}
    if is_atari:
        raise ValueError(f"--env-kwargs is not for Atari games ({env_id}): they are made with "
                         "rltpu.envs.atari's settings (--full-action-space, --env-backend)")
    return dict(env_kwargs)


@contextlib.contextmanager
def _naming_env_kwargs(env_id: str, env_kwargs: Mapping[str, Any]):
    """Turns an env's refusal of ``env_kwargs`` (a TypeError) into a ValueError naming them."""
    try:
        yield
    except TypeError as e:
        if not env_kwargs:
            raise
        raise ValueError(f"--env-kwargs {_json(env_kwargs)}: env {env_id!r} does not take "
                         f"them ({e})") from None


def _json(value) -> str:
    import json
    return json.dumps(value)
