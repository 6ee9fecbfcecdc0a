"""What R2D2 stores: fixed-length sequences with the core state they start from (numpy;
runs in the replay actor)."""
from __future__ import annotations

import jax
import numpy as np

from rltpu.types import Trajectory


def to_sequences(trajectory: Trajectory) -> dict:
    """Each of a ``[T, B]`` trajectory's B columns as one stored sequence of T steps.

    Returns:
      ``{"observation" [B, T + 1, ...], "action", "reward", "terminated", "truncated",
      "valid" [B, T], "start" (the trajectory's ``RecurrentStart``, leaves [B, ...])}``:
      batch-major, as the replay stores and samples items.
    """
    batch_major = lambda x: np.swapaxes(np.asarray(x), 0, 1)
    return {"observation": jax.tree.map(batch_major, trajectory.observation),
            "action": batch_major(trajectory.action),
            "reward": batch_major(trajectory.reward),
            "terminated": batch_major(trajectory.terminated),
            "truncated": batch_major(trajectory.truncated),
            "valid": batch_major(trajectory.valid),
            "start": jax.tree.map(lambda x: np.asarray(x)[0], trajectory.start)}  # [1, B] -> [B]
