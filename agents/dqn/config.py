"""DQN (Ape-X) hyperparameters."""
from __future__ import annotations

import dataclasses

from rltpu.agents.config import NetworkConfig, check_ranges


@dataclasses.dataclass(frozen=True)
class DQNConfig(NetworkConfig):
    learning_rate: float = 1e-3
    """Adam step size."""
    adam_epsilon: float = 1e-2
    """Adam's epsilon, added to the root of its second-moment estimate. Not optax's 1e-8:
    near a solution the TD errors' gradients are small and noisy, and a tiny epsilon scales
    them up to full-size steps that keep moving the small gaps between actions' values (a
    solved CartPole fell to 83-260 at 1e-8 and 1e-3; at 1e-2 it held in 4 of 5 runs, and
    1e-1 learnt too slowly; README, Agents)."""
    discount: float = 0.99
    """Per-step discount gamma."""
    n_step: int = 5
    """Steps summed in each return before bootstrapping. R2D2's 5, not Ape-X's 3: a target
    copy leaves gamma^n of the values' distance to their fixed point, 1 / (1 - gamma), and a
    solved CartPole's greedy policy wavered while they still climbed (with 3 the training
    mean dipped below 400 in 3 of 11 runs; with 5 it held in 8 of 8; README, Agents). The
    dqn-atari preset keeps Ape-X's 3."""
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
    dueling: bool = False
    """A dueling head: Q = V + A - mean(A), value and advantages as separate outputs."""

    def __post_init__(self):
        super().__post_init__()
        check_ranges(self, positive=("learning_rate", "adam_epsilon", "huber_delta",
                                     "max_grad_norm"),
                     non_negative=("min_replay_size", "samples_per_insert", "priority_exponent"),
                     unit_interval=("discount", "epsilon", "importance_exponent"),
                     positive_int=("n_step", "target_update_period", "sample_size",
                                   "replay_capacity"))
        if self.core != "none":
            raise ValueError(f"--core {self.core}: agent 'dqn' is feed-forward (use --core none, "
                             "or a recurrent agent: impala, ppo)")
        if self.min_replay_size > self.replay_capacity:
            raise ValueError(f"--min-replay-size {self.min_replay_size} exceeds --replay-capacity "
                             f"{self.replay_capacity}")
