"""Canary clients: seeded directions, server-view scores, held-out Clopper–Pearson."""

import numpy as np
import pytest

from attacks import (
    CanaryDirections,
    audit_clopper_pearson_heldout,
    canary_client_scores,
    robust_scale,
    roc_auc,
    round_scales,
    simulate_canary_projections,
)


def test_directions_are_seeded_unit_vectors_and_project_in_chunks():
    d = CanaryDirections(7, 33, seed=4)
    again = CanaryDirections(7, 33, seed=4)
    rows = d.rows(0, 7)
    assert np.allclose(np.linalg.norm(rows, axis=1), 1.0)
    assert np.array_equal(rows, again.rows(0, 7))
    assert not np.array_equal(rows, CanaryDirections(7, 33, seed=5).rows(0, 7))
    a = np.random.default_rng(0).standard_normal(33)
    assert np.allclose(d.project(a), rows @ a)
    with pytest.raises(ValueError):
        d.project(np.zeros(32))


def test_llr_separates_sampled_canaries_better_than_the_sum():
    included, x = simulate_canary_projections(4000, 30, sample_rate=0.05, mu=1.5, random_state=0)
    s = canary_client_scores(x, shift=1.5, sample_rate=0.05)
    assert roc_auc(included, s["llr"]) > roc_auc(included, s["sum"]) > 0.6


def test_scores_use_the_noise_scale_of_each_round():
    _, x = simulate_canary_projections(2000, 4, sample_rate=0.5, mu=2.0, random_state=1)
    scaled = x * np.array([[1.0], [10.0], [0.1], [3.0]])
    shift = 2.0 * np.array([1.0, 10.0, 0.1, 3.0])
    a = canary_client_scores(x, shift=2.0, sample_rate=0.5)["llr"]
    b = canary_client_scores(scaled, shift=shift, sample_rate=0.5)["llr"]
    assert np.allclose(a, b, rtol=1e-2, atol=1e-2)


def test_a_run_without_noise_gives_finite_scores():
    x = np.zeros((3, 10))
    x[:, 0] = 1.0
    s = canary_client_scores(x + 1e-3 * np.arange(10), shift=1.0, sample_rate=0.1)
    assert np.all(np.isfinite(s["llr"])) and int(np.argmax(s["llr"])) == 0


def test_an_observer_who_knows_participation_scores_only_the_rounds_taken_part():
    rng = np.random.default_rng(3)
    rounds, m, mu = 10, 4000, 1.0
    took = np.zeros((rounds, m), dtype=bool)
    took[rng.integers(rounds, size=m), np.arange(m)] = True  # one round each, member or not
    included = rng.random(m) < 0.5
    x = rng.standard_normal((rounds, m)) + mu * (took & included[None, :])
    known = canary_client_scores(x, shift=mu, sample_rate=0.1, took_part=took)
    blind = canary_client_scores(x, shift=mu, sample_rate=0.1)
    # one round's Gaussian shift: AUC = Φ(μ/√2) ≈ 0.76; blind to the round, the other nine drown it
    assert roc_auc(included, known["llr"]) == pytest.approx(0.76, abs=0.03)
    assert roc_auc(included, known["llr"]) > roc_auc(included, blind["llr"]) + 0.1
    sigma = round_scales(x)[:, None]  # rounds not taken part in carry no evidence
    expected = np.where(took, (mu / sigma) * (x / sigma) - (mu / sigma) ** 2 / 2, 0.0).sum(axis=0)
    assert np.allclose(known["llr"], expected)
    with pytest.raises(ValueError, match="took_part"):
        canary_client_scores(x, shift=mu, sample_rate=0.1, took_part=took[:, :-1])
    with pytest.raises(ValueError, match="took_part"):
        canary_client_scores(x, shift=mu, sample_rate=0.1, took_part=took.astype(int))


def test_bad_projections_are_refused():
    with pytest.raises(ValueError):
        canary_client_scores(np.full((2, 5), np.nan), shift=1.0, sample_rate=0.1)
    with pytest.raises(ValueError):
        canary_client_scores(np.zeros((2, 5)), shift=1.0, sample_rate=0.0)


def test_robust_scale_ignores_a_few_outliers():
    v = np.random.default_rng(2).standard_normal(5000)
    v[:50] += 100.0
    assert robust_scale(v) == pytest.approx(1.0, abs=0.05)


def test_heldout_clopper_pearson_judges_on_canaries_the_threshold_never_saw():
    included, x = simulate_canary_projections(1000, 1, sample_rate=1.0, mu=6.0, random_state=0)
    result = audit_clopper_pearson_heldout(x[0], included, random_state=0)
    assert result.method == "clopper_pearson_heldout"
    assert result.details["judged_canaries"] == 500 == result.details["threshold_canaries"]
    assert result.details["positives"] + result.details["negatives"] == 500
    assert result.epsilon_lower_bound > 2.0
    noise = np.random.default_rng(1).standard_normal(1000)
    assert audit_clopper_pearson_heldout(noise, included, random_state=0).epsilon_lower_bound < 0.5
