"""PPO hyperparameters. Defaults: rl-zoo's CartPole-v1 settings (8 envs x 32 steps, 20 epochs,
Adam 1e-3 annealed, clip 0.2), except the discount and GAE lambda: 0.99 and 0.95 (the PPO
paper's, CleanRL's and PureJaxRL's) where rl-zoo takes 0.98 and 0.8. At rl-zoo's pair a
solved CartPole was not kept solved, in Ray mode (a run dipped to 358) and in Anakin mode on
2048 envs (to 366.9 and 359.7); at 0.99 and 0.95 every run held (README, Agents)."""
from __future__ import annotations

import dataclasses

from rltpu.agents.config import NetworkConfig, check_ranges


@dataclasses.dataclass(frozen=True)
class PPOConfig(NetworkConfig):
    learning_rate: float = 1e-3
    """Adam step size at the start."""
    adam_epsilon: float = 1e-8
    """Adam's epsilon, added to the root of its second-moment estimate."""
    anneal_lr: bool = True
    """Anneal the step size linearly to 0 over --total-env-steps."""
    discount: float = 0.99
    """Per-step discount gamma."""
    gae_lambda: float = 0.95
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

    def __post_init__(self):
        super().__post_init__()
        check_ranges(self, positive=("learning_rate", "adam_epsilon", "clip_epsilon",
                                     "max_grad_norm"),
                     non_negative=("entropy_cost", "value_cost"),
                     unit_interval=("discount", "gae_lambda"),
                     positive_int=("num_epochs", "num_minibatches"))
        if self.value_clip_epsilon is not None and not self.value_clip_epsilon > 0:
            raise ValueError(f"--value-clip-epsilon must be > 0 or none, got {self.value_clip_epsilon}")
