import itertools
import math
import warnings

import numpy as np
import pytest
from scipy import stats

from attacks.audit import (
    AuditResult,
    PrivacyViolationWarning,
    audit_clopper_pearson,
    audit_delta,
    audit_one_run,
    clopper_pearson_interval,
    count_correct_guesses,
    draw_canary_inclusion,
    epsilon_lower_bound_clopper_pearson,
    guesses_from_scores,
    make_canary_ratings,
    make_canary_users,
    one_run_epsilon_lower_bound,
    one_run_p_value,
)


def _logit(p):
    return math.log(p / (1 - p))


@pytest.mark.parametrize("k,n", [(0, 10), (3, 10), (10, 10), (17, 250), (0, 1000)])
def test_clopper_pearson_matches_scipy_exact_interval(k, n):
    ref = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    lo, hi = clopper_pearson_interval(k, n, 0.95)
    assert lo == pytest.approx(ref.low, abs=1e-12)
    assert hi == pytest.approx(ref.high, abs=1e-12)


@pytest.mark.parametrize("delta", [0.0, 1e-5])
def test_clopper_pearson_epsilon_perfect_attack_closed_form(delta):
    # zero errors out of n: the two-sided upper bound solves (1 - u)^n = alpha / 2
    n = 1000
    upper = 1 - 0.025 ** (1 / n)
    expected = math.log((1 - delta - upper) / upper)
    assert epsilon_lower_bound_clopper_pearson(0, n, 0, n, delta=delta) == pytest.approx(
        expected, rel=1e-9
    )


def test_clopper_pearson_epsilon_uses_the_worse_error_and_is_zero_for_chance():
    # FPR small, FNR large: the bound comes from log((1 - FNR_hi) / FPR_hi)
    fpr_hi = clopper_pearson_interval(5, 1000)[1]
    fnr_hi = clopper_pearson_interval(500, 1000)[1]
    expected = max(math.log((1 - fnr_hi) / fpr_hi), math.log((1 - fpr_hi) / fnr_hi))
    assert epsilon_lower_bound_clopper_pearson(5, 1000, 500, 1000) == pytest.approx(expected)
    assert epsilon_lower_bound_clopper_pearson(500, 1000, 500, 1000) == 0.0


@pytest.mark.parametrize("m,r", [(1000, 1000), (1000, 100), (10_000, 500)])
def test_one_run_perfect_guessing_delta_zero_closed_form(m, r):
    # all r guesses right: p-value q^r = 0.05 -> eps = logit(0.05^(1/r))
    expected = _logit(0.05 ** (1 / r))
    assert one_run_epsilon_lower_bound(m, r, r, confidence=0.95) == pytest.approx(
        expected, abs=1e-8
    )


def test_one_run_bound_is_where_binomial_tail_hits_alpha():
    eps = one_run_epsilon_lower_bound(1000, 400, 330)
    q = 1 / (1 + math.exp(-eps))
    assert stats.binom.sf(329, 400, q) == pytest.approx(0.05, rel=1e-6)


def test_one_run_delta_correction_matches_direct_sum():
    m, r, v, eps, delta = 1000, 200, 170, 1.0, 1e-5
    q = 1 / (1 + math.exp(-eps))
    tail = stats.binom.sf(v - 1, r, q)
    correction = max(
        sum(stats.binom.pmf(v - j, r, q) for j in range(1, i + 1)) / i for i in range(1, v + 1)
    )
    assert one_run_p_value(m, r, v, eps, delta) == pytest.approx(
        tail + 2 * m * delta * correction, rel=1e-9
    )


def test_one_run_delta_loosens_the_bound_monotonically():
    bounds = [
        one_run_epsilon_lower_bound(1000, 1000, 1000, delta=d) for d in (0.0, 1e-6, 1e-5, 1e-4)
    ]
    assert all(a > b for a, b in itertools.pairwise(bounds))
    assert (
        bounds[2] > 5.5
    )  # perfect guessing on 1000 canaries still certifies a large epsilon at delta=1e-5


def test_one_run_random_guessing_gives_about_zero():
    for seed in range(5):
        rng = np.random.default_rng(seed)
        included = draw_canary_inclusion(1000, rng)
        scores = rng.normal(size=1000)
        result = audit_one_run(
            scores, included, num_positive=[50, 100, 200], num_negative=[0, 100], delta=1e-5
        )
        assert result.epsilon_lower_bound < 0.3
        assert not result.violation


def test_one_run_perfect_attack_and_violation_flag():
    rng = np.random.default_rng(0)
    included = draw_canary_inclusion(1000, rng)
    scores = included + 0.1 * rng.normal(size=1000)
    with pytest.warns(PrivacyViolationWarning, match="PRIVACY VIOLATION"):
        result = audit_one_run(scores, included, num_positive=100, epsilon_claimed=1.0)
    assert result.violation
    assert result.details["num_correct"] == result.details["num_guesses"] == 100
    assert result.epsilon_lower_bound == pytest.approx(_logit(0.05 ** (1 / 100)), abs=1e-8)
    assert "PRIVACY VIOLATION" in result.summary()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ok = audit_one_run(scores, included, num_positive=100, epsilon_claimed=8.0)
    assert not ok.violation


def test_one_run_bonferroni_over_the_guess_grid():
    rng = np.random.default_rng(0)
    included = draw_canary_inclusion(1000, rng)
    scores = included + 0.1 * rng.normal(size=1000)
    single = audit_one_run(scores, included, num_positive=100)
    grid = audit_one_run(scores, included, num_positive=[10, 100], num_negative=[0])
    assert grid.details["num_tests"] == 2
    assert grid.epsilon_lower_bound == pytest.approx(_logit(0.025 ** (1 / 100)), abs=1e-8)
    assert grid.epsilon_lower_bound < single.epsilon_lower_bound


def _randomized_response(included, epsilon, rng):
    keep = rng.random(included.size) < 1 / (1 + math.exp(-epsilon))
    return np.where(keep, included, ~included)


def test_audit_of_an_eps_dp_mechanism_stays_below_eps_and_catches_understatement():
    rng = np.random.default_rng(11)
    included = draw_canary_inclusion(5000, rng)
    released = _randomized_response(included, 1.0, rng).astype(float)
    scores = released + 1e-3 * rng.normal(size=released.size)  # break ties between equal outputs
    honest = audit_one_run(
        scores, included, num_positive=2500, num_negative=2500, epsilon_claimed=1.0
    )
    assert 0.7 < honest.epsilon_lower_bound <= 1.0 and not honest.violation
    with pytest.warns(PrivacyViolationWarning):
        understated = audit_one_run(
            scores, included, num_positive=2500, num_negative=2500, epsilon_claimed=0.5
        )
    assert understated.violation
    with pytest.warns(PrivacyViolationWarning):
        cp = audit_clopper_pearson(included, released.astype(bool), epsilon_claimed=0.5)
    assert 0.5 < cp.epsilon_lower_bound <= 1.0


def test_guesses_and_counting():
    guesses = guesses_from_scores(np.array([0.9, 0.1, 0.5, 0.8, 0.2]), 2, 1)
    assert guesses.tolist() == [1, -1, 0, 1, 0]
    assert count_correct_guesses(guesses, np.array([1, 0, 1, 0, 0], bool)) == (3, 2)
    with pytest.raises(ValueError):
        guesses_from_scores(np.zeros(3), 2, 2)
    with pytest.raises(ValueError):
        one_run_p_value(10, 5, 6, 1.0)


def test_canary_helpers_are_seedable_and_avoid_existing_pairs():
    a, b = (
        draw_canary_inclusion(10_000, random_state=5),
        draw_canary_inclusion(10_000, random_state=5),
    )
    assert np.array_equal(a, b) and 0.47 < a.mean() < 0.53
    existing = (np.array([0, 0, 1]), np.array([0, 1, 0]))
    canaries = make_canary_ratings(9, 3, 4, existing=existing, rating=[1.0, 5.0], random_state=1)
    pairs = set(zip(canaries.users.tolist(), canaries.items.tolist()))
    assert len(pairs) == 9 and not pairs & {(0, 0), (0, 1), (1, 0)}
    assert set(canaries.ratings.tolist()) <= {1.0, 5.0}
    users, items, ratings = canaries.inserted()
    assert users.size == canaries.included.sum() == items.size == ratings.size
    with pytest.raises(ValueError):
        make_canary_ratings(10, 3, 4, existing=existing)


def test_audit_result_validation():
    with pytest.raises(ValueError):
        AuditResult("x", -1.0, 0.95, 0.0, None)
    assert not AuditResult("x", 3.0, 0.95, 0.0, None).violation


def test_canary_users():
    canaries = make_canary_users(50, 30, items_per_user=5, rating=[1.0, 5.0], random_state=2)
    assert len(canaries.items) == 50 and canaries.included.shape == (50,)
    assert all(np.unique(i).size == 5 and i.max() < 30 for i in canaries.items)
    again = make_canary_users(50, 30, items_per_user=5, rating=[1.0, 5.0], random_state=2)
    assert all(np.array_equal(a, b) for a, b in zip(canaries.items, again.items))
    with pytest.raises(ValueError):
        make_canary_users(3, 4, items_per_user=5)


def test_one_run_perfect_guessing_delta_1e5_solves_the_paper_p_value():
    m = r = v = 1000
    delta = 1e-5
    eps = one_run_epsilon_lower_bound(m, r, v, delta=delta)

    def paper_p_value(e):  # written out term by term, independently of the vectorised code
        q = 1 / (1 + math.exp(-e))
        tail = q**r
        best, running = 0.0, 0.0
        for i in range(1, v + 1):
            running += stats.binom.pmf(v - i, r, q)
            best = max(best, running / i)
        return tail + 2 * m * delta * best

    assert paper_p_value(eps) == pytest.approx(0.05, rel=1e-6)
    assert 5.7 < eps < one_run_epsilon_lower_bound(m, r, v)


@pytest.mark.parametrize("m", [100, 1000, 5000])
def test_audit_delta_keeps_the_delta_term_below_a_tenth_of_the_test_level(m):
    delta = audit_delta(m, 0.95)
    assert delta <= 1 / (10 * m)
    # For any outcome, the δ term of the p-value is at most 0.1 · α.
    for r, v in [(m, m), (m // 2, m // 2), (m // 4, m // 5), (m // 10, m // 10 - 1)]:
        for eps in (0.0, 0.5, 2.0):
            extra = one_run_p_value(m, r, v, eps, delta) - one_run_p_value(m, r, v, eps, 0.0)
            assert 0.0 <= extra <= 0.1 * 0.05 + 1e-12
    # A perfect attack then certifies nearly what it would under pure DP ...
    pure = one_run_epsilon_lower_bound(m, m // 4, m // 4, delta=0.0)
    assert one_run_epsilon_lower_bound(m, m // 4, m // 4, delta=delta) > 0.95 * pure
    # ... whereas the accountant's default δ = 1/N^1.1 (N = 610 users) can leave it blind.
    if m >= 1000:
        assert one_run_epsilon_lower_bound(m, m // 4, m // 4, delta=610 ** -1.1) < 0.5 * pure


def test_audit_delta_validates():
    with pytest.raises(ValueError):
        audit_delta(0)
    with pytest.raises(ValueError):
        audit_delta(10, confidence=1.0)
