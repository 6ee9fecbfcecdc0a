"""DQN (Ape-X) hyperparameters."""
from __future__ import annotations

import dataclasses

from agents.networks import NETWORK_LIBS
from agents.torsos import TORSOS


@dataclasses.dataclass(frozen=True)
class DQNConfig:
    learning_rate: float = 1e-3
    """Adam step size."""
    discount: float = 0.99
    """Per-step discount gamma."""
    n_step: int = 3
    """Steps summed in each return before bootstrapping."""
    target_update_period: int = 100
    """Copy the online network to the target network every this many updates."""
    epsilon: float = 0.1
    """Ape-X exploration ladder: actor i of N acts eps^(1 + alpha i / (N - 1))-greedily
    (the paper's 0.4 suits Atari; on CartPole 0.1 lets training episodes reach 475)."""
    epsilon_alpha: float = 7.0
    """Exponent spread of the exploration ladder."""
    sample_size: int = 128
    """Transitions per learner batch (a multiple of the device count)."""
    replay_capacity: int = 100_000
    """Transitions the replay holds at most."""
    min_replay_size: int = 1_000
    """Transitions to collect before learning starts."""
    samples_per_insert: float = 4.0
    """Replay ratio: transitions sampled per transition inserted (0: no limit)."""
    priority_exponent: float = 0.6
    """Prioritised replay alpha (0: uniform sampling)."""
    importance_exponent: float = 0.4
    """Prioritised replay beta (importance-weight correction)."""
    huber_delta: float = 1.0
    """TD errors beyond this are penalised linearly."""
    max_grad_norm: float = 10.0
    """Gradients are clipped to this global norm."""
    hidden_sizes: tuple[int, ...] = (128, 128)
    """Widths of the Q-network's hidden layers."""
    network_lib: str = "flax"
    """Library the network is written in: flax or haiku."""
    torso: str = "mlp"
    """Network torso: mlp (--hidden-sizes), nature (Mnih et al. 2015) or impala_resnet
    (Espeholt et al. 2018); the convolutional ones read uint8 frame stacks [C, H, W]."""
    clip_rewards: bool = False
    """Clip rewards to [-1, 1] in the loss (Atari); returns are reported unclipped."""

    def __post_init__(self):
        for name in ("learning_rate", "huber_delta", "max_grad_norm"):
            if not getattr(self, name) > 0:
                raise ValueError(f"--{name.replace('_', '-')} must be > 0, got {getattr(self, name)}")
        for name in ("n_step", "target_update_period", "sample_size", "replay_capacity"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(self, name)}")
        if self.min_replay_size < 0:
            raise ValueError(f"--min-replay-size must be >= 0, got {self.min_replay_size}")
        if self.min_replay_size > self.replay_capacity:
            raise ValueError(f"--min-replay-size {self.min_replay_size} exceeds --replay-capacity "
                             f"{self.replay_capacity}")
        for name in ("discount", "epsilon", "importance_exponent"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"--{name.replace('_', '-')} must be in [0, 1], got {getattr(self, name)}")
        if self.samples_per_insert < 0:
            raise ValueError(f"--samples-per-insert must be >= 0, got {self.samples_per_insert}")
        if self.priority_exponent < 0:
            raise ValueError(f"--priority-exponent must be >= 0, got {self.priority_exponent}")
        if self.torso not in TORSOS:
            raise ValueError(f"--torso {self.torso!r} is not one of {', '.join(TORSOS)}")
        if self.network_lib not in NETWORK_LIBS:
            raise ValueError(f"--network-lib {self.network_lib!r} is not one of {', '.join(NETWORK_LIBS)}")
        if not self.hidden_sizes or min(self.hidden_sizes) < 1:
            raise ValueError(f"--hidden-sizes must be positive widths, got {self.hidden_sizes}")
