"""Distributed discrete Gaussian accounting: formula checks and limits against the continuous Gaussian."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from dp_accounting.rdp import rdp_privacy_accountant

from secure_fedrec.privacy.accounting import (
    AccountantStateError,
    PldAccountant,
    RdpAccountant,
)
from secure_fedrec.privacy.ddg_accounting import (
    DistributedDiscreteGaussianAccountant,
    conditional_rounding_l2_bound,
    ddg_rdp,
    ddg_tau,
    poisson_subsampled_rdp_upper_bound,
)

DELTA = 1e-5


def test_tau_matches_a_direct_sum():
    sigma, n = 0.6, 7
    direct = 10 * sum(math.exp(-2 * math.pi**2 * sigma**2 * k / (k + 1)) for k in range(1, n))
    assert ddg_tau(sigma, n) == pytest.approx(direct, rel=1e-12)
    assert ddg_tau(sigma, 1) == 0.0
    assert ddg_tau(3.0, 1000) < 1e-30  # negligible at practical integer-domain scales


def test_unsampled_ddg_with_negligible_tau_equals_the_gaussian():
    # n shares of scale sigma and sensitivity D behave like a Gaussian with z = sqrt(n) sigma / D.
    sigma, n, sensitivity = 50.0, 20, 100.0
    z = math.sqrt(n) * sigma / sensitivity
    ddg = DistributedDiscreteGaussianAccountant(l2_sensitivity=sensitivity, num_shares=n, dim=10_000)
    ddg.step(noise_multiplier=z, sample_rate=1.0, steps=25)
    assert ddg.share_sigma(z) == pytest.approx(sigma, rel=1e-15)
    gaussian = RdpAccountant(orders=ddg.orders)
    gaussian.step(noise_multiplier=z, sample_rate=1.0, steps=25)
    # its RDP is the Gaussian's; every user in every round is a shift pair, so the accountant takes
    # the exact profile of the dominating Gaussian (ddg_dominance), the PLD of the same Gaussian
    assert ddg.rdp() == pytest.approx(gaussian.rdp(), rel=1e-9)
    exact = PldAccountant()
    exact.step(noise_multiplier=z, sample_rate=1.0, steps=25)
    assert ddg.get_epsilon(DELTA) == pytest.approx(exact.get_epsilon(DELTA), rel=0.01)
    assert ddg.get_epsilon(DELTA) < 0.95 * gaussian.get_epsilon(DELTA)


def test_tau_term_penalizes_small_scales():
    common = {"l2_sensitivity": 3.0, "num_shares": 50, "dim": 100_000}
    tiny = ddg_rdp([2, 8], sigma=0.5, **common)
    large = ddg_rdp([2, 8], sigma=5.0 / math.sqrt(50) * 10, **common)
    gaussian_like = np.array([2, 8]) / 2 * (3.0 / (math.sqrt(50) * 0.5)) ** 2
    assert np.all(tiny > gaussian_like)  # the sum of small discrete Gaussians is worse than a Gaussian
    assert np.all(large < tiny)


def test_zhu_wang_bound_is_exact_at_q_one_and_dominates_the_tight_gaussian():
    orders = list(range(2, 41))
    z = 4.0
    base = np.array([alpha / (2 * z * z) for alpha in range(41)])
    assert np.allclose(poisson_subsampled_rdp_upper_bound(orders, 1.0, base), base[2:])
    for q in (0.001, 0.01, 0.1, 0.5):
        general = poisson_subsampled_rdp_upper_bound(orders, q, base)
        tight = rdp_privacy_accountant._compute_rdp_poisson_subsampled_gaussian(q, z, np.array(orders, float))
        assert np.all(general >= tight * (1 - 1e-6) - 1e-15)
        assert np.all(general <= base[2:] + 1e-12) or q > 0.3  # amplification helps for small q
        assert general[0] == pytest.approx(tight[0], rel=1e-6)  # the alpha=2 terms coincide


def test_subsampling_and_more_survivors_help():
    def eps(q: float, shares: int) -> float:  # every share of scale 30: more shares, more noise
        accountant = DistributedDiscreteGaussianAccountant(l2_sensitivity=100.0, num_shares=shares, dim=1000)
        accountant.step(noise_multiplier=math.sqrt(shares) * 30.0 / 100.0, sample_rate=q, steps=100)
        return accountant.get_epsilon(DELTA)

    assert eps(0.01, 20) < eps(0.1, 20) < eps(1.0, 20)
    assert eps(0.1, 40) < eps(0.1, 20)


def test_conditional_rounding_bound():
    c, gamma, d = 1.0, 0.01, 10_000
    unconditional = conditional_rounding_l2_bound(c, gamma, d, beta=0.0)
    assert unconditional == pytest.approx(c / gamma + math.sqrt(d))
    conditional = conditional_rounding_l2_bound(c, gamma, d, beta=math.exp(-0.5))
    expected = math.sqrt((c / gamma) ** 2 + d / 4 + math.sqrt(2 * 0.5) * (c / gamma + math.sqrt(d) / 2))
    assert conditional == pytest.approx(min(unconditional, expected))
    assert conditional < unconditional
    # Empirically: randomized rounding of norm-c vectors stays within the unconditional bound.
    generator = np.random.default_rng(3)
    x = generator.normal(size=(200, 500))
    x *= (c / gamma) / np.linalg.norm(x, axis=1, keepdims=True)
    floor = np.floor(x)
    rounded = floor + (generator.random(x.shape) < (x - floor))
    assert np.linalg.norm(rounded, axis=1).max() <= conditional_rounding_l2_bound(c, gamma, 500, beta=0.0)


def test_state_dict_and_epsilon_after():
    accountant = DistributedDiscreteGaussianAccountant(l2_sensitivity=50.0, num_shares=10, dim=100)
    z = math.sqrt(10) * 20.0 / 50.0
    accountant.step(noise_multiplier=z, sample_rate=0.1, steps=5)
    predicted = accountant.epsilon_after(noise_multiplier=z, sample_rate=0.1, delta=DELTA)
    assert accountant.total_steps == len(accountant) == 5  # nothing recorded by the prediction
    restored = DistributedDiscreteGaussianAccountant(l2_sensitivity=50.0, num_shares=10, dim=100)
    restored.load_state_dict(json.loads(json.dumps(accountant.state_dict())))
    assert restored.get_epsilon(DELTA) == accountant.get_epsilon(DELTA)
    restored.step(noise_multiplier=z, sample_rate=0.1)
    assert restored.get_epsilon(DELTA) == pytest.approx(predicted)
    bad = accountant.state_dict()
    bad["history"][0][0] = -1.0  # a negative noise multiplier
    with pytest.raises(AccountantStateError):
        restored.load_state_dict(bad)
    bad = accountant.state_dict()
    bad["mechanism"] = "rdp"
    with pytest.raises(AccountantStateError):
        restored.load_state_dict(bad)
    other_geometry = DistributedDiscreteGaussianAccountant(l2_sensitivity=50.0, num_shares=9, dim=100)
    with pytest.raises(AccountantStateError):  # another guaranteed number of shares
        other_geometry.load_state_dict(accountant.state_dict())
    with pytest.raises(ValueError):
        accountant.step(noise_multiplier=0.0, sample_rate=0.1)


def test_one_step_signature_for_every_accountant():
    """The Gaussian and the DDG accountants are stepped, predicted and guarded alike."""
    from secure_fedrec.privacy.accounting import Accountant, PldAccountant
    from secure_fedrec.privacy.budget import PrivacyBudget

    budget = PrivacyBudget(target_epsilon=2.0, delta=DELTA)
    for accountant in (PldAccountant(), RdpAccountant(),
                       DistributedDiscreteGaussianAccountant(l2_sensitivity=100.0, num_shares=20, dim=1000)):
        assert isinstance(accountant, Accountant)
        rounds = 0
        while budget.can_afford(accountant, noise_multiplier=1.2, sample_rate=0.05, steps=10):
            accountant.step(noise_multiplier=1.2, sample_rate=0.05, steps=10)
            rounds += 1
        assert rounds > 0 and len(accountant) == 10 * rounds
        assert accountant.get_epsilon(DELTA) <= 2.0


def test_revealed_participation_rdp_is_the_exact_divergence_of_the_revealed_mixture():
    """Told whether the user took part (coin q, the same in both worlds), the observer sees nothing of
    its data in a round it skipped and a Gaussian shift in one it took part in; the Rényi divergence of
    that pair, integrated numerically, is the closed form."""
    from scipy import integrate, stats

    from secure_fedrec.privacy.ddg_accounting import participation_revealed_rdp

    mu, q = 1.3, 0.2
    for alpha in (1.5, 2.0, 5.0):
        shifted = integrate.quad(lambda y, a=alpha: math.exp(a * stats.norm.logpdf(y, mu)
                                                             + (1 - a) * stats.norm.logpdf(y)), -30, 30)[0]
        exact = math.log((1 - q) * 1.0 + q * shifted) / (alpha - 1)
        base = alpha * mu**2 / 2  # the unsampled Gaussian's RDP
        assert participation_revealed_rdp([alpha], q, [base])[0] == pytest.approx(exact, rel=1e-9)
    orders, base = np.array([2.0, 8.0, 256.0]), np.array([0.5, 2.0, 900.0])
    assert np.array_equal(participation_revealed_rdp(orders, 0.0, base), np.zeros(3))
    assert np.array_equal(participation_revealed_rdp(orders, 1.0, base), base)
    assert np.all(np.isfinite(participation_revealed_rdp(orders, 0.1, base)))  # no overflow at order 256
    with pytest.raises(ValueError):
        participation_revealed_rdp([1.0], 0.1, [0.5])


def test_revealed_participation_epsilon_lies_between_the_amplified_and_the_everyone_every_round_one():
    sensitivity, shares, z, q, rounds = 1000.0, 50, 0.8, 0.15, 10
    accountant = DistributedDiscreteGaussianAccountant(l2_sensitivity=sensitivity, num_shares=shares, dim=80_000)
    accountant.step(noise_multiplier=z, sample_rate=q, steps=rounds)
    every_round = DistributedDiscreteGaussianAccountant(l2_sensitivity=sensitivity, num_shares=shares, dim=80_000)
    every_round.step(noise_multiplier=z, sample_rate=1.0, steps=rounds)
    revealed = accountant.epsilon_participation_revealed(DELTA)
    assert accountant.get_epsilon(DELTA) < revealed < every_round.get_epsilon(DELTA)
    assert every_round.epsilon_participation_revealed(DELTA) == pytest.approx(every_round.get_epsilon(DELTA))
