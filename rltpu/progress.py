"""Live console progress on stderr.

On a terminal: one line redrawn in place, with a bar of env steps against the budget,
steps/s, mean return, policy lag and the time left. In a Jupyter kernel (a notebook,
Colab), where stderr is not a terminal: a ``tqdm.auto`` bar updated in place (a widget
where ipywidgets is installed, as on Colab). Elsewhere (CI logs, files): one plain line per
metrics row, so logs stay readable; ``quiet``: nothing.
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


def in_jupyter_kernel() -> bool:
    """Whether this process is a Jupyter kernel (IPython's kernel, which Colab runs too).

    Looks only at what is imported already: a process that never imported ipykernel is no
    kernel, and this imports nothing new there.
    """
    if "ipykernel" not in sys.modules or "IPython" not in sys.modules:
        return False
    from IPython import get_ipython
    return getattr(get_ipython(), "kernel", None) is not None


def bar(fraction: float, width: int = BAR_WIDTH) -> str:
    filled = min(width, max(0, int(fraction * width)))
    return "#" * filled + "." * (width - filled)


class Progress:
    """Shows each metrics row; a bar on a terminal, a tqdm bar in a notebook, plain lines
    otherwise.

    Args:
      total_env_steps: the run's step budget.
      stream: where to write (stderr by default).
      quiet: write nothing.
      live: redraw one line in place; default: whether ``stream`` is a terminal.
      notebook: a ``tqdm.auto`` bar; default: when ``stream`` is stderr and not a terminal,
        and this process is a Jupyter kernel (``in_jupyter_kernel``).
    """

    def __init__(self, total_env_steps: int, stream: TextIO | None = None, quiet: bool = False,
                 live: bool | None = None, notebook: bool | None = None):
        self.total_env_steps = total_env_steps
        self.stream = sys.stderr if stream is None else stream
        self.quiet = quiet
        self.live = self.stream.isatty() if live is None else live
        if notebook is None:
            notebook = stream is None and not self.live and in_jupyter_kernel()
        self.notebook = notebook and not self.live
        self._drawn = False
        self._bar = None  # the tqdm bar, made at the first row

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

    def postfix(self, row: dict) -> str:
        """The tqdm bar's text after the counts (it shows steps, rate and time itself)."""
        ret = row.get("mean_return")
        return (f"return {'-' if ret is None else f'{ret:.1f}'}"
                f"  lag {row['policy_lag']:.1f}  updates {row['learner_updates']:,}")

    def update(self, row: dict) -> None:
        if self.quiet:
            return
        if self.notebook:
            if "eval/return" in row:  # printed above the bar, which it leaves as it is
                from tqdm.auto import tqdm
                tqdm.write(self.line(row), file=self.stream)
            else:
                self._update_bar(row)
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

    def _update_bar(self, row: dict) -> None:
        if self._bar is None:
            from tqdm.auto import tqdm
            self._bar = tqdm(total=self.total_env_steps, unit="step", unit_scale=True,
                             dynamic_ncols=True, file=self.stream, mininterval=0)
        self._bar.set_postfix_str(self.postfix(row), refresh=False)
        # Past the budget (the last update overshoots it) the bar stays full.
        steps = min(row["env_steps"], self.total_env_steps) - self._bar.n
        if steps > 0:
            self._bar.update(steps)  # redraws (mininterval 0: a row comes every log_every_s)
        else:
            self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False
