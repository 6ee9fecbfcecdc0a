"""Observation spaces as pytrees: what actors, trajectories, the learner's batch, the
networks and ``Policy.act`` need to handle a ``gymnasium.spaces.Dict`` or ``Tuple``
observation like a plain array.

An observation is a pytree whose structure follows its space: a ``Box`` (or another
array space) is one array; a ``Dict`` is a ``dict`` of its keys' observations; a ``Tuple``
a ``tuple`` of its parts' (nested as deep as the space is). Gymnasium's vector envs return
exactly that, with the env axis ``B`` first in every leaf, so every ``[T, B, ...]`` rule
of ``rltpu.types.Trajectory`` holds leaf by leaf and tree-mapped code (stacking, sharding,
validation, minibatching) needs nothing new. A plain ``Box`` observation is its own
one-leaf tree: everything here is the identity on it.

Leaves of a ``Dict`` or ``Tuple`` may be ``Box`` or ``MultiBinary`` (arrays of numbers the
networks read as they are). ``Discrete`` and ``MultiDiscrete`` leaves would need a one-hot
encoding the networks do not have yet; ``Text``, ``Graph``, ``Sequence`` and ``OneOf`` have
no fixed shape. ``check_observation_space`` refuses them in one line.
"""
from __future__ import annotations

from typing import Any, Sequence

import gymnasium as gym
import numpy as np

# JAX is imported only where a function needs it: env actors (``rltpu.env_actor``) use the
# buffer helpers and must not load JAX.

LEAF_SPACES = (gym.spaces.Box, gym.spaces.MultiBinary)
# A whole observation may also be one of these (as before Dict support): networks read
# its number(s) as they are.
TOP_LEVEL_SPACES = LEAF_SPACES + (gym.spaces.Discrete, gym.spaces.MultiDiscrete)
SUPPORTED = ("Box, MultiBinary, Discrete or MultiDiscrete, or a Dict or Tuple (nested as "
             "deep as you like) of Box and MultiBinary spaces")


def is_container(space: gym.Space) -> bool:
    """Whether ``space`` is a Dict or Tuple (its observations are pytrees of arrays)."""
    return isinstance(space, (gym.spaces.Dict, gym.spaces.Tuple))


def _problem(space: gym.Space, path: str, top: bool) -> str | None:
    if isinstance(space, gym.spaces.Dict):
        if not space.spaces:
            return f"{path or 'it'} is an empty Dict"
        for key, sub in space.spaces.items():
            if not isinstance(key, str):
                return f"{path}[{key!r}]: Dict keys must be strings"
            problem = _problem(sub, f"{path}[{key!r}]", False)
            if problem:
                return problem
        return None
    if isinstance(space, gym.spaces.Tuple):
        if not space.spaces:
            return f"{path or 'it'} is an empty Tuple"
        for i, sub in enumerate(space.spaces):
            problem = _problem(sub, f"{path}[{i}]", False)
            if problem:
                return problem
        return None
    if isinstance(space, TOP_LEVEL_SPACES if top else LEAF_SPACES):
        return None
    where = f" at {path}" if path else ""
    return f"{type(space).__name__}{where}"


def check_observation_space(space: gym.Space, env_id: str) -> None:
    """Raises ValueError, in one line naming the space and what is supported, unless
    rltpu can carry and learn from ``space``'s observations."""
    problem = _problem(space, "", True)
    if problem:
        raise ValueError(f"env {env_id!r} has observation space {_short(space)}: {problem} is "
                         f"not supported; supported: {SUPPORTED}")


def _short(thing, limit: int = 120) -> str:
    text = " ".join(str(thing).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _map_space(fn, space: gym.Space):
    """``fn(leaf_space)`` at every leaf of ``space``, in the pytree structure of its
    observations (Dict -> dict, Tuple -> tuple)."""
    if isinstance(space, gym.spaces.Dict):
        return {key: _map_space(fn, sub) for key, sub in space.spaces.items()}
    if isinstance(space, gym.spaces.Tuple):
        return tuple(_map_space(fn, sub) for sub in space.spaces)
    return fn(space)


def tree_map(fn, tree, *rest):
    """``jax.tree.map`` over observations (dicts and tuples of arrays, as gymnasium gives
    them) without JAX."""
    if isinstance(tree, dict):
        return {key: tree_map(fn, tree[key], *(r[key] for r in rest)) for key in tree}
    if isinstance(tree, (tuple, list)):
        return type(tree)(tree_map(fn, *parts) for parts in zip(tree, *rest))
    return fn(tree, *rest)


def observation_spec(space: gym.Space, lead: Sequence[int] = ()):
    """Shapes and dtypes (``jax.ShapeDtypeStruct``) of ``space``'s observations with leading
    axes ``lead`` (``(B,)`` for a vector env's), as a pytree."""
    import jax
    return _map_space(lambda s: jax.ShapeDtypeStruct((*lead, *s.shape), s.dtype), space)


def zeros(space: gym.Space, lead: Sequence[int] = ()):
    """Zero observations of ``space`` with leading axes ``lead`` (numpy), e.g. the example
    input networks are initialised with."""
    return _map_space(lambda s: np.zeros((*lead, *s.shape), s.dtype), space)


def leaf_ndims(space: gym.Space) -> tuple[int, ...]:
    """Each leaf's number of observation axes, in ``jax.tree.leaves`` order: how many
    trailing axes of each leaf ``flatten`` folds into features."""
    import jax
    return tuple(len(s.shape) for s in jax.tree.leaves(observation_spec(space)))


def flatten(observation, ndims: int | Sequence[int]):
    """Every leaf's observation axes flattened and concatenated, as float32:
    ``[..., *obs_shape]`` leaves -> ``[..., features]`` (jax or numpy arrays).

    A network's encoder for pytree observations: one leaf (a Box) gives exactly the
    flattened array of before.

    Args:
      observation: a pytree of arrays with the same leading axes.
      ndims: each leaf's number of observation axes (``leaf_ndims``); an int for one leaf.
    """
    import jax
    import jax.numpy as jnp
    leaves = jax.tree.leaves(observation)
    ndims = (ndims,) if isinstance(ndims, int) else tuple(ndims)
    if len(leaves) != len(ndims):
        raise ValueError(f"observation has {len(leaves)} leaves, the network was built for "
                         f"{len(ndims)}")
    flat = [x.reshape(*x.shape[:x.ndim - n], -1).astype(jnp.float32)
            for x, n in zip(leaves, ndims)]
    return flat[0] if len(flat) == 1 else jnp.concatenate(flat, axis=-1)


# Host-side buffers: the actor's ``[T + 1, B, ...]`` observation buffer and friends.

def empty_buffer(observation, length: int):
    """An uninitialised buffer of ``length`` observations shaped like ``observation``: every
    leaf ``[length, *leaf.shape]`` of the leaf's dtype."""
    return tree_map(lambda x: np.empty((length, *np.shape(x)), np.asarray(x).dtype),
                    observation)


def write(buffer, index: int, observation) -> None:
    """``buffer[index] = observation``, leaf by leaf (in place)."""
    if isinstance(buffer, np.ndarray):  # the common one-array case, without a tree walk
        buffer[index] = observation
        return
    tree_map(lambda b, x: b.__setitem__(index, x), buffer, observation)


def read(buffer, index):
    """``buffer[index]``, leaf by leaf (numpy views)."""
    if isinstance(buffer, np.ndarray):
        return buffer[index]
    return tree_map(lambda b: b[index], buffer)


def stack(observations: Sequence[Any], axis: int = 0):
    """Observations (pytrees of one structure) stacked leaf by leaf on a new ``axis``."""
    return tree_map(lambda *xs: np.stack(xs, axis=axis), *observations)


def concatenate(observations: Sequence[Any], axis: int = 0):
    """Observations (pytrees of one structure) concatenated leaf by leaf along ``axis``."""
    return tree_map(lambda *xs: np.concatenate(xs, axis=axis), *observations)


def as_batch(observation, space: gym.Space) -> tuple[Any, bool]:
    """``observation`` (one, or a batch with a leading axis) as a batch of ``space``'s
    observations, each leaf cast to its space's dtype; and whether it was one.

    Raises:
      ValueError: the structure is not the space's, or the leaves' shapes are neither one
        observation's nor a batch of them (with one batch size).
    """
    import jax
    spec = observation_spec(space)
    structure = jax.tree.structure(spec)
    try:  # (leaves may be lists: flattened only as deep as the space's structure)
        parts = structure.flatten_up_to(observation)
    except (ValueError, TypeError):
        raise ValueError(f"observation {_short(repr(observation), 80)}: the policy takes "
                         f"{_short(space)}") from None
    wants = jax.tree.leaves(spec)
    arrays = [np.asarray(x, dtype=want.dtype) for x, want in zip(parts, wants)]
    single = all(a.shape == want.shape for a, want in zip(arrays, wants))
    batched = (all(a.shape[1:] == want.shape and a.ndim == len(want.shape) + 1
                   for a, want in zip(arrays, wants))
               and len({a.shape[0] for a in arrays}) == 1)
    if not (single or batched) and structure.num_leaves == 1:  # a Box: as before Dict support
        shape = wants[0].shape
        raise ValueError(f"observation of shape {arrays[0].shape}: the policy takes {shape} or "
                         f"a batch [B, {', '.join(map(str, shape))}]")
    if not (single or batched):
        got = structure.unflatten([a.shape for a in arrays])
        want = structure.unflatten([w.shape for w in wants])
        raise ValueError(f"observation of shape {got}: the policy takes {want} or a batch of "
                         "them (one leading axis of one size on every part)")
    if single:
        arrays = [a[None] for a in arrays]
    return structure.unflatten(arrays), single
