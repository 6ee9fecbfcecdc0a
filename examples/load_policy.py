"""A trained policy from Python: ``rltpu.load(RUN_DIR)`` and ``policy.act``.

    python examples/load_policy.py runs/impala-CartPole-v1-20261130-101500

``act`` takes one observation or a batch (a leading axis) and returns the greedy action(s)
(``greedy=False``: sampled from the behaviour policy). ``load`` builds only the built-in
agents and envs a run's ``config.json`` names; pass your own with ``agent=`` / ``env=``.
"""
from __future__ import annotations

import sys

import gymnasium as gym

import rltpu


def play(run_dir: str, episodes: int = 5, seed: int = 0) -> list[float]:
    policy = rltpu.load(run_dir)  # the newest complete checkpoint
    env = gym.make(policy.spec.env_id)
    returns = []
    for i in range(episodes):
        observation, _ = env.reset(seed=seed + i)
        total, done = 0.0, False
        while not done:
            observation, reward, terminated, truncated, _ = env.step(policy.act(observation))
            total, done = total + float(reward), terminated or truncated
        returns.append(total)
    env.close()
    return returns


if __name__ == "__main__":
    print(play(sys.argv[1]))
