import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from matplotlib.figure import Figure
from scipy import stats

from attacks.metrics import (
    attacker_advantage,
    bootstrap_interval,
    evaluate_membership,
    plot_roc,
    roc_auc,
    roc_curve,
    tpr_at_fpr,
)


def test_roc_curve_hand_computed():
    # scores sorted: 0.9(+) 0.8(-) 0.7(+) 0.7(-) 0.2(-) 0.1(+); the 0.7 tie is one point
    labels = np.array([1, 0, 1, 0, 0, 1])
    scores = np.array([0.9, 0.8, 0.7, 0.7, 0.2, 0.1])
    curve = roc_curve(labels, scores)
    np.testing.assert_allclose(curve.fpr, [0, 0, 1 / 3, 2 / 3, 1, 1])
    np.testing.assert_allclose(curve.tpr, [0, 1 / 3, 1 / 3, 2 / 3, 2 / 3, 1])
    assert curve.thresholds[0] == np.inf
    np.testing.assert_allclose(curve.thresholds[1:], [0.9, 0.8, 0.7, 0.2, 0.1])
    # trapezoids: 1/3*1/3 + 1/3*(1/3+2/3)/2 + 1/3*2/3 = 1/9 + 1/6 + 2/9
    assert curve.auc == pytest.approx(1 / 9 + 1 / 6 + 2 / 9)
    assert attacker_advantage(labels, scores) == pytest.approx(1 / 3)
    assert tpr_at_fpr(labels, scores, 0.0) == pytest.approx(1 / 3)
    assert tpr_at_fpr(labels, scores, 0.5) == pytest.approx(1 / 3)
    assert tpr_at_fpr(labels, scores, 2 / 3) == pytest.approx(2 / 3)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_equals_mann_whitney_with_ties(seed):
    rng = np.random.default_rng(seed)
    labels = rng.random(300) < 0.4
    scores = rng.integers(0, 10, 300) + labels * rng.integers(0, 3, 300)  # many ties
    u = stats.mannwhitneyu(scores[labels], scores[~labels]).statistic
    assert roc_auc(labels, scores) == pytest.approx(u / (labels.sum() * (~labels).sum()))


def test_advantage_is_absolute():
    # An inverted attack has the same advantage (max |TPR - FPR|, as in TF-Privacy).
    assert attacker_advantage([1, 1, 0, 0], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert roc_auc([1, 1, 0, 0], [0.1, 0.2, 0.3, 0.4]) == 0.0


def test_tpr_at_low_fpr_counts_members_before_first_nonmember():
    labels = np.r_[np.ones(50, bool), np.zeros(1000, bool)]
    scores = np.r_[np.linspace(10, 5, 50), np.linspace(0, 6, 1000)]
    # members above 6 are found at zero FPR; members scoring 5..6 compete with the top negatives
    expected_zero = np.mean(np.linspace(10, 5, 50) > 6)
    assert tpr_at_fpr(labels, scores, 0.0) == pytest.approx(expected_zero)
    assert tpr_at_fpr(labels, scores, 0.01) >= tpr_at_fpr(labels, scores, 0.001) >= expected_zero


def test_rejects_bad_input():
    with pytest.raises(ValueError):
        roc_curve([0, 1, 2], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError):
        roc_curve([1, 1], [0.1, 0.2])
    with pytest.raises(ValueError):
        roc_curve([0, 1], [0.1, np.nan])
    with pytest.raises(ValueError):
        roc_curve([0, 1], [0.1])


def test_evaluate_membership_random_scores_contain_chance():
    rng = np.random.default_rng(7)
    labels = rng.random(2000) < 0.5
    scores = rng.normal(size=2000)
    m = evaluate_membership(labels, scores, n_bootstrap=300, random_state=0)
    assert 0.5 in m.auc
    assert m.auc.low < m.auc.estimate < m.auc.high
    assert m.tpr_at_fpr[0.01].estimate < 0.05
    assert set(m.as_dict()) >= {
        "auc",
        "auc_low",
        "auc_high",
        "advantage",
        "tpr@1%",
        "tpr@0.1%",
        "tpr@0%",
    }
    assert "AUC" in m.summary()


def test_evaluate_membership_separable_and_reproducible():
    labels = np.r_[np.ones(100, bool), np.zeros(100, bool)]
    scores = np.r_[np.arange(100) + 200.0, np.arange(100.0)]
    m = evaluate_membership(labels, scores, n_bootstrap=50, random_state=3)
    assert (m.auc.low, m.auc.estimate, m.auc.high) == pytest.approx((1.0, 1.0, 1.0))
    assert m.tpr_at_fpr[0.0].estimate == 1.0
    again = evaluate_membership(labels, scores, n_bootstrap=50, random_state=3)
    assert again.as_dict() == m.as_dict()


def test_bootstrap_interval_narrows_with_more_data():
    rng = np.random.default_rng(1)

    def width(n):
        labels = rng.random(n) < 0.5
        scores = rng.normal(size=n) + labels
        ci = bootstrap_interval(labels, scores, roc_auc, n_resamples=200, random_state=0)
        return ci.high - ci.low

    assert width(4000) < width(200)


def test_plot_roc_returns_log_log_figure(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.random(500) < 0.5
    curves = {
        "attack": roc_curve(labels, rng.normal(size=500) + labels),
        "chance": roc_curve(labels, rng.normal(size=500)),
    }
    fig = plot_roc(curves, title="test")
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert len(ax.lines) == 3
    fig.savefig(tmp_path / "roc.png")
    assert (tmp_path / "roc.png").stat().st_size > 0
    assert plot_roc(curves, log_scale=False).axes[0].get_xscale() == "linear"


labelled_scores = st.integers(2, 60).flatmap(
    lambda n: st.tuples(
        st.lists(st.booleans(), min_size=n, max_size=n).filter(lambda y: 0 < sum(y) < n),
        st.lists(st.integers(-5, 5), min_size=n, max_size=n),  # small range: many ties
    )
)


@settings(max_examples=60, deadline=None)
@given(labelled_scores)
def test_roc_properties(data):
    labels, scores = np.array(data[0]), np.array(data[1], dtype=float)
    curve = roc_curve(labels, scores)
    assert np.all(np.diff(curve.fpr) >= 0) and np.all(np.diff(curve.tpr) >= 0)
    assert curve.fpr[-1] == 1.0 and curve.tpr[-1] == 1.0
    # flipping the scores mirrors the AUC; a strictly increasing transform changes nothing
    assert roc_auc(labels, -scores) == pytest.approx(1.0 - curve.auc)
    assert roc_auc(labels, np.exp(scores)) == pytest.approx(curve.auc)
    assert 0.0 <= attacker_advantage(labels, scores) <= 1.0
    # AUC - 1/2 is the integral of TPR - FPR over FPR, so it cannot exceed the max gap
    assert attacker_advantage(labels, scores) >= abs(curve.auc - 0.5) - 1e-12
    levels = [0.0, 0.001, 0.01, 0.1, 1.0]
    tprs = [tpr_at_fpr(labels, scores, f) for f in levels]
    assert tprs == sorted(tprs) and tprs[-1] == 1.0


def test_bootstrap_over_users_is_wider_when_ratings_cluster_by_user():
    from attacks import evaluate_membership

    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(40), 50)
    # each user's ratings share one offset: 2000 ratings carry about 40 users' worth of evidence
    offset = rng.normal(0, 1.0, 40)[users]
    labels = rng.random(users.size) < rng.beta(1.0, 1.0, 40)[users]  # some users mostly members
    scores = offset + 0.3 * labels + rng.normal(0, 0.3, users.size)
    iid = evaluate_membership(labels, scores, n_bootstrap=200, random_state=0).auc
    clustered = evaluate_membership(labels, scores, n_bootstrap=200, random_state=0, groups=users).auc
    assert clustered.estimate == iid.estimate
    assert (clustered.high - clustered.low) > 1.2 * (iid.high - iid.low)
    with pytest.raises(ValueError, match="one id per sample"):
        evaluate_membership(labels, scores, n_bootstrap=2, groups=users[:10])
