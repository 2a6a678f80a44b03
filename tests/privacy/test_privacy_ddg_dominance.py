"""The continuous Gaussian that dominates the distributed discrete Gaussian sum (ddg_dominance).

Each step of the module's argument is checked on exact discrete distributions, at scales where
its slack is large enough to see (the package's own scales make it ~1e-60)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from dp_accounting import dp_event
from dp_accounting.pld import pld_privacy_accountant
from scipy import integrate, stats

from secure_fedrec.privacy.ddg_accounting import DistributedDiscreteGaussianAccountant
from secure_fedrec.privacy.ddg_dominance import (
    dominating_gaussian,
    gaussian_delta,
    revealed_mixture_delta,
    revealed_mixture_epsilon,
    smoothing_log_ratio,
    sum_of_shares_log_ratio,
    theta_deviation,
)

SUPPORT = np.arange(-200, 201)


def discrete_gaussian(variance: float, centre: float = 0.0) -> np.ndarray:
    weights = np.exp(-((SUPPORT - centre) ** 2) / (2.0 * variance))
    return weights / weights.sum()


def test_theta_deviation_bounds_the_theta_function_uniformly():
    for v in (0.2, 0.5, 1.0, 2.0):
        bound = float(theta_deviation(v))
        for c in np.linspace(0.0, 1.0, 41):
            theta = np.exp(-((SUPPORT - c) ** 2) / (2.0 * v)).sum() / math.sqrt(2 * math.pi * v)
            assert abs(theta - 1.0) <= bound * (1 + 1e-9) + 1e-15
        at_zero = np.exp(-(SUPPORT**2) / (2.0 * v)).sum() / math.sqrt(2 * math.pi * v) - 1.0
        assert at_zero == pytest.approx(bound, rel=1e-6)  # attained at c = 0: the bound is tight


@pytest.mark.parametrize(("sigma", "shares"), [(0.45, 2), (0.5, 3), (0.6, 5)])
def test_a_sum_of_shares_is_pointwise_close_to_one_discrete_gaussian(sigma, shares):
    pmf = discrete_gaussian(sigma**2)
    total = pmf
    for _ in range(shares - 1):
        total = np.convolve(total, pmf)[200:601]
    target = discrete_gaussian(shares * sigma**2)
    visible = target > 1e-250
    worst = float(np.max(np.abs(np.log(total[visible]) - np.log(target[visible]))))
    bound = sum_of_shares_log_ratio(sigma, shares)
    assert 1e-6 < worst <= bound  # visible at these scales, and within the bound
    assert bound < 20 * worst      # and not vacuous


@pytest.mark.parametrize(("total_variance", "smoothing"), [(2.0, 0.3), (5.0, 0.5)])
def test_smoothing_a_continuous_gaussian_gives_the_discrete_one_up_to_the_slack(total_variance, smoothing):
    # W(k) = ∫ φ_{s²-b}(x) N_ℤ(x, b)(k) dx, by quadrature over one period at a time
    continuous = stats.norm(scale=math.sqrt(total_variance - smoothing))
    ks = np.arange(-8, 9)

    def kernel(x: float, k: int) -> float:
        normaliser = np.exp(-((SUPPORT - x) ** 2) / (2.0 * smoothing)).sum()
        return continuous.pdf(x) * math.exp(-((k - x) ** 2) / (2.0 * smoothing)) / normaliser

    smoothed = np.array([
        sum(integrate.quad(kernel, a, a + 1, args=(int(k),), epsabs=1e-15, epsrel=1e-12)[0] for a in range(-30, 30))
        for k in ks])
    target = discrete_gaussian(total_variance)[200 + ks]
    worst = float(np.max(np.abs(np.log(smoothed) - np.log(target))))
    assert worst <= smoothing_log_ratio(smoothing) * (1 + 1e-6)
    assert worst > 1e-8


@pytest.mark.parametrize(("sigma", "shares", "shift"), [(3.0, 2, 4), (2.5, 4, 7)])
def test_the_discrete_sum_is_no_less_private_than_its_dominating_gaussian(sigma, shares, shift):
    pmf = discrete_gaussian(sigma**2)
    total = pmf
    for _ in range(shares - 1):
        total = np.convolve(total, pmf)[200:601]
    shifted = np.roll(total, shift)
    shifted[:shift] = 0.0
    domination = dominating_gaussian(share_sigma=sigma, num_shares=shares, l2_sensitivity=shift, dim=1,
                                     smoothing=1.0)
    assert domination is not None
    mu, slack = 1.0 / domination.noise_multiplier, domination.log_slack
    for epsilon in (0.0, 0.2, 0.5, 1.0, 2.0):
        exact = max(float(np.sum(np.maximum(shifted - math.exp(epsilon) * total, 0.0))),
                    float(np.sum(np.maximum(total - math.exp(epsilon) * shifted, 0.0))))
        bound = math.exp(slack) * gaussian_delta(max(0.0, epsilon - 2 * slack), mu)
        assert exact <= bound + 1e-12
        assert exact >= 0.75 * bound  # and close (lattice effects at these small scales)


def test_package_scales_have_negligible_slack_and_coarse_shares_are_refused():
    domination = dominating_gaussian(share_sigma=2e4, num_shares=100, l2_sensitivity=2.6e5, dim=81_595)
    assert domination is not None and domination.log_slack < 1e-50
    assert domination.noise_multiplier == pytest.approx(math.sqrt(100 * 4e8 - 8.0) / 2.6e5)
    assert dominating_gaussian(share_sigma=0.3, num_shares=100, l2_sensitivity=5.0, dim=10_000) is None
    assert dominating_gaussian(share_sigma=0.2, num_shares=2, l2_sensitivity=5.0, dim=1) is None  # nσ² ≤ 2b


def test_the_revealed_mixture_is_the_average_over_participation_patterns():
    mu, q, epsilon = 0.7, 0.3, 0.8
    one = revealed_mixture_delta([epsilon], [(mu, q, 1)])[0]
    assert one == pytest.approx(q * gaussian_delta(epsilon, mu), rel=1e-12)
    two_groups = revealed_mixture_delta([epsilon], [(mu, q, 2), (0.4, 0.5, 1)])[0]
    expected = sum(stats.binom.pmf(n, 2, q) * stats.binom.pmf(m, 1, 0.5)
                   * gaussian_delta(epsilon, math.sqrt(n * mu**2 + m * 0.4**2)) for n in range(3) for m in range(2))
    assert two_groups == pytest.approx(expected, rel=1e-10)
    # at q = 1 it is the composed Gaussian; dp-accounting's PLD (pessimistic) agrees from above
    library = pld_privacy_accountant.PLDAccountant(value_discretization_interval=1e-4)
    library.compose(dp_event.SelfComposedDpEvent(dp_event.GaussianDpEvent(1 / mu), 9))
    ours = revealed_mixture_epsilon(1e-5, [(mu, 1.0, 9)])
    assert ours == pytest.approx(library.get_epsilon(1e-5), rel=2e-3)
    assert ours <= library.get_epsilon(1e-5) + 1e-9


def test_the_slack_is_charged_on_both_sides():
    rounds = [(0.5, 0.2, 10)]
    plain = revealed_mixture_epsilon(1e-5, rounds)
    assert revealed_mixture_epsilon(1e-5, rounds, total_slack=1e-3) > plain + 2e-3
    assert revealed_mixture_delta([0.001], rounds, total_slack=1e-3)[0] == 1.0


def accountant(subsampling: str, sample_rate: float) -> DistributedDiscreteGaussianAccountant:
    trial = DistributedDiscreteGaussianAccountant(l2_sensitivity=500.0, num_shares=60, dim=1801,
                                                  subsampling=subsampling)
    trial.step(noise_multiplier=1.26, sample_rate=sample_rate, steps=18)
    return trial


def rdp_epsilon(trial: DistributedDiscreteGaussianAccountant, delta: float) -> float:
    from dp_accounting.rdp import rdp_privacy_accountant

    return rdp_privacy_accountant.compute_epsilon(np.asarray(trial.orders, float), trial.rdp(), delta)[0]


def test_the_accountant_takes_the_dominating_gaussian_where_it_applies():
    revealed = accountant("revealed", 0.1)
    rounds, slack, hidden = revealed.dominated_rounds()
    assert not hidden and slack < 1e-50
    assert revealed.get_epsilon(1e-5) < 0.9 * rdp_epsilon(revealed, 1e-5)
    unsampled = accountant("general", 1.0)
    assert unsampled.get_epsilon(1e-5) < rdp_epsilon(unsampled, 1e-5)
    server_sampled = accountant("general", 0.1)  # sampled users add their own share: no shift pair
    assert server_sampled.dominated_rounds() is None
    assert server_sampled.get_epsilon(1e-5) == pytest.approx(rdp_epsilon(server_sampled, 1e-5))
    grid = np.array([0.5, 2.0, 6.0])
    curve = revealed.delta_curve(grid)
    assert np.all(np.diff(curve) < 0)
    assert curve == pytest.approx(revealed_mixture_delta(grid, [(1 / z, q, n) for z, q, n in rounds]), rel=1e-12)


def test_a_hidden_sample_of_shift_pairs_takes_the_subsampled_gaussian_pld():
    # private sampling / record level: every share in every sum, the user's update by a hidden coin
    symmetric = accountant("symmetric", 0.1)
    rounds, _, hidden = symmetric.dominated_rounds()
    assert hidden
    library = pld_privacy_accountant.PLDAccountant(value_discretization_interval=1e-4)
    library.compose(dp_event.SelfComposedDpEvent(dp_event.PoissonSampledDpEvent(0.1, dp_event.GaussianDpEvent(
        rounds[0][0])), 18))
    assert symmetric.get_epsilon(1e-5) == pytest.approx(library.get_epsilon(1e-5), rel=2e-3)
    assert symmetric.get_epsilon(1e-5) < 0.9 * rdp_epsilon(symmetric, 1e-5)
    grid = np.array([0.5, 1.0, 3.0])
    assert np.all(symmetric.delta_curve(grid) <= np.asarray(library._pld.get_delta_for_epsilon(grid)) * 1.05)
    rdp_only = DistributedDiscreteGaussianAccountant(l2_sensitivity=500.0, num_shares=60, dim=1801,
                                                     subsampling="symmetric", use_shift_profile=False)
    rdp_only.extend(symmetric.history)
    assert rdp_only.dominated_rounds() is None
    assert rdp_only.get_epsilon(1e-5) == pytest.approx(rdp_epsilon(symmetric, 1e-5))


def test_calibration_takes_the_profile_that_needs_less_noise():
    from secure_fedrec.privacy.calibration import calibrate_ddg_total_sigma

    common = {"l2_sensitivity": 800.0, "min_survivors": 60, "dim": 1801, "sample_rate": 0.1, "steps": 18}
    for subsampling in ("revealed", "symmetric", "general"):
        total = calibrate_ddg_total_sigma(4.0, 1e-5, subsampling=subsampling, **common)
        trial = DistributedDiscreteGaussianAccountant(l2_sensitivity=800.0, num_shares=60, dim=1801,
                                                      subsampling=subsampling)
        trial.step(noise_multiplier=total / 800.0, sample_rate=0.1, steps=18)
        assert trial.get_epsilon(1e-5) <= 4.0
        rdp_only = DistributedDiscreteGaussianAccountant(l2_sensitivity=800.0, num_shares=60, dim=1801,
                                                         subsampling=subsampling, use_shift_profile=False)
        rdp_only.step(noise_multiplier=total / 800.0, sample_rate=0.1, steps=18)
        if subsampling == "general":
            assert rdp_only.get_epsilon(1e-5) == pytest.approx(trial.get_epsilon(1e-5))
        else:
            assert rdp_only.get_epsilon(1e-5) > 4.2  # the profile let it use less noise than RDP needs
        lighter = DistributedDiscreteGaussianAccountant(l2_sensitivity=800.0, num_shares=60, dim=1801,
                                                        subsampling=subsampling)
        lighter.step(noise_multiplier=total / 800.0 * 0.99, sample_rate=0.1, steps=18)
        assert lighter.get_epsilon(1e-5) > 4.0  # and it is the smallest such noise (to 1 %)
