"""rltpu.networks: Flax linen, Flax NNX and Haiku become the same init/apply pair."""
import flax.linen as nn
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rltpu import devices
from rltpu.networks import Network, as_network, nnx_factory


class LinenMLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(2)(nn.tanh(nn.Dense(8)(x)))


class NNXMLP(nnx.Module):
    def __init__(self, rngs):
        self.hidden = nnx.Linear(3, 8, rngs=rngs)
        self.out = nnx.Linear(8, 2, rngs=rngs)

    def __call__(self, x):
        return self.out(jnp.tanh(self.hidden(x)))


def haiku_mlp(x):
    return hk.nets.MLP([8, 2], activation=jnp.tanh)(x)


@pytest.mark.parametrize("make", [lambda: LinenMLP(), lambda: nnx_factory(lambda rngs: NNXMLP(rngs)),
                                  lambda: haiku_mlp], ids=["linen", "nnx", "haiku"])
def test_each_library_gives_pure_init_and_apply(make):
    net = as_network(make())
    assert isinstance(net, Network)
    x = jnp.ones((5, 3))
    params = jax.jit(net.init)(jax.random.key(0), x)
    out = jax.jit(net.apply)(params, x)
    assert out.shape == (5, 2)
    # params are a plain pytree: they replicate over a mesh and differentiate
    replicated = devices.replicate(params, devices.make_mesh(8))
    np.testing.assert_allclose(jax.jit(net.apply)(replicated, x), out, rtol=1e-6)
    grads = jax.grad(lambda p: jnp.sum(net.apply(p, x) ** 2))(params)
    assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))
    # different keys give different params
    other = net.init(jax.random.key(1), x)
    assert any(not np.allclose(a, b) for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(other)))


def test_unsupported_object_is_a_clear_error():
    with pytest.raises(TypeError, match="cannot make a network of int"):
        as_network(3)


@pytest.mark.parametrize("lib", ["flax", "haiku"])
@pytest.mark.parametrize("activation,fn", [("tanh", np.tanh), ("relu", lambda x: np.maximum(x, 0))])
def test_actor_critic_mlps_use_the_configured_activation(lib, activation, fn):
    """--activation: the policy and value MLPs, recomputed in float64 numpy from their params."""
    from rltpu.agents.config import NetworkConfig
    from rltpu.agents.networks import actor_critic
    from rltpu.types import EnvSpec
    import gymnasium as gym
    spec = EnvSpec("test", gym.spaces.Box(-1, 1, (3,)), gym.spaces.Discrete(2))
    nets = actor_critic(spec, (8, 8), lib, activation=NetworkConfig(activation=activation).activation)
    x = np.asarray(jax.random.normal(jax.random.key(1), (5, 3)), np.float32)
    params = nets.init(jax.random.key(0), x)

    def by_hand(layers):  # layers: (kernel, bias) in order
        h = np.float64(x)
        for kernel, bias in layers[:-1]:
            h = fn(h @ np.float64(kernel) + np.float64(bias))
        return h @ np.float64(layers[-1][0]) + np.float64(layers[-1][1])

    def layers(tree):  # Flax: params/Dense_i/{kernel,bias}; Haiku: linear[_i]/{w,b}
        inner = tree["params"] if "params" in tree else tree
        keys = sorted(inner, key=lambda k: int(k.rsplit("_", 1)[1]) if k[-1].isdigit() else -1)
        return [(inner[k].get("kernel", inner[k].get("w")), inner[k].get("bias", inner[k].get("b")))
                for k in keys]

    policy, value = nets.policy_and_value(params, x)
    np.testing.assert_allclose(policy, by_hand(layers(params["policy"])), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(value, by_hand(layers(params["value"]))[:, 0], rtol=1e-4, atol=1e-6)


def test_an_unknown_activation_is_refused_by_name():
    from rltpu.agents.config import NetworkConfig
    with pytest.raises(ValueError, match="--activation 'gelu' is not one of tanh, relu"):
        NetworkConfig(activation="gelu")
