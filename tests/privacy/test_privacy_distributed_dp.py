"""Client-side DDG steps (rounding, noise, modular sum) and the parameter planner."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from secure_fedrec.privacy.clipping import clip_updates_l2
from secure_fedrec.privacy.ddg_accounting import (
    DistributedDiscreteGaussianAccountant,
    conditional_rounding_l2_bound,
)
from secure_fedrec.privacy.discrete_gaussian import (
    discrete_gaussian_variance,
    sample_discrete_gaussian,
)
from secure_fedrec.privacy.distributed_dp import (
    RoundingFailedError,
    conditional_randomized_round,
    plan_distributed_discrete_gaussian,
    randomized_round,
)

DELTA = 1e-6


def test_randomized_round_is_unbiased(seeded_urandom):
    seeded_urandom(2)
    x = np.full(200_000, 0.3)
    rounded = randomized_round(x)
    assert set(np.unique(rounded)) == {0, 1}
    assert stats.binomtest(int(rounded.sum()), len(x), 0.3).pvalue > 1e-3


def test_conditional_rounding_respects_the_bound():
    generator = np.random.default_rng(4)
    c, gamma, d = 1.0, 0.02, 400
    bound = conditional_rounding_l2_bound(c, gamma, d, beta=math.exp(-0.5))
    for _ in range(50):
        x = generator.normal(size=d)
        x *= c / np.linalg.norm(x)
        rounded = conditional_randomized_round(x / gamma, bound)
        assert float(np.dot(rounded, rounded)) <= bound**2
    with pytest.raises(RoundingFailedError):
        conditional_randomized_round(np.full(d, 10.5), bound, max_attempts=3)  # not clipped
    with pytest.raises(ValueError):
        randomized_round(np.array([np.nan]))


def test_plan_meets_every_constraint():
    plan = plan_distributed_discrete_gaussian(
        target_epsilon=3.0,
        delta=DELTA,
        l2_clip=1.0,
        dim=5000,
        bits=20,
        min_survivors=20,
        max_clients=30,
        sample_rate=0.05,
        rounds=50,
    )
    assert plan.wrap_probability <= 1e-9
    assert plan.share_sigma <= 2e4
    assert 0.99 * 3.0 <= plan.epsilon <= 3.0
    assert 20 * plan.share_sigma**2 >= plan.total_sigma**2
    assert plan.l2_sensitivity >= 1.0 / plan.gamma
    with pytest.raises(ValueError):
        plan_distributed_discrete_gaussian(
            target_epsilon=3.0,
            delta=DELTA,
            l2_clip=1.0,
            dim=5000,
            bits=8,
            min_survivors=20,
            max_clients=30,
            sample_rate=0.05,
            rounds=50,
        )


def test_one_round_end_to_end_in_the_ring(seeded_urandom):
    """Clip, round, add shares, sum modulo 2^bits with dropouts, decode: the noise is as planned."""
    seeded_urandom(9)
    bits, d, clients, min_survivors = 24, 2000, 12, 8
    plan = plan_distributed_discrete_gaussian(
        target_epsilon=4.0,
        delta=DELTA,
        l2_clip=1.0,
        dim=d,
        bits=bits,
        min_survivors=min_survivors,
        max_clients=clients,
        sample_rate=0.1,
        rounds=20,
    )
    generator = np.random.default_rng(0)
    updates = clip_updates_l2(generator.normal(size=(clients, d)) * 0.1, 1.0).updates
    modulus = 1 << bits
    survivors = list(range(min_survivors + 2))  # two clients dropped out
    ring_sum = np.zeros(d, dtype=np.int64)
    for client in survivors:
        integer = conditional_randomized_round(updates[client] / plan.gamma, plan.l2_sensitivity)
        noisy = integer + sample_discrete_gaussian(plan.share_sigma, d)
        ring_sum = (ring_sum + np.mod(noisy, modulus)) % modulus
    decoded = np.where(ring_sum >= modulus // 2, ring_sum - modulus, ring_sum) * plan.gamma
    error = decoded - updates[survivors].sum(axis=0)
    expected_variance = len(survivors) * discrete_gaussian_variance(plan.share_sigma) * plan.gamma**2
    assert expected_variance >= (plan.total_sigma * plan.gamma) ** 2  # dropouts left enough noise
    # Rounding adds at most gamma^2/4 per coordinate and client on top of the noise.
    statistic = (d - 1) * error.var(ddof=1) / expected_variance
    assert stats.chi2.sf(statistic, d - 1) > 1e-3
    assert statistic / (d - 1) < 1 + len(survivors) * plan.gamma**2 / 4 / expected_variance + 0.2
    accountant = DistributedDiscreteGaussianAccountant(l2_sensitivity=plan.l2_sensitivity,
                                                       num_shares=len(survivors) - 1, dim=d)
    accountant.step(noise_multiplier=plan.noise_multiplier(len(survivors) - 1), sample_rate=0.1)
    assert 0 < accountant.get_epsilon(DELTA) < plan.epsilon
