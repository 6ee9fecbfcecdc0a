"""Live console progress on stderr.

On a terminal: one line redrawn in place, with a bar of env steps against the budget,
steps/s, mean return, policy lag and the time left. Elsewhere (CI logs, files): one plain
line per metrics row, so logs stay readable; ``quiet``: nothing.
"""
from __future__ import annotations

import math
import shutil
import sys
from typing import TextIO

BAR_WIDTH = 24


def eta(env_steps: int, total_env_steps: int, env_sps: float) -> float:
    """Seconds until ``total_env_steps`` at ``env_sps`` (inf when nothing moves)."""
    if env_sps <= 0:
        return math.inf
    return max(total_env_steps - env_steps, 0) / env_sps


def format_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "--:--"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def bar(fraction: float, width: int = BAR_WIDTH) -> str:
    filled = min(width, max(0, int(fraction * width)))
    return "#" * filled + "." * (width - filled)


class Progress:
    """Shows each metrics row; a bar on a terminal, plain lines otherwise.

    Args:
      total_env_steps: the run's step budget.
      stream: where to write (stderr by default).
      quiet: write nothing.
      live: redraw one line in place; default: whether ``stream`` is a terminal.
    """

    def __init__(self, total_env_steps: int, stream: TextIO | None = None, quiet: bool = False,
                 live: bool | None = None):
        self.total_env_steps = total_env_steps
        self.stream = sys.stderr if stream is None else stream
        self.quiet = quiet
        self.live = self.stream.isatty() if live is None else live
        self._drawn = False

    def line(self, row: dict) -> str:
        if "eval/return" in row:  # an evaluation's row (``Run.evaluated``): no training columns
            return (f"[{row['time_s']:7.1f}s] eval return {row['eval/return']:.1f} "
                    f"+- {row['eval/return_std']:.1f} over {row['eval/episodes']} episodes"
                    f"  (params of update {row['eval/learner_updates']:,},"
                    f" {row['eval/env_steps']:,} steps)")
        steps, sps = row["env_steps"], row["env_sps"]
        ret = row.get("mean_return")
        ret = "-" if ret is None else f"{ret:.1f}"
        left = format_duration(eta(steps, self.total_env_steps, sps))
        if self.live:
            fraction = steps / self.total_env_steps
            return (f"[{bar(fraction)}] {fraction:4.0%} {steps:,}/{self.total_env_steps:,} steps"
                    f"  {sps:,.0f} steps/s  return {ret}  lag {row['policy_lag']:.1f}"
                    f"  left {left}")
        return (f"[{row['time_s']:7.1f}s] steps {steps:>10,}/{self.total_env_steps:,}"
                f"  sps {sps:>8,.0f}  return {ret:>7}  lag {row['policy_lag']:4.1f}"
                f"  updates {row['learner_updates']:,}  left {left}")

    def update(self, row: dict) -> None:
        if self.quiet:
            return
        if self.live and "eval/return" in row:  # kept on a line of its own above the bar
            self.stream.write("\r" + self.line(row) + "\x1b[K\n")
            self._drawn = False
        elif self.live:
            # \r and "erase to end of line" redraw the same line; a line wider than the
            # terminal would wrap, and \r would then redraw only its last part.
            width = shutil.get_terminal_size().columns - 1
            self.stream.write("\r" + self.line(row)[:width] + "\x1b[K")
            self._drawn = True
        else:
            self.stream.write(self.line(row) + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False
