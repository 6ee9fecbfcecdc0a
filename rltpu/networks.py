"""Networks as two pure functions, whatever library they are written in.

An agent builds its losses on ``Network.init`` / ``Network.apply``; ``as_network`` turns a
Flax linen module, a Flax NNX module factory or a Haiku function into one, so the agent
(and the runtime) never care which library the author used::

    as_network(MyLinenModule(...))                       # flax.linen
    as_network(lambda x: hk.nets.MLP([64, 2])(x))        # haiku: a function to transform
    as_network(nnx_factory(lambda rngs: MyNNX(rngs=rngs)))  # flax.nnx
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable


@dataclasses.dataclass(frozen=True)
class Network:
    """``init(key, example_input) -> params`` and ``apply(params, input) -> output``."""

    init: Callable[[Any, Any], Any]
    apply: Callable[[Any, Any], Any]


@dataclasses.dataclass(frozen=True)
class nnx_factory:
    """Marks a ``rngs -> nnx.Module`` constructor for ``as_network``."""

    make: Callable[[Any], Any]


def from_linen(module) -> Network:
    return Network(init=module.init, apply=module.apply)


def from_haiku(fn: Callable) -> Network:
    import haiku as hk
    transformed = hk.without_apply_rng(hk.transform(fn))
    return Network(init=transformed.init, apply=transformed.apply)


def from_nnx(factory: nnx_factory) -> Network:
    from flax import nnx
    graphdef, _ = nnx.split(nnx.eval_shape(lambda: factory.make(nnx.Rngs(0))))

    def init(key, example_input):
        del example_input  # NNX modules are built from their constructor arguments
        return nnx.split(factory.make(nnx.Rngs(params=key)))[1]

    def apply(params, x):
        return nnx.merge(graphdef, params)(x)

    return Network(init=init, apply=apply)


def as_network(obj) -> Network:
    """A ``Network`` from a Flax linen module, an ``nnx_factory`` or a Haiku function."""
    if isinstance(obj, Network):
        return obj
    if isinstance(obj, nnx_factory):
        return from_nnx(obj)
    import flax.linen as nn
    if isinstance(obj, nn.Module):
        return from_linen(obj)
    if callable(obj):
        return from_haiku(obj)
    raise TypeError(f"cannot make a network of {type(obj).__name__}: pass a flax.linen "
                    "Module, an rltpu.networks.nnx_factory or a Haiku function")
