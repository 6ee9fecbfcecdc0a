"""IMPALA hyperparameters."""
from __future__ import annotations

import dataclasses

from agents.networks import NETWORK_LIBS
from agents.torsos import TORSOS


@dataclasses.dataclass(frozen=True)
class IMPALAConfig:
    learning_rate: float = 5e-3
    """Step size (at the start, with --anneal-lr)."""
    optimizer: str = "rmsprop"
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
    entropy_cost: float = 0.01
    """Weight of the entropy bonus."""
    baseline_cost: float = 0.5
    """Weight of the value (baseline) loss."""
    max_grad_norm: float = 40.0
    """Gradients are clipped to this global norm."""
    hidden_sizes: tuple[int, ...] = (64, 64)
    """Widths of the policy and value MLPs' hidden layers."""
    network_lib: str = "flax"
    """Library the networks are written in: flax or haiku."""
    torso: str = "mlp"
    """Network torso: mlp (--hidden-sizes), nature (Mnih et al. 2015) or impala_resnet
    (Espeholt et al. 2018); the convolutional ones read uint8 frame stacks [C, H, W]."""
    clip_rewards: bool = False
    """Clip rewards to [-1, 1] in the loss (Atari); returns are reported unclipped."""
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
        for name in ("learning_rate", "max_grad_norm", "clip_rho_threshold", "clip_pg_rho_threshold"):
            if not getattr(self, name) > 0:
                raise ValueError(f"--{name.replace('_', '-')} must be > 0, got {getattr(self, name)}")
        for name in ("entropy_cost", "baseline_cost"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if not isinstance(self.num_epochs, int) or self.num_epochs < 1:
            raise ValueError(f"--num-epochs must be a positive integer, got {self.num_epochs}")
        if self.optimizer not in ("adam", "rmsprop"):
            raise ValueError(f"--optimizer {self.optimizer!r} is not one of adam, rmsprop")
        if not 0 <= self.rmsprop_decay < 1:
            raise ValueError(f"--rmsprop-decay must be in [0, 1), got {self.rmsprop_decay}")
        if not self.rmsprop_epsilon > 0:
            raise ValueError(f"--rmsprop-epsilon must be > 0, got {self.rmsprop_epsilon}")
        if not 0 <= self.discount <= 1:
            raise ValueError(f"--discount must be in [0, 1], got {self.discount}")
        if not 0 <= self.vtrace_lambda <= 1:
            raise ValueError(f"--vtrace-lambda must be in [0, 1], got {self.vtrace_lambda}")
        if self.torso not in TORSOS:
            raise ValueError(f"--torso {self.torso!r} is not one of {', '.join(TORSOS)}")
        if self.network_lib not in NETWORK_LIBS:
            raise ValueError(f"--network-lib {self.network_lib!r} is not one of {', '.join(NETWORK_LIBS)}")
        if not self.hidden_sizes or min(self.hidden_sizes) < 1:
            raise ValueError(f"--hidden-sizes must be positive widths, got {self.hidden_sizes}")
