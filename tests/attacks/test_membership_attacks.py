"""Rating-level membership attacks on synthetic data with planted membership."""

import numpy as np
import pytest

from attacks.membership import (
    RMIA,
    CalibratedLossAttack,
    LiRA,
    LossThresholdAttack,
    ShadowStatistics,
    train_shadow_models,
)
from attacks.metrics import evaluate_membership, roc_auc

N_SAMPLES, N_FEATURES = 300, 120


def _population(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N_SAMPLES, N_FEATURES))
    y = x @ rng.normal(size=N_FEATURES) / np.sqrt(N_FEATURES) + rng.normal(size=N_SAMPLES)
    return x, y


X, Y = _population()


def overfitting_ridge(in_training, seed):
    """An over-parameterised ridge regression: members get visibly lower loss.
    Returns the negative squared error on every sample (higher = fits better)."""
    xi, yi = X[in_training], Y[in_training]
    w = np.linalg.solve(xi.T @ xi + 1.0 * np.eye(N_FEATURES), xi.T @ yi)
    return -((X @ w - Y) ** 2)


def data_independent_model(in_training, seed):
    """Ignores its training set: the null case where membership cannot leak."""
    w = np.random.default_rng(seed).normal(size=N_FEATURES) / np.sqrt(N_FEATURES)
    return -((X @ w - Y) ** 2)


def _target(train_and_score, seed=123):
    rng = np.random.default_rng(seed)
    membership = rng.random(N_SAMPLES) < 0.5
    return membership, train_and_score(membership, int(rng.integers(2**31)))


def test_loss_threshold_finds_planted_membership():
    membership, stats = _target(overfitting_ridge)
    losses = -stats
    attack = LossThresholdAttack().fit(losses[membership])
    assert attack.threshold_ == pytest.approx(losses[membership].mean())
    assert roc_auc(membership, attack.score(losses)) > 0.8
    predicted = attack.predict(losses)
    assert predicted[membership].mean() > predicted[~membership].mean() + 0.3
    best = LossThresholdAttack("max_advantage").fit(losses, membership)
    tpr, fpr = best.predict(losses)[membership].mean(), best.predict(losses)[~membership].mean()
    assert tpr - fpr >= predicted[membership].mean() - predicted[~membership].mean() - 1e-12


def test_loss_threshold_validation():
    with pytest.raises(ValueError):
        LossThresholdAttack("median").fit(np.ones(3))
    with pytest.raises(ValueError):
        LossThresholdAttack("max_advantage").fit(np.ones(3))
    assert LossThresholdAttack(0.5).fit(np.ones(3)).predict(np.array([0.4, 0.6])).tolist() == [
        True,
        False,
    ]


@pytest.mark.parametrize("online", [True, False])
def test_lira_finds_planted_membership(online):
    membership, stats = _target(overfitting_ridge)
    attack = LiRA(overfitting_ridge, n_shadow=16, online=online, random_state=0).fit(N_SAMPLES)
    assert attack.shadow_.statistics.shape == (16, N_SAMPLES)
    metrics = evaluate_membership(membership, attack.score(stats), n_bootstrap=200, random_state=0)
    assert metrics.auc.low > 0.75
    threshold_auc = roc_auc(membership, stats)
    # Samples here are equally hard, so calibration has little to add; it must not cost much.
    assert metrics.auc.estimate > threshold_auc - 0.05


DIFFICULTY = np.random.default_rng(0).normal(0.0, 3.0, size=2000)


def gaussian_per_example(in_training, seed):
    """Planted per-example Gaussians: each sample has its own OUT mean (spread 3)
    and training on it adds exactly 1 (noise 0.5). A global threshold is nearly
    blind here; the optimal per-example test has AUC Phi(1 / (0.5 * sqrt 2)) = 0.92."""
    return DIFFICULTY + in_training + 0.5 * np.random.default_rng(seed).normal(size=DIFFICULTY.size)


@pytest.mark.parametrize("online", [True, False])
def test_lira_per_example_calibration_beats_global_threshold(online):
    membership = np.random.default_rng(5).random(DIFFICULTY.size) < 0.5
    stats = gaussian_per_example(membership, 99)
    attack = LiRA(
        gaussian_per_example, n_shadow=16, online=online, fixed_variance=True, random_state=0
    ).fit(DIFFICULTY.size)
    lira = evaluate_membership(membership, attack.score(stats), n_bootstrap=200, random_state=0)
    threshold = evaluate_membership(membership, stats, n_bootstrap=200, random_state=0)
    assert threshold.auc.high < 0.65
    assert lira.auc.low > 0.85
    assert lira.tpr_at_fpr[0.01].low > threshold.tpr_at_fpr[0.01].high
    assert lira.tpr_at_fpr[0.01].estimate > 0.2


@pytest.mark.parametrize("online", [True, False])
def test_lira_null_model_is_at_chance(online):
    membership, stats = _target(data_independent_model)
    attack = LiRA(
        data_independent_model, n_shadow=8, online=online, fixed_variance=True, random_state=1
    ).fit(N_SAMPLES)
    # 99 % intervals: a null test that fails 1 time in 20 by chance is too flaky
    metrics = evaluate_membership(
        membership, attack.score(stats), n_bootstrap=1000, confidence=0.99, random_state=0
    )
    assert 0.5 in metrics.auc


def test_lira_is_reproducible_and_accepts_precomputed_shadows():
    a = LiRA(overfitting_ridge, n_shadow=4, random_state=7).fit(N_SAMPLES)
    b = LiRA(overfitting_ridge, n_shadow=4, random_state=7).fit(N_SAMPLES)
    np.testing.assert_array_equal(a.mean_in_, b.mean_in_)
    shadow = train_shadow_models(overfitting_ridge, N_SAMPLES, 4, random_state=7)
    c = LiRA(online=False).fit_shadow(shadow)
    np.testing.assert_allclose(c.mean_out_, a.mean_out_)
    subset = np.arange(10)
    np.testing.assert_allclose(
        c.score(shadow.statistics[0, :10], subset), c.score(shadow.statistics[0])[:10]
    )
    with pytest.raises(ValueError):
        LiRA().fit(N_SAMPLES)
    with pytest.raises(ValueError):
        train_shadow_models(lambda mask, seed: np.zeros(3), N_SAMPLES, 2)


def test_lira_fills_samples_without_in_shadows():
    stats = np.array([[1.0, 0.0], [2.0, 0.1], [0.0, -0.1]])
    member = np.array([[True, False], [True, False], [False, False]])
    attack = LiRA(online=True).fit_shadow(ShadowStatistics(stats, member))
    assert attack.mean_in_[1] == pytest.approx(attack.mean_out_[1] + 1.5)  # out mean + average gap
    assert np.all(np.isfinite(attack.score(np.array([1.0, 1.0]))))


def test_rmia_finds_planted_membership_and_null_is_chance():
    def likelihood(model):
        return lambda mask, seed: np.exp(model(mask, seed))  # exp(-squared error) in (0, 1]

    membership, stats = _target(likelihood(overfitting_ridge))
    attack = RMIA(likelihood(overfitting_ridge), n_shadow=4, random_state=0).fit(N_SAMPLES)
    assert roc_auc(membership, attack.score(stats)) > 0.75
    online = RMIA(likelihood(overfitting_ridge), n_shadow=4, online=True, random_state=0).fit(
        N_SAMPLES
    )
    assert roc_auc(membership, online.score(stats)) > 0.75

    membership, stats = _target(likelihood(data_independent_model))
    null = RMIA(likelihood(data_independent_model), n_shadow=4, random_state=0).fit(N_SAMPLES)
    metrics = evaluate_membership(
        membership, null.score(stats), n_bootstrap=1000, confidence=0.99, random_state=0
    )
    assert 0.5 in metrics.auc
    with pytest.raises(ValueError):
        RMIA(overfitting_ridge, n_shadow=2, random_state=0).fit(N_SAMPLES)  # negative "likelihoods"


def _ratings_with_item_difficulty(seed):
    """Per-rating losses where some items are much harder than others and
    members' losses are 40 % lower than non-members' on the same item."""
    rng = np.random.default_rng(seed)
    n_users, n_items, n = 200, 100, 8000
    users, items = rng.integers(n_users, size=n), rng.integers(n_items, size=n)
    difficulty = rng.lognormal(0.0, 1.5, size=n_items)
    member = rng.random(n) < 0.5
    loss = difficulty[items] * np.where(member, 0.6, 1.0) * rng.gamma(8.0, 1 / 8.0, size=n)
    return users, items, member, loss


def test_calibrated_per_item_threshold_beats_global_threshold():
    users, items, member, loss = _ratings_with_item_difficulty(0)
    # The attacker calibrates on held-out non-member ratings (a different draw).
    ref_users, ref_items, ref_member, ref_loss = _ratings_with_item_difficulty(0)
    rng = np.random.default_rng(1)
    ref_loss = (
        ref_loss * np.where(ref_member, 1 / 0.6, 1.0) * rng.gamma(8.0, 1 / 8.0, ref_loss.size)
    )
    global_auc = roc_auc(member, LossThresholdAttack().fit(loss[member]).score(loss))
    per_item = CalibratedLossAttack().fit(ref_loss, ref_items)
    per_item_auc = roc_auc(member, per_item.score(loss, items))
    both = CalibratedLossAttack().fit(ref_loss, (ref_users, ref_items))
    both_auc = roc_auc(member, both.score(loss, (users, items)))
    assert per_item_auc > global_auc + 0.1
    assert both_auc > global_auc + 0.1
    assert per_item.predict(loss, items).dtype == bool


def test_log_scale_calibration_beats_raw_squared_error_calibration():
    # Squared errors: item difficulty multiplies the error, a few huge errors dominate raw means.
    rng = np.random.default_rng(0)
    n_items, n = 200, 20_000
    difficulty = rng.gamma(1.0, 1.0, n_items)
    items, ref_items = rng.integers(0, n_items, n), rng.integers(0, n_items, n)
    member = rng.random(n) < 0.5

    def squared_errors(item_ids, shrink):
        return (difficulty[item_ids] * rng.standard_normal(item_ids.size)) ** 2 * shrink

    loss = squared_errors(items, np.where(member, 0.5, 1.0))
    reference = squared_errors(ref_items, 1.0)
    log_auc = roc_auc(member, CalibratedLossAttack().fit(reference, ref_items).score(loss, items))
    raw_auc = roc_auc(member, CalibratedLossAttack(log_scale=False).fit(reference, ref_items).score(loss, items))
    assert log_auc > raw_auc + 0.015  # measured: 0.609 against 0.585
    with pytest.raises(ValueError, match="non-negative"):
        CalibratedLossAttack().fit(np.array([-1.0, 1.0]), np.array([0, 1]))


def test_calibrated_attack_handles_unseen_groups_and_validates():
    attack = CalibratedLossAttack(prior_strength=0.0, log_scale=False).fit(np.array([1.0, 3.0]), np.array([0, 1]))
    assert attack.baseline(np.array([0, 1, 7]), 3).tolist() == pytest.approx([1.0, 3.0, 2.0])
    with pytest.raises(ValueError):
        attack.score(np.array([1.0]), np.array([-1]))
    with pytest.raises(ValueError):
        attack.score(np.array([1.0]), (np.array([0]), np.array([0])))


def test_loss_threshold_null_model_is_at_chance():
    membership, stats = _target(data_independent_model)
    scores = LossThresholdAttack().fit(-stats[membership]).score(-stats)
    metrics = evaluate_membership(
        membership, scores, n_bootstrap=1000, confidence=0.99, random_state=0
    )
    assert 0.5 in metrics.auc


def test_check_random_state():
    from attacks import check_random_state

    generator = np.random.default_rng(0)
    assert check_random_state(generator) is generator
    assert check_random_state(3).random() == np.random.default_rng(3).random()
    with pytest.raises(TypeError):
        check_random_state("seed")
