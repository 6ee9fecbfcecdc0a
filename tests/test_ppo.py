"""GAE and the PPO loss against hand-computed numbers."""
import jax.numpy as jnp
import numpy as np

from rltpu.agents.ppo import PPOConfig, gae, make_optimizer, ppo_loss

V = jnp.array([1.0, 2.0, 3.0, 4.0])
R = jnp.array([1.0, 1.0, 1.0])


def advantages(discount, valid, lambda_=0.5):
    return gae(V[:-1], V[1:], R, jnp.array(discount), jnp.array(valid), lambda_)


def test_gae_by_hand():
    # delta = [1 + .9*2 - 1, 1 + .9*3 - 2, 1 + .9*4 - 3] = [1.8, 1.7, 1.6]
    # A_2 = 1.6; A_1 = 1.7 + .45 * 1.6 = 2.42; A_0 = 1.8 + .45 * 2.42 = 2.889
    np.testing.assert_allclose(advantages([0.9] * 3, [True] * 3), [2.889, 2.42, 1.6], rtol=1e-6)


def test_gae_termination_does_not_bootstrap():
    # step 1 terminates: delta_1 = 1 - 2 = -1 and nothing flows back past it
    np.testing.assert_allclose(advantages([0.9, 0.0, 0.9], [True] * 3), [1.35, -1.0, 1.6], rtol=1e-6)


def test_gae_autoreset_step_is_masked_and_cuts_the_trace():
    # step 2 is an autoreset step: advantage 0, and step 1 bootstraps from V(x_2) alone
    np.testing.assert_allclose(advantages([0.9] * 3, [True, True, False]), [2.565, 1.7, 0.0], rtol=1e-6)


def loss(advantage, normalize=False, value_clip=None):
    return ppo_loss(jnp.log(jnp.array([0.6, 0.3])), jnp.log(jnp.array([0.5, 0.5])),
                    jnp.array([0.5, 0.7]), jnp.array([1.0, 2.0]), jnp.array([1.2, 2.5]),
                    jnp.array(advantage), jnp.array([1.5, 1.0]), jnp.array([True, True]),
                    clip_epsilon=0.1, value_clip_epsilon=value_clip, value_cost=0.5,
                    entropy_cost=0.01, normalize_advantages=normalize)


def test_ppo_loss_by_hand():
    total, m = loss([1.0, -1.0])
    # ratios [1.2, .6]; surrogate = [min(1.2, 1.1), min(-.6, -.9)] = [1.1, -.9]
    np.testing.assert_allclose(m["pg_loss"], -0.1, rtol=1e-6)
    np.testing.assert_allclose(m["value_loss"], 0.5 * (0.25 + 1.0) / 2, rtol=1e-6)
    np.testing.assert_allclose(m["entropy"], 0.6, rtol=1e-6)
    np.testing.assert_allclose(m["clip_fraction"], 1.0)
    np.testing.assert_allclose(total, -0.1 + 0.5 * 0.3125 - 0.01 * 0.6, rtol=1e-6)


def test_value_clipping_by_hand():
    # clipped values = old + clip(v - old, +-.2) = [1.0, 2.3]; errors max([.25, 1], [.25, 1.69])
    _, m = loss([1.0, -1.0], value_clip=0.2)
    np.testing.assert_allclose(m["value_loss"], 0.5 * (0.25 + 1.69) / 2, rtol=1e-6)


def test_advantage_normalisation():
    # [3, 1] normalises to [1, -1]: the same surrogate as above
    _, m = loss([3.0, 1.0], normalize=True)
    np.testing.assert_allclose(m["pg_loss"], -0.1, rtol=1e-5)


def test_adam_epsilon_in_the_first_step_by_hand():
    # Adam's first step is -lr g / (|g| + eps) per parameter (both moments' bias corrections
    # give g and g^2); g's norm is under the 0.5 clip, so the clip leaves it alone.
    g = {"w": jnp.array([0.3, -0.1])}
    optimizer = make_optimizer(PPOConfig(learning_rate=1e-3, anneal_lr=False, adam_epsilon=0.1), 1)
    updates, _ = optimizer.update(g, optimizer.init(g), g)
    np.testing.assert_allclose(updates["w"], [-1e-3 * 0.3 / 0.4, 1e-3 * 0.1 / 0.2], rtol=1e-5)
