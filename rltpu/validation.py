"""Bad data never reaches the params: incoming unrolls are checked, non-finite updates skipped.

``UnrollValidator`` rejects an unroll whose arrays have the wrong structure, shape or dtype,
hold non-finite floats, or carry a params version the learner never published.
``skip_nonfinite`` wraps an agent's update (inside the jitted step, agents unchanged) so an
update whose loss, gradients or new state are not finite keeps the old state.
``NonFiniteGuard`` stops the run after too many such updates in a row.
"""
from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np

from rltpu import console
from rltpu.types import TrainState, Trajectory, Unroll


class NonFiniteUpdatesError(RuntimeError):
    """Too many updates in a row had a non-finite loss or gradient."""


def unroll_example(batch_example: Trajectory, envs_per_actor: int) -> Trajectory:
    """Shapes and dtypes of one actor's unroll, from those of a ``[T, B]`` batch."""
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct((x.shape[0], envs_per_actor, *x.shape[2:]), x.dtype),
        batch_example)


class UnrollValidator:
    """Checks each unroll from an actor before it may join a batch; counts rejections."""

    def __init__(self, example: Trajectory):
        self._example = example
        self._structure = jax.tree.structure(example)
        self.rejected = 0

    def problem(self, unroll: Unroll, latest_version: int) -> str | None:
        """What is wrong with ``unroll`` (None if nothing)."""
        trajectory = unroll.trajectory
        if not isinstance(trajectory, Trajectory):
            return f"its trajectory is a {type(trajectory).__name__}, not a Trajectory"
        if jax.tree.structure(trajectory) != self._structure:
            return "its trajectory's fields differ from the agent's"
        paths = jax.tree_util.tree_flatten_with_path(trajectory)[0]
        for (path, got), want in zip(paths, jax.tree.leaves(self._example)):
            name = jax.tree_util.keystr(path).lstrip(".")
            got = np.asarray(got)
            if got.shape != want.shape or got.dtype != want.dtype:
                return f"{name} is {got.shape} {got.dtype}, expected {want.shape} {want.dtype}"
            if np.issubdtype(got.dtype, np.floating) and not np.isfinite(got).all():
                return f"{name} has non-finite values"
        version = trajectory.policy_version
        if version.min() < 0 or version.max() > latest_version:
            return (f"policy_version spans {version.min()}..{version.max()}, outside the "
                    f"published 0..{latest_version}")
        returns = np.asarray(unroll.episode_returns)
        if not np.isfinite(returns).all():
            return "episode_returns has non-finite values"
        if unroll.env_steps != int(trajectory.valid.sum()):
            return f"env_steps {unroll.env_steps} != {int(trajectory.valid.sum())} valid steps"
        return None

    def accept(self, unrolls: list[Unroll], latest_version: int) -> list[Unroll]:
        """The unrolls that pass; each rejected one is counted and logged."""
        good = []
        for unroll in unrolls:
            problem = self.problem(unroll, latest_version)
            if problem is None:
                good.append(unroll)
                continue
            self.rejected += 1
            console.warn(f"rejected an unroll from actor {getattr(unroll, 'actor_id', '?')}: {problem} "
                         f"({self.rejected} rejected so far)")
        return good


def _all_finite(tree) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
              if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def skip_nonfinite(update):
    """Wraps ``update(state, batch) -> (state, metrics)`` to keep the old state when the
    new params or optimizer state or any metric (the loss) is not finite.

    Non-finite gradients show up in the new params and optimizer state (Adam's moments), so
    checking those and the metrics catches both without the agent exposing its gradients.
    The metrics gain ``update_skipped`` (a bool scalar).
    """
    def guarded(state: TrainState, batch):
        new_state, metrics = update(state, batch)
        finite = _all_finite((new_state.params, new_state.opt_state, metrics))
        state = jax.lax.cond(finite, lambda: new_state, lambda: state)
        return state, {**metrics, "update_skipped": jnp.logical_not(finite)}
    return guarded


class NonFiniteGuard:
    """Counts skipped updates; raises after ``limit`` in a row."""

    def __init__(self, limit: int):
        self._limit = limit
        self.in_a_row = 0
        self.skipped = 0

    def record(self, skipped: bool, version: int) -> None:
        if not skipped:
            self.in_a_row = 0
            return
        self.skipped += 1
        self.in_a_row += 1
        console.warn(f"update {version} skipped: non-finite loss or gradients "
                     f"({self.in_a_row} in a row, {self.skipped} in all)")
        if self.in_a_row >= self._limit:
            raise NonFiniteUpdatesError(
                f"{self.in_a_row} updates in a row had a non-finite loss or gradients "
                f"(--max-nonfinite-updates {self._limit}); the run stopped")
