"""What every built-in agent's config shares: the network fields and the range checks.

Each agent's config is a frozen dataclass that extends ``NetworkConfig`` and checks its own
fields with ``check_ranges`` in ``__post_init__`` (calling ``super().__post_init__()`` for
the network fields), so a bad value is named the same way, as its flag, everywhere.
"""
from __future__ import annotations

import dataclasses
from typing import Literal, get_args

NetworkLib = Literal["flax", "haiku"]
Torso = Literal["mlp", "nature", "impala_resnet"]
NETWORK_LIBS: tuple[str, ...] = get_args(NetworkLib)
TORSOS: tuple[str, ...] = get_args(Torso)
Core = Literal["none", "lstm", "gru"]
CORES: tuple[str, ...] = get_args(Core)
Activation = Literal["tanh", "relu"]
ACTIVATIONS: tuple[str, ...] = get_args(Activation)
WeightInit = Literal["lecun", "orthogonal", "blines"]
WEIGHT_INITS: tuple[str, ...] = get_args(WeightInit)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_ranges(config, *, positive=(), non_negative=(), unit_interval=(),
                 positive_int=()) -> None:
    """Raises ValueError naming the first field of ``config`` out of its range.

    Args:
      positive: fields that must be > 0 (NaN is not).
      non_negative: fields that must be >= 0.
      unit_interval: fields that must be in [0, 1].
      positive_int: fields that must be integers >= 1.
    """
    for name in positive:
        if not getattr(config, name) > 0:
            raise ValueError(f"{_flag(name)} must be > 0, got {getattr(config, name)}")
    for name in non_negative:
        if not getattr(config, name) >= 0:
            raise ValueError(f"{_flag(name)} must be >= 0, got {getattr(config, name)}")
    for name in unit_interval:
        if not 0 <= getattr(config, name) <= 1:
            raise ValueError(f"{_flag(name)} must be in [0, 1], got {getattr(config, name)}")
    for name in positive_int:
        value = getattr(config, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{_flag(name)} must be a positive integer, got {value}")


def check_choice(name: str, value, choices: tuple) -> None:
    """Raises ValueError unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{_flag(name)} {value!r} is not one of {', '.join(map(str, choices))}")


@dataclasses.dataclass(frozen=True)
class NetworkConfig:
    """The networks' fields, shared by every built-in agent's config."""

    hidden_sizes: tuple[int, ...] = (64, 64)
    """Widths of the MLPs' hidden layers (policy and value, or Q)."""
    activation: Activation = "tanh"
    """The MLPs' hidden-layer nonlinearity: tanh or relu (the convolutional torsos keep
    their papers' ReLUs)."""
    weight_init: WeightInit = "lecun"
    """The MLPs' initial weights: lecun (LeCun-normal hidden layers, the output layer
    variance-scaled at its head's gain: 0.01 policy, 1 value or Q), orthogonal (hidden
    layers of gain sqrt(2), the output layer of its head's gain, as CleanRL's PPO), biases 0
    for both; or blines (LeCun-normal kernels in every layer, the policy's output too,
    biases uniform in [0, 0.05), as gymnax-blines' MinAtar PPO). Feed-forward MLPs only
    (--torso mlp --core none)."""
    network_lib: NetworkLib = "flax"
    """Library the networks are written in: flax or haiku."""
    torso: Torso = "mlp"
    """Network torso: mlp (--hidden-sizes), nature (Mnih et al. 2015) or impala_resnet
    (Espeholt et al. 2018); the convolutional ones read uint8 frame stacks [C, H, W]."""
    clip_rewards: bool = False
    """Clip rewards to [-1, 1] in the loss (Atari); returns are reported unclipped."""
    core: Core = "none"
    """Recurrent core between the torso and the heads: lstm, gru or none (feed-forward).
    With a core the policy also reads the previous action and reward (as IMPALA's LSTM
    agent does), and policy and value share torso and core."""
    core_size: int = 256
    """Width of the recurrent core's state (--core lstm or gru)."""

    def __post_init__(self):
        check_choice("torso", self.torso, TORSOS)
        check_choice("network_lib", self.network_lib, NETWORK_LIBS)
        check_choice("core", self.core, CORES)
        check_choice("activation", self.activation, ACTIVATIONS)
        check_choice("weight_init", self.weight_init, WEIGHT_INITS)
        if self.weight_init != "lecun" and (self.torso != "mlp" or self.core != "none"):
            raise ValueError(f"--weight-init {self.weight_init} initialises feed-forward MLPs "
                             f"only (--torso mlp --core none), got --torso {self.torso} "
                             f"--core {self.core}")
        check_ranges(self, positive_int=("core_size",))
        if not self.hidden_sizes or min(self.hidden_sizes) < 1:
            raise ValueError(f"--hidden-sizes must be positive widths, got {self.hidden_sizes}")
