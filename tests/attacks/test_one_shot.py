"""The one-shot ε estimate (Andrew et al. 2024) on simulated Gaussian mechanisms with known μ."""

import math

import numpy as np
import pytest
from dp_accounting import dp_event
from dp_accounting.pld import pld_privacy_accountant

from attacks import (
    canary_client_scores,
    epsilon_two_gaussians,
    gaussian_epsilon,
    one_shot_estimate,
    participation_mu,
    simulate_canary_projections,
)


def _gaussian_mechanism_epsilon(mu: float, delta: float) -> float:
    accountant = pld_privacy_accountant.PLDAccountant(value_discretization_interval=1e-4)
    accountant.compose(dp_event.GaussianDpEvent(1.0 / mu))
    return accountant.get_epsilon(delta)


@pytest.mark.parametrize("mu", [0.3, 1.0, 2.5])
def test_two_gaussians_with_equal_std_are_the_gaussian_mechanism(mu):
    delta = 1e-5
    expected = _gaussian_mechanism_epsilon(mu, delta)
    assert epsilon_two_gaussians(0.0, 1.0, mu, 1.0, delta) == pytest.approx(expected, rel=2e-3)
    # location and scale do not matter, only the separation in units of the std
    assert epsilon_two_gaussians(5.0, 3.0, 5.0 + 3 * mu, 3.0, delta) == pytest.approx(expected, rel=2e-3)
    assert gaussian_epsilon(mu, delta) == pytest.approx(expected, rel=2e-3)


def test_two_gaussians_is_symmetric_and_grows_with_unequal_std():
    delta = 1e-5
    assert epsilon_two_gaussians(0, 1, 1, 1.2, delta) == pytest.approx(epsilon_two_gaussians(1, 1.2, 0, 1, delta))
    # unequal variances: an unbounded privacy loss, so more ε than the equal-variance pair
    assert epsilon_two_gaussians(0, 1, 1, 1.2, delta) > epsilon_two_gaussians(0, 1, 1, 1, delta)
    assert epsilon_two_gaussians(0, 1, 0, 1, delta) == 0.0


@pytest.mark.parametrize("mu", [0.5, 1.0, 2.0])
def test_known_mu_gives_an_estimate_close_to_its_epsilon(mu):
    rng = np.random.default_rng(int(mu * 10))
    member = rng.random(20_000) < 0.5
    statistics = rng.standard_normal(member.size) + mu * member
    est = one_shot_estimate(statistics, member, delta=1e-5)
    truth = _gaussian_mechanism_epsilon(mu, 1e-5)
    assert est.mu == pytest.approx(mu, abs=0.05)
    assert est.epsilon == pytest.approx(truth, rel=0.06)
    assert est.epsilon_two_gaussians == pytest.approx(truth, rel=0.25)
    assert est.kind == "estimate"


def test_the_summed_statistic_composes_the_rounds():
    """A canary in every round (q = 1) of T Gaussian rounds: the sum of its projections is the
    T-fold composition, μ√T — the estimate lands on that mechanism's ε."""
    mu, rounds = 0.4, 9
    included, x = simulate_canary_projections(20_000, rounds, sample_rate=1.0, mu=mu, random_state=3)
    est = one_shot_estimate(canary_client_scores(x, shift=mu, sample_rate=1.0)["sum"], included, delta=1e-5)
    assert est.mu == pytest.approx(mu * math.sqrt(rounds), rel=0.05)
    assert est.epsilon == pytest.approx(_gaussian_mechanism_epsilon(mu * math.sqrt(rounds), 1e-5), rel=0.06)


def test_participation_mu_recovers_one_round_of_a_poisson_sampled_mechanism():
    rng = np.random.default_rng(4)
    rounds, m, q, mu = 20, 2000, 0.1, 1.3
    included = rng.random(m) < 0.5
    took = (rng.random((rounds, m)) < q) & included
    z = rng.standard_normal((rounds, m)) + mu * took
    assert participation_mu(z, took) == pytest.approx(mu, abs=0.08)


def test_no_signal_estimates_zero_and_perfect_separation_infinity():
    rng = np.random.default_rng(5)
    member = rng.random(4000) < 0.5
    assert one_shot_estimate(rng.standard_normal(4000), member, delta=1e-5).epsilon < 0.3
    constant = one_shot_estimate(member.astype(float), member, delta=1e-5)  # a run without any noise
    assert constant.epsilon == math.inf or constant.epsilon > 100


def test_bad_input_is_refused():
    with pytest.raises(ValueError):
        one_shot_estimate(np.array([1.0, np.nan, 0.0, 2.0]), np.array([1, 1, 0, 0]), delta=1e-5)
    with pytest.raises(ValueError):
        one_shot_estimate(np.zeros(4), np.array([1, 0, 0, 0]), delta=1e-5)
    with pytest.raises(ValueError):
        epsilon_two_gaussians(0, 0, 1, 1, 1e-5)
    with pytest.raises(ValueError):
        participation_mu(np.zeros((2, 3)), np.zeros((3, 2), bool))
