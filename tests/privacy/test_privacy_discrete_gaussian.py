"""Discrete Gaussian samplers against the exact pmf, noise-share sizing and wrap-around bounds."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from scipy import stats

from secure_fedrec.privacy.discrete_gaussian import (
    DiscreteGaussianTable,
    discrete_gaussian_pmf,
    discrete_gaussian_variance,
    distributed_noise_share_sigma,
    sample_discrete_gaussian,
    sample_discrete_gaussian_exact,
    wrap_probability,
)

# The samplers read ``secrets`` (AES-CTR keyed from it), which pinning os.urandom does not
# reach: their tests use alpha = 1e-6, so a false failure is a one-in-a-million event.
UNSEEDED_ALPHA = 1e-6


def _chi_square_pvalue(samples: np.ndarray, sigma: float, pmf=None) -> float:
    """Chi-square goodness of fit with the tails pooled so every expected count is >= 5."""
    pmf = pmf or (lambda v: discrete_gaussian_pmf(sigma, v))
    n = len(samples)
    half = 1
    while n * pmf(np.array([half + 1]))[0] >= 5:
        half += 1
    # The outermost bins are the tails |x| >= half (not separate tail bins: beyond ``half`` the
    # expected count is below 5, and at sigma = 0.7 it is ~0.01, so one legitimate sample
    # there gave p ~ 1e-21 about once in 100 runs).
    centers = np.arange(-half, half + 1)
    expected = n * pmf(centers)
    tail = (n - expected.sum()) / 2
    expected[0] += tail
    expected[-1] += tail
    observed = np.array([np.sum(samples <= -half), *[np.sum(samples == c) for c in centers[1:-1]],
                         np.sum(samples >= half)])
    return float(stats.chisquare(observed, expected).pvalue)


@pytest.mark.parametrize("sigma2", [Fraction(1, 2), Fraction(9, 1), 2.25])
def test_exact_sampler_fits_the_pmf(sigma2):
    samples = sample_discrete_gaussian_exact(sigma2, 4000)
    assert _chi_square_pvalue(samples, math.sqrt(float(sigma2))) > UNSEEDED_ALPHA


@pytest.mark.parametrize("sigma", [0.7, 3.0, 40.0])
def test_table_sampler_fits_the_pmf(sigma, seeded_urandom):
    seeded_urandom(11)
    samples = DiscreteGaussianTable(sigma).sample(200_000)
    assert _chi_square_pvalue(samples, sigma) > UNSEEDED_ALPHA
    assert samples.dtype == np.int64


def test_table_implements_the_pmf_to_double_precision():
    table = DiscreteGaussianTable(5.0)
    values = np.arange(-30, 31)
    assert np.allclose(table.pmf(values), discrete_gaussian_pmf(5.0, values), rtol=1e-12, atol=1e-300)
    assert table.statistical_distance_bound < 2.0**-90
    assert DiscreteGaussianTable(1e4).statistical_distance_bound < 2.0**-90


def test_table_sampler_variance_matches(seeded_urandom):
    seeded_urandom(5)
    sigma, n = 12.0, 200_000
    samples = sample_discrete_gaussian(sigma, n)
    variance = discrete_gaussian_variance(sigma)
    # (n-1) s^2 / var ~ chi2(n-1) for near-Gaussian data; two-sided test.
    statistic = (n - 1) * samples.var(ddof=1) / variance
    p = 2 * min(stats.chi2.cdf(statistic, n - 1), stats.chi2.sf(statistic, n - 1))
    assert p > UNSEEDED_ALPHA


def test_variance_formula_against_direct_summation():
    for sigma in (0.3, 0.5, 1.0, 2.0, 7.5):
        grid = np.arange(-400, 401, dtype=np.float64)
        weights = np.exp(-(grid**2) / (2 * sigma**2))
        direct = np.sum(grid**2 * weights) / np.sum(weights)
        assert discrete_gaussian_variance(sigma) == pytest.approx(direct, rel=1e-10)
        assert discrete_gaussian_variance(sigma) <= sigma**2


@pytest.mark.parametrize("total_sigma,min_survivors", [(100.0, 10), (3.0, 16), (0.9, 4)])
def test_share_sizing_never_leaves_the_sum_under_noised(total_sigma, min_survivors):
    share = distributed_noise_share_sigma(total_sigma, min_survivors)
    for survivors in range(min_survivors, 2 * min_survivors + 1):
        assert survivors * share**2 >= total_sigma**2
        assert survivors * discrete_gaussian_variance(share) >= total_sigma**2 * (1 - 1e-12)
    assert (min_survivors - 1) * share**2 < total_sigma**2  # and not grossly over-noised


def test_sum_of_shares_has_the_intended_variance(seeded_urandom):
    seeded_urandom(21)
    total_sigma, min_survivors, coordinates = 60.0, 8, 40_000
    share = distributed_noise_share_sigma(total_sigma, min_survivors)
    for survivors in (min_survivors, min_survivors + 3):
        summed = sum(sample_discrete_gaussian(share, coordinates) for _ in range(survivors))
        target = survivors * discrete_gaussian_variance(share)
        statistic = (coordinates - 1) * summed.var(ddof=1) / target
        p = 2 * min(stats.chi2.cdf(statistic, coordinates - 1), stats.chi2.sf(statistic, coordinates - 1))
        assert p > UNSEEDED_ALPHA
        assert target >= total_sigma**2


def test_wrap_probability_bounds_the_observed_rate(seeded_urandom):
    seeded_urandom(8)
    bits, dim, signal, share, shares = 12, 2000, 1000.0, 120.0, 9
    bound = wrap_probability(bits=bits, dim=1, signal_bound=signal, share_sigma=share, max_shares=shares)
    assert 1e-4 < bound < 1
    noise = sum(sample_discrete_gaussian(share, dim * 50) for _ in range(shares))
    observed = np.mean(signal + noise > (1 << (bits - 1)) - 1)
    assert observed <= bound
    assert (
        wrap_probability(bits=bits, dim=dim, signal_bound=5000.0, share_sigma=share, max_shares=shares) == 1.0
    )
    assert wrap_probability(bits=32, dim=10**6, signal_bound=1e6, share_sigma=100.0, max_shares=100) < 1e-12


def test_rejects_bad_parameters():
    with pytest.raises(ValueError):
        DiscreteGaussianTable(0.0)
    with pytest.raises(ValueError):
        DiscreteGaussianTable(1e7)  # table too large
    with pytest.raises(ValueError):
        sample_discrete_gaussian_exact(-1, 3)
    with pytest.raises(ValueError):
        distributed_noise_share_sigma(10.0, 0)


def test_table_sampler_breaks_top_word_ties_with_the_low_word(monkeypatch):
    """Draws whose top 64 bits equal a threshold's are resolved by the full 128-bit compare
    (the low word is drawn only for them, in the order of the draws)."""
    from secure_fedrec.privacy import discrete_gaussian

    table = DiscreteGaussianTable(3.0)
    thresholds = [(int(hi) << 64) | int(lo) for hi, lo in zip(table._hi, table._lo)]
    draws = []
    for threshold in thresholds[:6]:
        for delta in (-1, 0, 1):  # just below, at and just above: same top word, low word decides
            draws.append(threshold + delta)
    draws.append(0)
    draws.append((1 << 128) - 1)
    tops = {int(hi) for hi in table._hi}
    lows = iter([(d & ((1 << 64) - 1)).to_bytes(8, "little") for d in draws if d >> 64 in tops])
    high_words = np.array([d >> 64 for d in draws], dtype=np.uint64)

    def keystream(seed, length, dtype):  # the top words, then all-zero sign bits (all positive)
        return np.concatenate([high_words, np.zeros(length - len(draws), np.uint64)])

    class FakeSecrets:
        @staticmethod
        def token_bytes(n):
            return bytes(n) if n != 8 else next(lows)

    monkeypatch.setattr(discrete_gaussian, "keystream_words", keystream)
    monkeypatch.setattr(discrete_gaussian, "secrets", FakeSecrets)
    got = table.sample(len(draws))
    want = [sum(1 for t in thresholds if t <= d) for d in draws]
    assert got.tolist() == want
    assert next(lows, None) is None  # every tied draw, and only those, drew its low word
