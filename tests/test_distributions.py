"""The action distributions against closed forms computed independently (scipy)."""
import jax
import numpy as np
from scipy import stats

from rltpu.agents.distributions import Categorical, Gaussian


def test_gaussian_log_prob_and_entropy_match_the_closed_form():
    mean = np.array([[0.0, 1.0, -2.0], [0.5, 0.0, 3.0]], np.float32)
    log_std = np.array([[0.0, -1.0, 0.7], [0.2, 0.2, -0.3]], np.float32)
    action = np.array([[0.3, 0.9, 0.0], [-1.0, 2.5, 3.0]], np.float32)
    params = {"mean": mean, "log_std": log_std}
    std = np.exp(np.float64(log_std))
    # a diagonal Gaussian: the dimensions' densities and entropies add up
    expected = [stats.multivariate_normal(mean[i], np.diag(std[i] ** 2)).logpdf(action[i])
                for i in range(2)]
    np.testing.assert_allclose(Gaussian.log_prob(params, action), expected, rtol=1e-5)
    expected = [stats.multivariate_normal(mean[i], np.diag(std[i] ** 2)).entropy()
                for i in range(2)]
    np.testing.assert_allclose(Gaussian.entropy(params), expected, rtol=1e-5)
    np.testing.assert_array_equal(Gaussian.mode(params), mean)


def test_gaussian_samples_have_its_mean_and_spread():
    params = {"mean": np.full((50_000, 2), [1.0, -3.0], np.float32),
              "log_std": np.full((50_000, 2), [0.0, np.log(0.25)], np.float32)}
    samples = np.asarray(Gaussian.sample(jax.random.key(0), params))
    np.testing.assert_allclose(samples.mean(0), [1.0, -3.0], atol=4 * 1.0 / np.sqrt(50_000))
    np.testing.assert_allclose(samples.std(0), [1.0, 0.25], rtol=0.02)


def test_categorical_log_prob_and_entropy_match_the_closed_form():
    logits = np.array([[0.0, 1.0, 2.0], [3.0, -1.0, 0.5]], np.float32)
    p = np.exp(np.float64(logits)) / np.exp(np.float64(logits)).sum(-1, keepdims=True)
    np.testing.assert_allclose(Categorical.log_prob(logits, np.array([2, 1])),
                               np.log([p[0, 2], p[1, 1]]), rtol=1e-5)
    np.testing.assert_allclose(Categorical.entropy(logits),
                               [stats.entropy(p[0]), stats.entropy(p[1])], rtol=1e-5)
    np.testing.assert_array_equal(Categorical.mode(logits), [2, 0])
