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


def _layers(tree):  # Flax: params/Dense_i/{kernel,bias}; Haiku: linear[_i]/{w,b}, in order
    # (a Gaussian policy's log_std is left out: Flax keeps it beside the layers, Haiku in "~")
    inner = tree["params"] if "params" in tree else tree
    keys = sorted((k for k in inner if {"kernel", "w"} & set(getattr(inner[k], "keys", list)())),
                  key=lambda k: int(k.rsplit("_", 1)[1]) if k[-1].isdigit() else -1)
    return [(np.float64(inner[k].get("kernel", inner[k].get("w"))),
             np.float64(inner[k].get("bias", inner[k].get("b")))) for k in keys]


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

    policy, value = nets.policy_and_value(params, x)
    np.testing.assert_allclose(policy, by_hand(_layers(params["policy"])), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(value, by_hand(_layers(params["value"]))[:, 0], rtol=1e-4, atol=1e-6)


def test_an_unknown_activation_is_refused_by_name():
    from rltpu.agents.config import NetworkConfig
    with pytest.raises(ValueError, match="--activation 'gelu' is not one of tanh, relu"):
        NetworkConfig(activation="gelu")


@pytest.mark.parametrize("lib", ["flax", "haiku"])
def test_orthogonal_weight_init_gives_each_layer_its_gain(lib):
    """--weight-init orthogonal (CleanRL's PPO): every kernel's columns (or rows, whichever
    are fewer) are orthogonal with norm = the layer's gain: sqrt(2) hidden, 0.01 for the
    policy's output, 1 for the value's and Q's; biases 0. LeCun's kernels are not."""
    from rltpu.agents.networks import actor_critic, q_network
    from rltpu.types import EnvSpec
    import gymnasium as gym
    spec = EnvSpec("test", gym.spaces.Box(-1, 1, (11,)), gym.spaces.Box(-1, 1, (3,)))
    x = np.zeros((1, 11), np.float32)

    def gram(kernel):  # the smaller Gram matrix of a [fan_in, fan_out] kernel
        return kernel @ kernel.T if kernel.shape[0] <= kernel.shape[1] else kernel.T @ kernel

    def check(layers, gains):
        assert len(layers) == len(gains)
        for (kernel, bias), gain in zip(layers, gains):
            np.testing.assert_allclose(gram(kernel), gain ** 2 * np.eye(min(kernel.shape)),
                                       atol=1e-5 * max(gain ** 2, 1))
            np.testing.assert_array_equal(bias, 0)

    params = actor_critic(spec, (64, 32), lib, weight_init="orthogonal").init(jax.random.key(0), x)
    check(_layers(params["policy"]), [2 ** 0.5, 2 ** 0.5, 0.01])
    check(_layers(params["value"]), [2 ** 0.5, 2 ** 0.5, 1.0])
    discrete = EnvSpec("test", gym.spaces.Box(-1, 1, (11,)), gym.spaces.Discrete(4))
    check(_layers(q_network(discrete, (64,), lib, weight_init="orthogonal").init(jax.random.key(0), x)),
          [2 ** 0.5, 1.0])
    lecun = actor_critic(spec, (64, 32), lib).init(jax.random.key(0), x)
    hidden = _layers(lecun["policy"])[0][0]
    assert not np.allclose(gram(hidden), gram(hidden)[0, 0] * np.eye(11), atol=1e-2)


@pytest.mark.parametrize("lib", ["flax", "haiku"])
def test_blines_weight_init_draws_biases_in_0_to_0_05_and_leaves_the_output_layers_unscaled(lib):
    """--weight-init blines (gymnax-blines' MinAtar PPO): every bias uniform in [0, 0.05),
    every kernel LeCun normal (variance 1/fan_in, from a normal truncated at two of its
    standard deviations, which are 1/0.8796 of sqrt(1/fan_in)), the policy's output layer
    too, where lecun and orthogonal scale it by 0.01."""
    from rltpu.agents.networks import actor_critic, q_network
    from rltpu.types import EnvSpec
    import gymnasium as gym
    spec = EnvSpec("test", gym.spaces.Box(-1, 1, (100,)), gym.spaces.Discrete(200))
    x = np.zeros((1, 100), np.float32)
    truncated_sd = 0.87962566  # of a standard normal truncated to [-2, 2]

    def check(layers):
        for kernel, bias in layers:
            assert bias.min() >= 0 and bias.max() < 0.05
            assert abs(bias.mean() - 0.025) < 0.005  # uniform: mean 0.025, sd 0.0144
            assert abs(kernel.var() * kernel.shape[0] - 1) < 0.05
            assert np.abs(kernel).max() <= 2 / truncated_sd / kernel.shape[0] ** 0.5 + 1e-6
    params = actor_critic(spec, (256, 256), lib, weight_init="blines").init(jax.random.key(0), x)
    check(_layers(params["policy"]))  # its last layer: 256 x 200
    check(_layers(params["value"])[:2])  # (the value's last layer has 256 weights: too few)
    check(_layers(q_network(spec, (256,), lib, weight_init="blines").init(jax.random.key(0), x)))
    lecun = _layers(actor_critic(spec, (256, 256), lib).init(jax.random.key(0), x)["policy"])
    assert np.abs(lecun[-1][0]).max() < 0.01  # the policy's output layer scaled by 0.01 ...
    np.testing.assert_array_equal(lecun[0][1], 0)  # ... and zero biases


def test_orthogonal_weight_init_is_refused_beyond_feed_forward_mlps():
    from rltpu.agents.config import NetworkConfig
    with pytest.raises(ValueError, match="--weight-init 'xavier' is not one of lecun, orthogonal, blines"):
        NetworkConfig(weight_init="xavier")
    with pytest.raises(ValueError, match=r"--weight-init orthogonal initialises feed-forward MLPs "
                                         r"only \(--torso mlp --core none\), got --torso mlp --core lstm"):
        NetworkConfig(weight_init="orthogonal", core="lstm")
    with pytest.raises(ValueError, match="got --torso nature --core none"):
        NetworkConfig(weight_init="orthogonal", torso="nature")
