"""Envs for central inference's tests: a counting env whose steps take as long as asked."""
from __future__ import annotations

import time

from rltpu.envs.fake import CountingEnv


class SleepyCountingEnv(CountingEnv):
    """A CountingEnv whose every step sleeps ``step_s`` seconds (one slow actor among fast)."""

    def __init__(self, step_s: float = 0.0):
        super().__init__(terminate_at=20)
        self.step_s = step_s

    def step(self, action):
        time.sleep(self.step_s)
        return super().step(action)
