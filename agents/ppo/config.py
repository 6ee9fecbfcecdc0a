"""PPO hyperparameters (defaults: rl-zoo's CartPole-v1 settings)."""
from __future__ import annotations

import dataclasses

from agents.networks import NETWORK_LIBS
from agents.torsos import TORSOS


@dataclasses.dataclass(frozen=True)
class PPOConfig:
    learning_rate: float = 1e-3
    """Adam step size at the start."""
    anneal_lr: bool = True
    """Anneal the step size linearly to 0 over --total-env-steps."""
    discount: float = 0.98
    """Per-step discount gamma."""
    gae_lambda: float = 0.8
    """GAE lambda."""
    clip_epsilon: float = 0.2
    """Clip range of the probability ratio in the surrogate objective."""
    value_clip_epsilon: float | None = None
    """Clip range of value updates around the old values (None: no value clipping)."""
    num_epochs: int = 20
    """Passes over each batch."""
    num_minibatches: int = 1
    """Minibatches per epoch; must divide the batch's unroll_length * batch_size samples."""
    entropy_cost: float = 0.0
    """Weight of the entropy bonus."""
    value_cost: float = 0.5
    """Weight of the value loss."""
    max_grad_norm: float = 0.5
    """Gradients are clipped to this global norm."""
    normalize_advantages: bool = True
    """Normalise advantages to zero mean, unit variance within each minibatch."""
    hidden_sizes: tuple[int, ...] = (64, 64)
    """Widths of the policy and value MLPs' hidden layers."""
    network_lib: str = "flax"
    """Library the networks are written in: flax or haiku."""
    torso: str = "mlp"
    """Network torso: mlp (--hidden-sizes), nature (Mnih et al. 2015) or impala_resnet
    (Espeholt et al. 2018); the convolutional ones read uint8 frame stacks [C, H, W]."""
    clip_rewards: bool = False
    """Clip rewards to [-1, 1] in the loss (Atari); returns are reported unclipped."""

    def __post_init__(self):
        for name in ("learning_rate", "clip_epsilon", "max_grad_norm"):
            if not getattr(self, name) > 0:
                raise ValueError(f"--{name.replace('_', '-')} must be > 0, got {getattr(self, name)}")
        for name in ("entropy_cost", "value_cost"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if self.value_clip_epsilon is not None and not self.value_clip_epsilon > 0:
            raise ValueError(f"--value-clip-epsilon must be > 0 or none, got {self.value_clip_epsilon}")
        for name in ("discount", "gae_lambda"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"--{name.replace('_', '-')} must be in [0, 1], got {getattr(self, name)}")
        for name in ("num_epochs", "num_minibatches"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(self, name)}")
        if self.torso not in TORSOS:
            raise ValueError(f"--torso {self.torso!r} is not one of {', '.join(TORSOS)}")
        if self.network_lib not in NETWORK_LIBS:
            raise ValueError(f"--network-lib {self.network_lib!r} is not one of {', '.join(NETWORK_LIBS)}")
        if not self.hidden_sizes or min(self.hidden_sizes) < 1:
            raise ValueError(f"--hidden-sizes must be positive widths, got {self.hidden_sizes}")
