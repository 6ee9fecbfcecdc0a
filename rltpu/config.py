"""The run's settings (what the runtime needs), separate from each agent's own config."""
from __future__ import annotations

import dataclasses
import json
from typing import Any, Literal, get_args

from rltpu.envs.make import BACKENDS as ENV_BACKENDS, Backend as EnvBackend

Mode = Literal["ray", "anakin"]
MODES: tuple[str, ...] = get_args(Mode)
Inference = Literal["actor", "central"]
INFERENCES: tuple[str, ...] = get_args(Inference)
EvalPolicy = Literal["greedy", "sample"]
EVAL_POLICIES: tuple[str, ...] = get_args(EvalPolicy)


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Defaults are tuned for time to 475 on CartPole-v1 on a 2-core machine: small, frequent
    updates. For larger envs raise --envs-per-actor and --batch-size."""

    mode: Mode = "ray"
    """ray: Ray actors step gymnasium envs on CPUs and feed the learner. anakin: a JAX env
    (gymnax:NAME) is stepped, acted in and learned from inside one compiled program on the
    learner's devices, no Ray (--batch-size envs, split over the devices)."""
    inference: Inference = "actor"
    """Ray mode: where actions are chosen. actor: each rollout actor runs the policy on its
    CPU. central: actors only step envs (no JAX, no params) and the learner host chooses
    every action in batched calls on its first device, with the newest params (SEED RL).
    Pick central when the bottleneck report says actors spend most of their time in
    policy inference, or when actor memory or start-up matters; see README."""
    agent: str = "impala"
    """Built-in agent name or a module:Agent path."""
    env: str = "CartPole-v1"
    """Gymnasium env id or a module:Class path; in Anakin mode a JAX env, gymnax:NAME."""
    env_kwargs: str | None = dataclasses.field(default=None, metadata={"metavar": "JSON"})
    """Keyword arguments for the env, a JSON object: gym.make(env, **kwargs) or
    Class(**kwargs), e.g. '{"max_episode_steps": 200}'. (A JSON string, so that the config
    stays hashable and config.json holds it as given.)"""
    updates_per_call: int = 8
    """Anakin mode: learner updates per compiled call; stops, metrics and checkpoints are
    checked between calls."""
    num_actors: int = 2
    """Ray rollout actors, one CPU each (in all: a multi-host learner splits them over
    its hosts); at most the machine's CPUs (each host's, with a local Ray) unless
    --oversubscribe."""
    oversubscribe: bool = False
    """Allow more rollout actors than the machine has CPUs (they then share them)."""
    envs_per_actor: int = 16
    """Envs each actor steps together (trajectory columns per unroll)."""
    unroll_length: int = 16
    """Steps per trajectory (T)."""
    batch_size: int = 16
    """Trajectories per learner update (the global batch: each of N learner hosts feeds
    1/N); a multiple of --envs-per-actor and of the device count. In Anakin mode, the
    number of envs."""
    total_env_steps: int = 2_000_000
    """Stop after this many env steps."""
    target_return: float | None = 475.0
    """Stop when the mean return of the last 20 training episodes reaches this (None: never)."""
    normalize_observations: bool = False
    """Normalise observations by running statistics the actors share (for MuJoCo envs),
    clipped to [-10, 10]; checkpoints save the statistics."""
    normalize_rewards: bool = False
    """Scale rewards in each actor by a running estimate of the standard deviation of the
    discounted return (the agent's discount), clipped to [-10, 10], as CleanRL's MuJoCo
    PPO and SB3's VecNormalize do; episode returns are still reported in the env's units."""
    env_backend: EnvBackend = "auto"
    """Atari (ALE/...) backend: ale (ale-py's C++ vector env; what auto picks), gymnasium
    (gymnasium's preprocessing wrappers) or envpool (if installed). Others: auto or gymnasium."""
    full_action_space: bool = False
    """Atari: act with all 18 joystick actions instead of the game's minimal set."""
    seed: int = 0
    """Seeds params, envs and sampling."""
    run_dir: str | None = None
    """Where to write summary and metrics; must not exist. Default: a new folder under runs/."""
    num_devices: int | None = None
    """Learner devices to use (default: all)."""
    publish_every: int = 1
    """Publish params to the actors every this many updates."""
    max_in_flight: int = 2
    """Unroll requests each actor may have outstanding (the trajectory queue's bound)."""
    on_policy: bool = False
    """Synchronous mode: the learner consumes only trajectories acted with its current
    params, and actors wait for each new version (params are published every update)."""
    log_every_s: float = 2.0
    """Seconds between progress lines and metrics rows (metrics.jsonl, TensorBoard, W&B)."""
    wandb: bool = False
    """Also log to Weights & Biases (needs the wandb package; project $WANDB_PROJECT)."""
    plan_steps: int | None = None
    """Estimate, in summary.json, the wall time of a run of this many env steps on this set-up."""
    checkpoint_every_updates: int | None = None
    """Save a checkpoint every this many learner updates (None: not by update count)."""
    checkpoint_every_minutes: float | None = 10.0
    """Save a checkpoint every this many minutes (None: not by time). A final one is
    always saved when the run ends or is stopped by SIGTERM/SIGINT."""
    keep_checkpoints: int = 3
    """Keep the newest this many checkpoints in RUN_DIR/checkpoints."""
    keep_best: bool = False
    """Also keep the checkpoint with the best mean training return."""
    max_actor_restarts: int = 10
    """Ray restarts each rollout actor at most this many times (env raised or process died)."""
    max_nonfinite_updates: int = 10
    """Stop the run after this many updates in a row with a non-finite loss or gradient
    (each such update is skipped)."""
    eval_every_updates: int | None = None
    """Evaluate the current params every this many learner updates, on envs of their own
    (None: not by update count). Ray mode: an evaluation actor plays while training goes
    on; Anakin mode: a compiled evaluation between calls. Rows with eval/return go to the
    metrics; summary.json gets final_eval_return and best_eval_return."""
    eval_every_s: float | None = None
    """Evaluate the current params every this many seconds (None: not by time)."""
    eval_episodes: int = 10
    """Episodes per evaluation."""
    eval_policy: EvalPolicy = "greedy"
    """How evaluation episodes act: greedy (the agent's greedy_step) or sample (its
    training policy, actor_step)."""
    compilation_cache: str | None = "~/.cache/rltpu/jax"
    """Directory where the learner and actors keep compiled programs for later runs (JAX's
    persistent compilation cache; a run with the same agent and shapes starts seconds
    sooner). None: compile afresh every run."""

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"--mode {self.mode!r} is not one of {', '.join(MODES)}")
        if self.inference not in INFERENCES:
            raise ValueError(f"--inference {self.inference!r} is not one of {', '.join(INFERENCES)}")
        if self.inference == "central" and self.mode != "ray":
            raise ValueError("--inference central is for --mode ray (Anakin mode acts on the "
                             "learner's devices already); use --inference actor")
        if self.env_backend not in ENV_BACKENDS:
            raise ValueError(f"--env-backend {self.env_backend!r} is not one of "
                             f"{', '.join(ENV_BACKENDS)}")
        if self.env_kwargs is not None:
            self.env_kwargs_dict()  # raises if it is not a JSON object
            if self.mode == "anakin":
                raise ValueError("--env-kwargs is for gymnasium envs; a JAX env (--mode "
                                 "anakin) is made with its defaults")
        for name in ("updates_per_call", "num_actors", "envs_per_actor", "unroll_length", "batch_size",
                     "total_env_steps", "publish_every", "max_in_flight", "keep_checkpoints",
                     "max_nonfinite_updates"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
        if self.num_devices is not None and self.num_devices < 1:
            raise ValueError(f"--num-devices must be a positive integer, got {self.num_devices}")
        if self.plan_steps is not None and (not isinstance(self.plan_steps, int) or self.plan_steps < 1):
            raise ValueError(f"--plan-steps must be a positive integer, got {self.plan_steps}")
        if not isinstance(self.max_actor_restarts, int) or self.max_actor_restarts < 0:
            raise ValueError(f"--max-actor-restarts must be a non-negative integer, "
                             f"got {self.max_actor_restarts}")
        if self.checkpoint_every_updates is not None and self.checkpoint_every_updates < 1:
            raise ValueError(f"--checkpoint-every-updates must be a positive integer or none, "
                             f"got {self.checkpoint_every_updates}")
        if self.checkpoint_every_minutes is not None and not self.checkpoint_every_minutes > 0:
            raise ValueError(f"--checkpoint-every-minutes must be > 0 or none, "
                             f"got {self.checkpoint_every_minutes}")
        if self.eval_every_updates is not None and (
                not isinstance(self.eval_every_updates, int) or self.eval_every_updates < 1):
            raise ValueError(f"--eval-every-updates must be a positive integer or none, "
                             f"got {self.eval_every_updates}")
        if self.eval_every_s is not None and not self.eval_every_s > 0:
            raise ValueError(f"--eval-every-s must be > 0 or none, got {self.eval_every_s}")
        if not isinstance(self.eval_episodes, int) or self.eval_episodes < 1:
            raise ValueError(f"--eval-episodes must be a positive integer, got {self.eval_episodes}")
        if self.eval_policy not in EVAL_POLICIES:
            raise ValueError(f"--eval-policy {self.eval_policy!r} is not one of "
                             f"{', '.join(EVAL_POLICIES)}")
        if not self.log_every_s > 0:
            raise ValueError(f"--log-every-s must be > 0, got {self.log_every_s}")
        if self.mode == "ray" and self.batch_size % self.envs_per_actor:
            raise ValueError(f"--batch-size {self.batch_size} must be a multiple of "
                             f"--envs-per-actor {self.envs_per_actor} (a batch is whole unrolls)")

    def env_kwargs_dict(self) -> dict[str, Any]:
        """``env_kwargs`` as keyword arguments ({} when None).

        Raises:
          ValueError: it is not a JSON object.
        """
        if self.env_kwargs is None:
            return {}
        try:
            kwargs = json.loads(self.env_kwargs)
        except ValueError as e:
            raise ValueError(f"--env-kwargs {self.env_kwargs!r} is not JSON ({e}); pass an "
                             """object, e.g. '{"max_episode_steps": 200}'""") from None
        if not isinstance(kwargs, dict):
            raise ValueError(f"--env-kwargs {self.env_kwargs!r} is not a JSON object "
                             """of keyword arguments, e.g. '{"max_episode_steps": 200}'""")
        return kwargs

    @property
    def evaluates(self) -> bool:
        """Whether the run evaluates during training."""
        return self.eval_every_updates is not None or self.eval_every_s is not None

    @property
    def samples_per_batch(self) -> int:
        """Transitions in one learner batch (``[T, B]``), the unit of the step budget's updates."""
        return self.unroll_length * self.batch_size

    def env_options(self) -> dict:
        """The keyword arguments ``rltpu.envs.make`` and ``make_spec`` take from this run."""
        return {"backend": self.env_backend, "full_action_space": self.full_action_space,
                "env_kwargs": self.env_kwargs_dict()}
