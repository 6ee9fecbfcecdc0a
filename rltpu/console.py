"""The runtime's one voice on stderr: each line starts with ``rltpu:``, so a user can tell
rltpu's lines from Ray's and JAX's, and is flushed at once (stderr may be a pipe)."""
from __future__ import annotations

import sys


def say(message: str) -> None:
    """One line about the run (a restart, a signal, where a run resumed)."""
    print(f"rltpu: {message}", file=sys.stderr, flush=True)


def warn(message: str) -> None:
    """One line about something the run survived but the user should know."""
    say(f"warning: {message}")
