"""rltpu: distributed reinforcement learning with Ray actors and a data-parallel JAX learner.

The public surface for writing and training an agent::

    import rltpu
    summary = rltpu.train(MyAgent(), MyAgent.Config(), rltpu.RunConfig(env="CartPole-v1"))
    policy = rltpu.load(summary["run_dir"])
    action = policy.act(observation)
"""
from __future__ import annotations

import importlib
import os

from rltpu.agent import Agent, AgentFns
from rltpu.config import RunConfig
from rltpu.types import (ActorOutput, EnvSpec, RecurrentStart, StepContext, TrainState,
                         Trajectory, Unroll)

__all__ = ["networks", "recurrent", "Agent", "AgentFns", "RunConfig", "train", "validate",
           "load", "Policy", "sweep", "provenance", "__version__", "ActorOutput", "EnvSpec",
           "RecurrentStart", "StepContext", "TrainState", "Trajectory", "Unroll"]

_CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def __getattr__(name: str):
    # JAX loads with the first module that needs it: an env actor of central inference
    # (rltpu.env_actor) imports rltpu.envs, and with it this package, and must stay
    # without JAX (about 200 MB less per process).
    if name in ("networks", "recurrent"):
        return importlib.import_module(f"rltpu.{name}")
    # The driver (and with it orbax and the metric sinks) loads on first use: a rollout
    # actor's process imports rltpu.actor only, and starts a second sooner without them.
    if name == "train":
        from rltpu.run import train
        return train
    if name == "sweep":  # (the module is rltpu.sweeps: a module rltpu.sweep would hide this)
        from rltpu.sweeps import sweep
        return sweep
    if name == "validate":
        from rltpu.plan import validate
        return validate
    if name in ("load", "Policy"):
        from rltpu import policy
        return getattr(policy, name)
    if name == "__version__":
        return _version()
    raise AttributeError(f"module 'rltpu' has no attribute {name!r}")


def _version() -> str:
    """rltpu's version: pyproject.toml's, the one place it is written.

    In a checkout (pyproject.toml beside the package) it is read from there, so an editable
    install whose metadata predates a version change still says the truth; installed from
    a wheel, from the distribution's metadata. ``0+unknown`` if neither is there.
    """
    pyproject = os.path.join(_CHECKOUT, "pyproject.toml")
    if os.path.isfile(pyproject):
        import tomllib
        try:
            with open(pyproject, "rb") as f:
                project = tomllib.load(f).get("project", {})
        except (OSError, tomllib.TOMLDecodeError):
            project = {}
        if project.get("name") == "rltpu" and "version" in project:
            return project["version"]
    import importlib.metadata
    try:
        return importlib.metadata.version("rltpu")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


def provenance() -> dict:
    """What a run's results depend on besides its settings: the versions of rltpu, JAX,
    jaxlib, Flax and Ray (as installed), Python's, the platform, and the git commit of
    rltpu's checkout and whether it has uncommitted changes (None when rltpu is not in a
    git checkout of its own).

    Reads package metadata and asks git; imports none of the packages, so it is cheap.
    """
    import importlib.metadata
    import platform

    def installed(dist: str) -> str | None:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return None

    return {"rltpu": _version(), "jax": installed("jax"), "jaxlib": installed("jaxlib"),
            "flax": installed("flax"), "ray": installed("ray"),
            "python": platform.python_version(), "platform": platform.platform(),
            **_git_commit()}


def _git_commit() -> dict:
    """``{"git_commit", "git_dirty"}``: the commit of the checkout rltpu runs from and whether
    tracked files differ from it; both None when rltpu is not in a checkout, there is no git,
    or git took over 5 seconds.

    Only a repository whose top is the folder holding this package and its pyproject.toml
    counts: an installed rltpu inside some other repository (a virtualenv in a project's
    folder) has no commit of its own.
    """
    import subprocess

    unknown = {"git_commit": None, "git_dirty": None}
    if not os.path.isfile(os.path.join(_CHECKOUT, "pyproject.toml")):
        return unknown
    try:
        top = subprocess.run(["git", "-C", _CHECKOUT, "rev-parse", "--show-toplevel", "HEAD"],
                             capture_output=True, text=True, timeout=5)
        if top.returncode != 0:
            return unknown
        toplevel, commit = top.stdout.split()
        if os.path.realpath(toplevel) != os.path.realpath(_CHECKOUT):
            return unknown
        dirty = subprocess.run(["git", "-C", _CHECKOUT, "status", "--porcelain",
                                "--untracked-files=no"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return unknown
    return {"git_commit": commit,
            "git_dirty": bool(dirty.stdout.strip()) if dirty.returncode == 0 else None}
