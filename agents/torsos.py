"""Convolutional torsos for pixel observations, in Flax (linen) and in Haiku.

* ``nature``: the DQN network of Mnih et al. 2015 (Nature): conv 32 8x8/4, conv 64 4x4/2,
  conv 64 3x3/1, dense 512, ReLUs.
* ``impala_resnet``: the deep residual network of Espeholt et al. 2018 (IMPALA, figure 3,
  right): three sections of 16, 32, 32 channels, each a 3x3 conv, a 3x3/2 max-pool and two
  residual blocks, then dense 256 (without the paper's LSTM: frame stacks carry the history).

Observations arrive as the env makes them, uint8 frame stacks ``[..., C, H, W]`` (frames
first). They are cast to float and divided by 255 here, inside the jitted network: the
actors and the learner's batch carry uint8, a quarter of float32's bytes, and the cast
runs on the device.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from rltpu.agents.config import TORSOS

CONV_TORSOS = TORSOS[1:]

IMPALA_CHANNELS = (16, 32, 32)


def check_torso(name: str, observation_space) -> None:
    """Raises ValueError unless ``name`` is a torso that can read ``observation_space``'s
    observations (a gymnasium space, or an observation shape)."""
    if name not in TORSOS:
        raise ValueError(f"--torso {name!r} is not one of {', '.join(TORSOS)}")
    shape = getattr(observation_space, "shape", observation_space)
    if name in CONV_TORSOS and shape is None:  # a Dict or Tuple space
        raise ValueError(f"--torso {name} needs image observations [C, H, W]; these are "
                         f"{type(observation_space).__name__} observations, which only "
                         "--torso mlp reads (each part flattened and concatenated)")
    if name in CONV_TORSOS and len(shape) != 3:
        raise ValueError(f"--torso {name} needs image observations [C, H, W]; these are "
                         f"{tuple(shape)} (use --torso mlp)")


def _images(observation):
    """``[..., C, H, W]`` uint8 -> ``([N, H, W, C]`` floats in [0, 1], leading shape)."""
    lead = observation.shape[:-3]
    x = observation.astype(jnp.float32) / 255.0
    x = jnp.moveaxis(x, -3, -1)  # channels last, as convolutions expect
    return x.reshape(-1, *x.shape[-3:]), lead


class FlaxNatureTorso(nn.Module):
    @nn.compact
    def __call__(self, observation):
        x, lead = _images(observation)
        for features, kernel, stride in ((32, 8, 4), (64, 4, 2), (64, 3, 1)):
            x = nn.relu(nn.Conv(features, (kernel, kernel), (stride, stride), padding="VALID")(x))
        x = nn.relu(nn.Dense(512)(x.reshape(x.shape[0], -1)))
        return x.reshape(*lead, -1)


class FlaxImpalaTorso(nn.Module):
    @nn.compact
    def __call__(self, observation):
        x, lead = _images(observation)
        for channels in IMPALA_CHANNELS:
            x = nn.Conv(channels, (3, 3), padding="SAME")(x)
            x = nn.max_pool(x, (3, 3), (2, 2), padding="SAME")
            for _ in range(2):
                block = nn.Conv(channels, (3, 3), padding="SAME")(nn.relu(x))
                x = x + nn.Conv(channels, (3, 3), padding="SAME")(nn.relu(block))
        x = nn.relu(x).reshape(x.shape[0], -1)
        x = nn.relu(nn.Dense(256)(x))
        return x.reshape(*lead, -1)


def haiku_nature_torso(observation):
    import haiku as hk
    x, lead = _images(observation)
    for features, kernel, stride in ((32, 8, 4), (64, 4, 2), (64, 3, 1)):
        x = jax.nn.relu(hk.Conv2D(features, kernel, stride, padding="VALID")(x))
    x = jax.nn.relu(hk.Linear(512)(x.reshape(x.shape[0], -1)))
    return x.reshape(*lead, -1)


def haiku_impala_torso(observation):
    import haiku as hk
    x, lead = _images(observation)
    for channels in IMPALA_CHANNELS:
        x = hk.Conv2D(channels, 3, padding="SAME")(x)
        x = hk.max_pool(x, window_shape=(1, 3, 3, 1), strides=(1, 2, 2, 1), padding="SAME")
        for _ in range(2):
            block = hk.Conv2D(channels, 3, padding="SAME")(jax.nn.relu(x))
            x = x + hk.Conv2D(channels, 3, padding="SAME")(jax.nn.relu(block))
    x = jax.nn.relu(x).reshape(x.shape[0], -1)
    x = jax.nn.relu(hk.Linear(256)(x))
    return x.reshape(*lead, -1)


FLAX_TORSOS = {"nature": FlaxNatureTorso, "impala_resnet": FlaxImpalaTorso}
HAIKU_TORSOS = {"nature": haiku_nature_torso, "impala_resnet": haiku_impala_torso}
