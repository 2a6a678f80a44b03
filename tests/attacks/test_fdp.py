"""The one-run f-DP audit: exact curves, soundness against known mechanisms, and power."""

import math

import numpy as np
import pytest
from scipy import stats

from attacks import (
    GaussianTradeoff,
    MechanismFamily,
    ProfileTradeoff,
    audit_one_run,
    audit_one_run_fdp,
    canary_client_scores,
    fdp_epsilon_lower_bound,
    fdp_one_run_rejects,
    gaussian_epsilon,
    gaussian_mu,
    simulate_canary_projections,
)
from attacks.fdp import REFINE_TOLERANCE


def _gaussian_profile(mu, epsilons):
    # exact privacy profile of μ-GDP (Dong, Roth, Su 2019, Cor. 2.13)
    return (stats.norm.cdf(-epsilons / mu + mu / 2) - np.exp(epsilons) * stats.norm.cdf(-epsilons / mu - mu / 2))


def test_gaussian_epsilon_matches_dp_accounting():
    dp_accounting = pytest.importorskip("dp_accounting")
    for sigma, delta in ((1.0, 1e-5), (2.0, 2.5e-6), (0.6, 1e-3)):
        assert gaussian_epsilon(1 / sigma, delta) == pytest.approx(
            dp_accounting.get_epsilon_gaussian(sigma, delta), rel=1e-6)
        assert gaussian_mu(gaussian_epsilon(1 / sigma, delta), delta) == pytest.approx(1 / sigma, rel=1e-8)


def test_profile_tradeoff_of_a_gaussian_profile_is_the_gaussian_curve():
    mu = 1.3
    eps = np.linspace(0, 12, 2401)
    profile = ProfileTradeoff(eps, _gaussian_profile(mu, eps))
    alpha = np.linspace(0, 1, 201)
    exact = GaussianTradeoff(mu)(alpha)
    got = profile(alpha)
    # a sup over finitely many lines is a lower envelope: never above, and close on a fine grid
    assert np.all(got <= exact + 1e-9)
    assert np.max(exact - got) < 2e-3


def test_profile_tradeoff_rejects_bad_input():
    with pytest.raises(ValueError):
        ProfileTradeoff(np.array([1.0, -1.0]), np.array([0.0, 0.0]))
    with pytest.raises(ValueError):
        ProfileTradeoff(np.array([1.0]), np.array([1.5]))
    with pytest.raises(ValueError):
        ProfileTradeoff(np.array([]), np.array([]))


@pytest.mark.parametrize("epsilon", [0.5, 1.0, 2.0])
def test_never_rejects_what_randomized_response_makes_likely(epsilon):
    # ε-randomized response on independent canaries is ε-DP and its number of correct guesses is exactly
    # Binomial(r, e^ε/(1+e^ε)); a sound test rejects only outcomes that binomial makes rare.
    curve = ProfileTradeoff(np.array([epsilon]), np.array([0.0]))
    p = 1 / (1 + math.exp(-epsilon))
    for r in (10, 40, 120):
        for c in range(r + 1):
            if fdp_one_run_rejects(curve, 400, r, c, 0.05):
                assert stats.binom.sf(c - 1, r, p) <= 0.05 + 1e-12, (r, c)


def test_false_rejections_of_a_correct_gaussian_mechanism_stay_below_the_level():
    mu, m, level = 0.8, 400, 0.1
    rng = np.random.default_rng(0)
    rejections = 0
    trials = 200
    for _ in range(trials):
        included, x = simulate_canary_projections(m, 1, sample_rate=1.0, mu=mu, random_state=rng)
        top = np.argsort(-x[0])[:40]
        rejections += fdp_one_run_rejects(GaussianTradeoff(mu), m, 40, int(included[top].sum()), level)
    assert rejections / trials <= level + 3 * math.sqrt(level * (1 - level) / trials)


def _gaussian_family(delta):
    return MechanismFamily(tradeoff=lambda s: GaussianTradeoff(1.0 / s),
                           epsilon=lambda s: gaussian_epsilon(1.0 / s, delta),
                           scales=tuple(np.geomspace(0.05, 20, 120)))


def test_binary_search_finds_the_smallest_rejected_scale():
    family = _gaussian_family(1e-5)
    eps, scale = fdp_epsilon_lower_bound(family, 1000, 200, 190, confidence=0.95)
    first = next(k for k, s in enumerate(family.scales)
                 if fdp_one_run_rejects(family.curve(s), 1000, 200, 190, 0.05))
    # refined between the last accepted and the first rejected grid point
    assert family.scales[first - 1] < scale <= family.scales[first]
    assert fdp_one_run_rejects(family.curve(scale), 1000, 200, 190, 0.05)
    assert not fdp_one_run_rejects(family.curve(scale / (1 + 2 * REFINE_TOLERANCE)), 1000, 200, 190, 0.05)
    assert eps == pytest.approx(gaussian_epsilon(1 / scale, 1e-5))
    assert eps >= gaussian_epsilon(1 / family.scales[first], 1e-5)
    assert fdp_epsilon_lower_bound(family, 1000, 200, 100, confidence=0.95) == (0.0, None)


def test_fdp_audit_is_tighter_than_the_epsilon_delta_audit_and_below_epsilon():
    delta = 1e-5
    mu = 1.0 / 0.7  # a Gaussian mechanism at ε ≈ 6.9
    epsilon = gaussian_epsilon(mu, delta)
    included, x = simulate_canary_projections(2000, 1, sample_rate=1.0, mu=mu, random_state=3)
    scores = canary_client_scores(x, shift=mu, sample_rate=1.0)["llr"]
    guesses = {"num_positive": [100, 200, 500], "num_negative": [0, 200]}
    classic = audit_one_run(scores, included, delta=delta, **guesses)
    fdp = audit_one_run_fdp(scores, included, family=_gaussian_family(delta), epsilon_claimed=epsilon,
                            delta=delta, **guesses)
    assert 0 < classic.epsilon_lower_bound < fdp.epsilon_lower_bound <= epsilon
    assert not fdp.violation and fdp.details["num_tests"] == 6


def test_fdp_audit_flags_a_mechanism_with_less_noise_than_claimed():
    delta = 1e-5
    included, x = simulate_canary_projections(1000, 1, sample_rate=1.0, mu=4.0, random_state=1)
    scores = canary_client_scores(x, shift=4.0, sample_rate=1.0)["llr"]
    claimed = gaussian_epsilon(1.0, delta)  # the accountant believes μ = 1
    with pytest.warns(UserWarning, match="PRIVACY VIOLATION"):
        result = audit_one_run_fdp(scores, included, num_positive=[100, 250], family=_gaussian_family(delta),
                                   epsilon_claimed=claimed, delta=delta)
    assert result.violation and result.details["rejected_noise_scale"] < 1.0


def test_family_validates_its_grid():
    with pytest.raises(ValueError):
        MechanismFamily(tradeoff=GaussianTradeoff, epsilon=float, scales=(2.0, 1.0))
    with pytest.raises(ValueError):
        MechanismFamily(tradeoff=GaussianTradeoff, epsilon=float, scales=())
