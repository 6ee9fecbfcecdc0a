"""IMPALA hyperparameters."""
from __future__ import annotations

import dataclasses
from typing import Literal, get_args

from rltpu.agents.config import NetworkConfig, check_choice, check_ranges

Optimizer = Literal["rmsprop", "adam"]
OPTIMIZERS: tuple[str, ...] = get_args(Optimizer)


@dataclasses.dataclass(frozen=True)
class IMPALAConfig(NetworkConfig):
    learning_rate: float = 5e-3
    """Step size (at the start, with --anneal-lr)."""
    optimizer: Optimizer = "rmsprop"
    """rmsprop (the paper's: no momentum, --rmsprop-decay, --rmsprop-epsilon) or adam.
    RMSProp's large epsilon keeps a solved policy where it is; Adam scales even the tiny,
    noisy gradients of a solved CartPole up to full steps, and the policy random-walks into
    a deterministic one (entropy 0, return 9) it cannot leave (bench/soak.py showed both)."""
    rmsprop_decay: float = 0.99
    """RMSProp's decay of the mean squared gradient."""
    rmsprop_epsilon: float = 0.01
    """RMSProp's epsilon (added to the mean square, inside the root)."""
    anneal_lr: bool = False
    """Anneal the step size linearly to 0 over --total-env-steps."""
    discount: float = 0.99
    """Per-step discount gamma."""
    entropy_cost: float = 0.0
    """Weight of the entropy bonus (the paper's Atari runs: 0.01, which the impala-atari
    preset keeps; impala-minatar takes 0.05). Once a task is solved the advantages vanish
    and nothing but this bonus moves the policy: on a solved CartPole in Ray mode, at 0.01
    the policy's entropy climbed until episodes failed again and four runs of eight dipped
    below a 20-episode mean of 400; at 0.001 two of eighteen dipped; at 0 eighteen of
    eighteen held, reaching 475 as soon (README, Agents)."""
    baseline_cost: float = 0.5
    """Weight of the value (baseline) loss."""
    max_grad_norm: float = 40.0
    """Gradients are clipped to this global norm."""
    clip_rho_threshold: float = 1.0
    """V-trace rho-bar: clip on importance weights in the value targets."""
    clip_pg_rho_threshold: float = 1.0
    """Clip on importance weights in the policy-gradient advantages."""
    vtrace_lambda: float = 1.0
    """V-trace lambda (mixes in the uncorrected one-step bootstrap when below 1)."""
    num_epochs: int = 2
    """Gradient steps on each batch, as RLlib's IMPALA offers (the paper takes 1; the
    impala-atari preset keeps 1). The second step is off the behaviour policy by one more
    update, which V-trace's clipped importance weights correct like the actors' lag. On
    CartPole it cuts the updates, and the acting, to a return of 475 by about a quarter
    (README, Agents)."""
    normalize_advantages: bool = False
    """Normalise policy-gradient advantages per batch (not in the paper; see losses.py)."""

    def __post_init__(self):
        super().__post_init__()
        check_ranges(self, positive=("learning_rate", "max_grad_norm", "clip_rho_threshold",
                                     "clip_pg_rho_threshold", "rmsprop_epsilon"),
                     non_negative=("entropy_cost", "baseline_cost"),
                     unit_interval=("discount", "vtrace_lambda"), positive_int=("num_epochs",))
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        if not 0 <= self.rmsprop_decay < 1:
            raise ValueError(f"--rmsprop-decay must be in [0, 1), got {self.rmsprop_decay}")
