"""``rltpu plot``: learning curves and throughput of one or more run directories, as a PNG.

Runs with the same settings apart from the seed form a group: each run is a thin line,
the group's mean a thick one, and the spread (min to max over its runs) a shaded band.
"""
from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from rltpu import console, storage

GRID_POINTS = 200
THROUGHPUT_WINDOW = 5  # log intervals the throughput panel averages over
COLUMNS = ("env_steps", "time_s", "mean_return", "eval/return",
           "eval/env_steps")  # what is plotted: numbers or null
IGNORED_SETTINGS = ("seed", "run_dir", "log_every_s", "quiet", "wandb", "plan_steps",
                    "eval_every_updates", "eval_every_s", "eval_episodes", "eval_policy")


@dataclasses.dataclass(frozen=True)
class RunCurves:
    """What a run directory's ``metrics.jsonl`` holds, as arrays (one entry per row)."""

    name: str
    group: str
    env_steps: np.ndarray
    time_s: np.ndarray
    mean_return: np.ndarray  # NaN where no episode had finished yet
    env_sps: np.ndarray  # averaged over ``THROUGHPUT_WINDOW`` intervals; NaN on the first row
    # Each evaluation (``--eval-every-updates``): its params' env steps, ascending, and its
    # mean return; empty when the run did not evaluate.
    eval_env_steps: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))
    eval_return: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))


def read_rows(path: str) -> list[dict]:
    """The rows of a ``metrics.jsonl``, each leg of a resumed run continuing where its
    checkpoint left off: a ``{"resumed_from_update": N}`` row drops the earlier rows past
    update ``N`` (work the resumed run redid) and the leg's ``time_s`` goes on from the last
    row kept (each leg counts from its own process start). A last line cut off mid-write
    (the process was killed) is skipped with a warning.

    Raises:
      ValueError: a line before the last is not JSON.
    """
    lines = [line for line in storage.read_text(path).splitlines() if line.strip()]
    rows: list[dict] = []
    offset = 0.0  # seconds the earlier legs took, up to the rows kept
    for i, line in enumerate(lines):
        try:
            row = json.loads(line)
        except ValueError:
            if i == len(lines) - 1:
                console.warn(f"{path}: skipping its last line, cut off mid-write")
                break
            raise ValueError(f"{path}:{i + 1} is not a JSON row") from None
        bad = ("not an object" if not isinstance(row, dict) else next(
            (f"{k} = {v!r:.40}, not a number" for k, v in row.items()
             if k in COLUMNS and not _number_or_none(v)), None))
        if bad:
            raise ValueError(f"{path}:{i + 1} is not a metrics row ({bad})")
        if "resumed_from_update" in row:
            update = row["resumed_from_update"]
            rows = [r for r in rows
                    if r.get("learner_updates", r.get("eval/learner_updates", 0)) <= update]
            offset = rows[-1]["time_s"] if rows else 0.0
            continue
        if offset and row.get("time_s") is not None:
            row = {**row, "time_s": row["time_s"] + offset}
        rows.append(row)
    return rows


def _metrics_file(run_dir: str) -> str:
    metrics = storage.join(run_dir, "metrics.jsonl")
    if not storage.isfile(metrics):
        raise ValueError(f"{run_dir} is not a run directory: it has no metrics.jsonl")
    return metrics


def load_run(run_dir: str) -> RunCurves:
    """Reads a run directory (local or ``gs://``).

    Raises:
      ValueError: when it is not a run directory or holds no metrics rows yet.
    """
    rows = read_rows(_metrics_file(run_dir))
    # An evaluation's row (``rltpu.run.Run.evaluated``) has no training columns.
    evals = sorted((r["eval/env_steps"], r["eval/return"]) for r in rows
                   if r.get("eval/return") is not None and r.get("eval/env_steps") is not None)
    rows = [r for r in rows if "eval/return" not in r]
    if not rows:
        raise ValueError(f"{run_dir} has no metrics rows yet")
    config_path = storage.join(run_dir, "config.json")
    group = "?"
    try:
        config = json.loads(storage.read_text(config_path))
        run = {k: v for k, v in config["run"].items() if k not in IGNORED_SETTINGS}
        group = json.dumps({"run": run, "agent": config["agent"]}, sort_keys=True)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass  # no readable settings: the run is a group of its own
    column = lambda key: np.array([np.nan if r.get(key) is None else r[key] for r in rows], float)
    env_steps, time_s = column("env_steps"), column("time_s")
    eval_env_steps, eval_return = (np.array(v, float).reshape(-1) for v in (
        [e[0] for e in evals], [e[1] for e in evals]))
    return RunCurves(storage.basename(run_dir), group, env_steps, time_s,
                     column("mean_return"), windowed_rate(env_steps, time_s),
                     eval_env_steps, eval_return)


def _number_or_none(value) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)
                             and not abs(value) > 1.7976931348623157e308)  # (a float holds it)


def windowed_rate(env_steps: np.ndarray, time_s: np.ndarray,
                  window: int = THROUGHPUT_WINDOW) -> np.ndarray:
    """Env steps per second over the last ``window`` log intervals at each row (the first
    row: since the run's first row). One interval alone is noisy: the last one of a run
    is often a fraction of a second holding a whole batch."""
    rate = np.full(len(env_steps), np.nan)
    for i in range(1, len(env_steps)):
        j = max(0, i - window)
        if time_s[i] > time_s[j]:
            rate[i] = (env_steps[i] - env_steps[j]) / (time_s[i] - time_s[j])
    return rate


def mean_and_spread(xs: list[np.ndarray], ys: list[np.ndarray], points: int = GRID_POINTS):
    """Interpolates curves onto a shared x grid (up to where every curve has data).

    Returns:
      ``(grid, mean, low, high)``; ``low`` and ``high`` are the min and max over curves;
      all empty when the curves share no x.
    """
    curves = [(x[np.isfinite(y)], y[np.isfinite(y)]) for x, y in zip(xs, ys)]
    curves = [(x, y) for x, y in curves if len(x)]
    if not curves:
        return (np.zeros(0),) * 4
    lo, hi = max(x[0] for x, _ in curves), min(x[-1] for x, _ in curves)
    if hi < lo:  # no x that every curve reaches
        return (np.zeros(0),) * 4
    grid = np.linspace(lo, hi, points) if hi > lo else np.array([lo])
    stacked = np.stack([np.interp(grid, x, y) for x, y in curves])
    return grid, stacked.mean(0), stacked.min(0), stacked.max(0)


def make_figure(runs: list[RunCurves], best: str | None = None):
    """Return against env steps (with the evaluations' returns, dashed, where the runs
    evaluated) and against wall time, and env steps/s against wall time.

    Each run's lines carry the run's name as their label; a group's mean is labelled
    ``mean of N``.

    Args:
      best: a group to highlight (a sweep's best configuration): drawn thick and on top,
        the others faded; runs are then labelled by group only (a sweep has many).
    """
    import matplotlib
    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5), constrained_layout=True)
    panels = [(axes[0], "env_steps", "mean_return", "env steps", "mean return"),
              (axes[1], "time_s", "mean_return", "wall time since start (s)", "mean return"),
              (axes[2], "time_s", "env_sps", "wall time since start (s)", "env steps / s")]
    groups: dict[str, list[RunCurves]] = {}
    for run in runs:
        groups.setdefault(run.group, []).append(run)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for g, (group, members) in enumerate(groups.items()):
        color = colors[g % len(colors)]
        fade = 0.45 if best is not None and group != best else 1.0
        width = 1.6 if best is not None and group == best else 1.0
        top = 3 if best is not None and group == best else 2
        for ax, x, y, _, _ in panels:
            several = len(members) > 1
            for i, run in enumerate(members):
                if best is None:
                    label = run.name
                else:  # a sweep has many runs: the group's first one names its colour
                    label = None if i else group + (" (best)" if group == best else "")
                ax.plot(getattr(run, x), getattr(run, y), color=color, label=label,
                        marker="o" if len(getattr(run, x)) == 1 else None,  # else unseen
                        alpha=(0.35 if several else 1.0) * fade,
                        linewidth=(1 if several else 1.8) * width, zorder=top)
            if several:
                grid, mean, low, high = mean_and_spread([getattr(r, x) for r in members],
                                                        [getattr(r, y) for r in members])
                if len(grid):
                    label = f"mean of {len(members)}" if best is None else None
                    ax.plot(grid, mean, color=color, linewidth=2.2 * width, alpha=fade,
                            label=label, zorder=top)
                    ax.fill_between(grid, low, high, color=color, alpha=0.15 * fade, zorder=top)
        # Evaluations (if any): markers on a dashed line beside the training curve.
        for run in members:
            if len(run.eval_return):
                axes[0].plot(run.eval_env_steps, run.eval_return, color=color, linestyle="--",
                             marker="o", markersize=3, linewidth=1, alpha=fade, zorder=top,
                             label=None if best is not None else f"{run.name} (eval)")
    for ax, _, _, xlabel, ylabel in panels:
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes[0].set_title("return against env steps")
    axes[1].set_title("return against wall time")
    axes[2].set_title(f"throughput (over {THROUGHPUT_WINDOW} log intervals)")
    axes[0].legend(fontsize="small")
    return fig


def plot(run_dirs: list[str], out: str) -> str:
    """Writes the figure of ``run_dirs`` to ``out`` (PNG); returns ``out``.

    Raises:
      ValueError: a run directory cannot be read, or ``out`` cannot be written.
    """
    if not storage.is_remote(out):
        folder = os.path.dirname(out) or "."
        if not os.path.isdir(folder):
            raise ValueError(f"--out {out}: no folder {folder} to write it in")
    for d in run_dirs:  # every one checked before any is read (a read may warn)
        _metrics_file(d)
    fig = make_figure([load_run(d) for d in run_dirs])
    import matplotlib.pyplot as plt
    try:
        with storage.open_file(out, "wb") as f:
            fig.savefig(f, format="png", dpi=100)
    except OSError as e:
        raise ValueError(f"--out {out}: cannot write it ({e.strerror or e})") from None
    finally:
        plt.close(fig)
    return out


def sweep_runs(sweep_dir: str) -> tuple[list[RunCurves], str | None]:
    """The runs of a sweep directory with a metrics row, each in the group of its
    configuration (named by its varied values), and the best configuration's group
    (``rltpu.sweeps``' ranking; None while no trial has the metric).

    Raises:
      ValueError: no trial has a metrics row yet.
    """
    from rltpu import sweeps
    plan, trials, configs = sweeps.read_results(sweep_dir)
    names = {c["config"]: sweeps.describe({k: c[k] for k in plan.varied}) for c in configs}
    runs = []
    for t in trials:
        run_dir = os.path.join(sweep_dir, t["run_dir"])
        if t["env_steps"] is None:
            continue  # not started
        run = load_run(run_dir)
        runs.append(dataclasses.replace(run, group=names[t["config"]], name=f"seed {t['seed']}"))
    if not runs:
        raise ValueError(f"{sweep_dir}: no trial of the sweep has a metrics row yet")
    best = configs[0]["config"] if configs and configs[0]["mean"] is not None else None
    return runs, None if best is None else names[best]


def plot_sweep(sweep_dir: str, out: str) -> str:
    """Writes the figure of a sweep: every configuration (its seeds as thin lines, their
    mean and min-max band), the best one highlighted. Returns ``out``."""
    runs, best = sweep_runs(sweep_dir)
    fig = make_figure(runs, best=best)
    fig.savefig(out, dpi=100)
    import matplotlib.pyplot as plt
    plt.close(fig)
    return out


def default_out(run_dirs: list[str]) -> str:
    """``RUN_DIR/curves.png`` for one run, ``curves.png`` here for several."""
    return storage.join(run_dirs[0], "curves.png") if len(run_dirs) == 1 else "curves.png"
