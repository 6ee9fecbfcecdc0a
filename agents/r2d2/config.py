"""R2D2 hyperparameters (defaults sized for CartPoleNoVel-v1; the paper's Atari values are
in the docstrings)."""
from __future__ import annotations

import dataclasses

from rltpu.agents.config import Core, NetworkConfig, check_ranges


@dataclasses.dataclass(frozen=True)
class R2D2Config(NetworkConfig):
    core: Core = "lstm"
    """Recurrent core (lstm or gru; R2D2 needs one): the paper's is an LSTM of 512."""
    core_size: int = 64
    """Width of the core's state."""
    learning_rate: float = 1e-3
    """Adam step size (the paper: 1e-4)."""
    adam_epsilon: float = 1e-3
    """Adam's epsilon, added to the root of its second-moment estimate (the paper's; DQN's
    --adam-epsilon says why a large one keeps a solved task solved)."""
    discount: float = 0.99
    """Per-step discount gamma (the paper: 0.997)."""
    n_step: int = 5
    """Rewards summed in each target before bootstrapping (the paper: 5)."""
    burn_in: int = 4
    """Steps at each stored sequence's start that only warm the core up from its stored
    state, without gradient or loss (the paper: 40 of 80); must be shorter than
    --unroll-length, the sequence length."""
    target_update_period: int = 100
    """Updates between copies of the online network to the target (the paper: 2500)."""
    sample_size: int = 32
    """Sequences per learner batch (the paper: 64)."""
    replay_capacity: int = 10_000
    """Sequences the replay holds (each --unroll-length steps with its start state)."""
    min_replay_size: int = 200
    """Sequences to hold before learning starts."""
    priority_exponent: float = 0.9
    """Prioritised replay's alpha (the paper: 0.9)."""
    importance_exponent: float = 0.6
    """Importance-sampling beta (the paper: 0.6)."""
    samples_per_insert: float = 0.0
    """Sequences sampled per sequence inserted, kept by the learner (0: as fast as it can)."""
    epsilon: float = 0.1
    """Base of the actors' exploration ladder eps_i = epsilon^(1 + alpha i / (N - 1)) (the
    paper: 0.4, for Atari; on CartPole 0.1 lets training episodes reach 475, as DQN's)."""
    epsilon_alpha: float = 7.0
    """Exponent spread of the ladder."""
    max_grad_norm: float = 40.0
    """Gradients are clipped to this global norm."""

    def __post_init__(self):
        super().__post_init__()
        if self.core == "none":
            raise ValueError("--core none: agent 'r2d2' is recurrent; use --core lstm or gru")
        check_ranges(self, positive=("learning_rate", "adam_epsilon", "max_grad_norm"),
                     non_negative=("burn_in", "min_replay_size", "samples_per_insert",
                                   "priority_exponent"),
                     unit_interval=("discount", "epsilon", "importance_exponent"),
                     positive_int=("n_step", "target_update_period", "sample_size",
                                   "replay_capacity"))
        if self.min_replay_size > self.replay_capacity:
            raise ValueError(f"--min-replay-size {self.min_replay_size} exceeds --replay-capacity "
                             f"{self.replay_capacity}")
