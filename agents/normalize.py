"""Masked statistics the built-in losses share."""
from __future__ import annotations

import jax.numpy as jnp


def masked_normalize(x, mask, epsilon: float = 1e-8):
    """``x`` scaled to zero mean and unit variance over the entries where ``mask`` is set.

    Masked-out entries (autoreset steps) do not count in the statistics; their values are
    scaled alike and left for the caller's mask to drop. An all-masked ``x`` is only shifted.

    Args:
      x: any shape. mask: ``x``'s shape, bool or 0/1.
      epsilon: added to the standard deviation.
    """
    mask = mask.astype(jnp.float32)
    count = jnp.maximum(mask.sum(), 1.0)
    mean = jnp.sum(x * mask) / count
    std = jnp.sqrt(jnp.sum(jnp.square(x - mean) * mask) / count)
    return (x - mean) / (std + epsilon)
