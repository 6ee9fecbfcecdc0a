"""Where a run's metric rows go: ``metrics.jsonl``, TensorBoard, Weights & Biases, the
console. Every sink gets the same row, so the same scalars are everywhere."""
from __future__ import annotations

import importlib.util
import os

from rltpu import storage
from rltpu.metrics import MetricsWriter
from rltpu.progress import Progress
from rltpu.tensorboard import EventWriter

WANDB_MISSING = ("--wandb needs the wandb package, which is not installed: "
                 "pip install wandb (or pip install 'rltpu[wandb]')")


def check_wandb() -> None:
    """Raises ``ValueError`` with an install hint when ``wandb`` is not importable."""
    if importlib.util.find_spec("wandb") is None:
        raise ValueError(WANDB_MISSING)


class WandbSink:
    """Logs rows to a W&B run named after the run directory (project ``$WANDB_PROJECT``,
    default ``rltpu``); offline when ``WANDB_MODE=offline``."""

    def __init__(self, run_dir: str, config: dict):
        import wandb
        self._run = wandb.init(project=os.environ.get("WANDB_PROJECT", "rltpu"),
                               name=storage.basename(run_dir),
                               # W&B keeps its files in a local folder: a gs:// run's go here
                               dir=None if storage.is_remote(run_dir) else run_dir,
                               config=config)

    def write(self, row: dict) -> None:
        self._run.log({k: v for k, v in row.items() if v is not None}, step=row["env_steps"])

    def close(self, summary: dict | None) -> None:
        if summary is not None:
            self._run.summary.update({k: v for k, v in summary.items()
                                      if isinstance(v, (int, float, str))})
        self._run.finish()


class MetricSinks:
    """Sends every metrics row to each sink; ``close`` hands them the summary.

    Args:
      run_dir: the run directory (``metrics.jsonl`` and the TensorBoard events go there).
      total_env_steps: the step budget, for the progress bar.
      config: the run's settings, for W&B.
      wandb: also log to Weights & Biases.
      quiet: no console progress.
    """

    def __init__(self, run_dir: str, total_env_steps: int, config: dict, wandb: bool = False,
                 quiet: bool = False):
        self.jsonl = MetricsWriter(run_dir)
        self.tensorboard = EventWriter(run_dir)
        self.progress = Progress(total_env_steps, quiet=quiet)
        self.wandb = WandbSink(run_dir, config) if wandb else None

    def write(self, row: dict) -> None:
        self.jsonl.write(row)
        self.tensorboard.scalars(row["env_steps"], row)
        if self.wandb is not None:
            self.wandb.write(row)
        self.progress.update(row)

    def sync(self) -> None:
        """Uploads the rows so far (a ``gs://`` run's files; local ones are always whole)."""
        self.jsonl.sync()
        self.tensorboard.sync()

    def close(self, summary: dict | None = None) -> None:
        self.progress.close()
        self.jsonl.close()
        self.tensorboard.close()
        if self.wandb is not None:
            self.wandb.close(summary)
