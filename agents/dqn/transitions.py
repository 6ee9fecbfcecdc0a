"""n-step transitions from time-major trajectories (numpy; runs in the replay actor)."""
from __future__ import annotations

import jax
import numpy as np

from rltpu import spaces

from rltpu.types import Trajectory


def n_step_transitions(trajectory: Trajectory, n: int, discount: float,
                       clip_rewards: bool = False) -> dict:
    """One transition per valid step of a ``[T, B]`` trajectory.

    The return sums up to ``n`` rewards, ``R = sum_k gamma^k r_{t+k}``, stopping early where
    the episode ends or the unroll does. It bootstraps from the observation after its last
    step with ``bootstrap_discount = gamma^k`` (``k`` steps summed), or 0 if that step
    terminated the episode; a time-limit truncation bootstraps from the episode's true
    last observation.

    Returns:
      ``observation [N, ...], action [N, ...], n_step_return [N], bootstrap_discount [N],
      next_observation [N, ...]`` (float32 scalars), N = number of valid steps.
      Observations keep their dtype (uint8 frames stay uint8 in the replay). With
      ``clip_rewards`` each reward is clipped to [-1, 1] before it is summed.
    """
    obs = jax.tree.map(np.asarray, trajectory.observation)  # a pytree for Dict/Tuple spaces
    reward = np.asarray(trajectory.reward, np.float64)
    if clip_rewards:
        reward = np.clip(reward, -1.0, 1.0)
    terminated = np.asarray(trajectory.terminated)
    ended = terminated | np.asarray(trajectory.truncated)
    valid = np.asarray(trajectory.valid)
    T, B = reward.shape
    columns = np.arange(B)
    out = {k: [] for k in ("observation", "action", "n_step_return", "bootstrap_discount",
                           "next_observation")}
    for t in range(T):
        ret = np.zeros(B)
        scale = np.ones(B)  # gamma^k while the sum goes on, frozen once it stops
        running = np.ones(B, bool)
        last = np.full(B, t)  # the last step summed
        for k in range(min(n, T - t)):
            step = t + k
            ret += np.where(running, scale * reward[step], 0.0)
            last = np.where(running, step, last)
            scale = np.where(running, scale * discount, scale)
            running &= ~ended[step]
        bootstrap = np.where(terminated[last, columns], 0.0, scale)
        keep = valid[t]
        out["observation"].append(jax.tree.map(lambda o: o[t][keep], obs))
        out["action"].append(np.asarray(trajectory.action)[t][keep])
        out["n_step_return"].append(ret[keep].astype(np.float32))
        out["bootstrap_discount"].append(bootstrap[keep].astype(np.float32))
        out["next_observation"].append(jax.tree.map(lambda o: o[last + 1, columns][keep], obs))
    return {k: spaces.concatenate(v) for k, v in out.items()}
