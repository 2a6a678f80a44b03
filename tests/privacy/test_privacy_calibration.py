"""Noise calibration meets the target ε from the safe side, and the default δ."""

from __future__ import annotations

import pytest

from secure_fedrec.privacy.accounting import INTEGER_RDP_ORDERS, create_accountant
from secure_fedrec.privacy.calibration import (
    CalibrationError,
    calibrate_ddg_total_sigma,
    calibrate_noise_multiplier,
    calibrate_record_noise_multiplier,
    default_delta,
)
from secure_fedrec.privacy.ddg_accounting import DistributedDiscreteGaussianAccountant
from secure_fedrec.privacy.record_sampling import client_sample_rate, planned_steps

DELTA = 1e-5


@pytest.mark.parametrize(
    "mechanism,target,q,steps",
    [("pld", 3.0, 0.01, 1000), ("rdp", 3.0, 0.01, 1000), ("pld", 1.0, 0.05, 200), ("rdp", 8.0, 0.2, 50)],
)
def test_calibrated_noise_multiplier_hits_the_target_from_below(mechanism, target, q, steps):
    z = calibrate_noise_multiplier(target, DELTA, sample_rate=q, steps=steps, accountant=mechanism, rtol=1e-3)
    accountant = create_accountant(mechanism)
    accountant.step(noise_multiplier=z, sample_rate=q, steps=steps)
    achieved = accountant.get_epsilon(DELTA)
    assert achieved <= target
    assert achieved >= 0.99 * target  # not needlessly noisy
    slightly_less = create_accountant(mechanism)
    slightly_less.step(noise_multiplier=z * 0.995, sample_rate=q, steps=steps)
    assert slightly_less.get_epsilon(DELTA) > target


def test_calibration_rejects_bad_inputs():
    with pytest.raises(ValueError):
        calibrate_noise_multiplier(-1.0, DELTA, sample_rate=0.1, steps=10)
    with pytest.raises(ValueError):
        calibrate_noise_multiplier(1.0, DELTA, sample_rate=0.0, steps=10)
    with pytest.raises(ValueError):
        calibrate_noise_multiplier(1.0, DELTA, sample_rate=0.1, steps=10, accountant="nope")
    with pytest.raises(CalibrationError):
        calibrate_noise_multiplier(1e-9, DELTA, sample_rate=1.0, steps=10**6, accountant="rdp")


def test_ddg_calibration_hits_the_target_at_min_survivors():
    kwargs = {"l2_sensitivity": 120.0, "min_survivors": 40, "dim": 5000, "sample_rate": 0.02, "steps": 300}
    total = calibrate_ddg_total_sigma(2.0, DELTA, **kwargs)
    accountant = DistributedDiscreteGaussianAccountant(l2_sensitivity=120.0, num_shares=40, dim=5000)
    accountant.step(noise_multiplier=total / 120.0, sample_rate=0.02, steps=300)
    assert 0.99 * 2.0 <= accountant.get_epsilon(DELTA) <= 2.0


def test_default_delta():
    assert default_delta(1000) == pytest.approx(1 / 10_000)
    assert default_delta(610) < 1 / 610
    with pytest.raises(ValueError):
        default_delta(1)


@pytest.mark.parametrize("n", [2, 100, 671, 80_000, 10**6, 10**10, 10**12, 10**15])
def test_default_delta_exposes_at_most_a_tenth_of_a_unit(n):
    """Issue 19 item 11: N·δ ≤ 0.1 (it was N^-0.1 = 0.52 at 671 users) and δ ≤ the old N^-1.1."""
    delta = default_delta(n)
    assert n * delta <= 0.1 * (1 + 1e-12)
    assert delta <= n**-1.1
    assert default_delta(671) * 671 == pytest.approx(0.1)


def _record_client_epsilon(z: float, n: int, batch: int, epochs: int, rounds: int) -> float:
    accountant = create_accountant("rdp", orders=list(INTEGER_RDP_ORDERS))  # as ClientAccountants
    accountant.step(noise_multiplier=z, sample_rate=client_sample_rate(n, batch),
                    steps=rounds * planned_steps(n, batch, epochs))
    return accountant.get_epsilon(DELTA)


def test_record_calibration_covers_every_client():
    examples, batch, epochs, rounds, target = [19, 95, 130, 500, 3000, 93 * 128], 128, 2, 20, 8.0
    z = calibrate_record_noise_multiplier(target, DELTA, client_examples=examples, batch_size=batch,
                                          epochs=epochs, rounds=rounds)
    eps = [_record_client_epsilon(z, n, batch, epochs, rounds) for n in examples]
    assert max(eps) <= target * (1 + 1e-9)
    assert max(eps) >= 0.99 * target  # the worst client spends (almost) all of it
    # the loader's rate 1/⌈n/B⌉, not B/n: n = 130 at B = 128 runs 2 batches at q = 1/2
    assert client_sample_rate(130, 128) == 0.5 and planned_steps(130, 128, 1) == 2
    assert planned_steps(93 * 128, 128, 1) == 92  # Opacus' int(1/q) rounding, charged as run


def test_record_calibration_rejects_empty_population():
    with pytest.raises(ValueError):
        calibrate_record_noise_multiplier(1.0, DELTA, client_examples=[], batch_size=8, epochs=1, rounds=1)
