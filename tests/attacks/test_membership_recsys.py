"""User-level membership inference from recommended lists (Zhang et al. 2021)."""

import numpy as np
import pytest

from attacks.membership import RecommenderMembershipAttack, user_membership_features
from attacks.metrics import evaluate_membership

N_ITEMS, DIM, N_HISTORY, N_RECOMMENDED = 300, 8, 20, 10


def _world(seed):
    rng = np.random.default_rng(seed)
    item_vectors = rng.normal(size=(N_ITEMS, DIM))
    popularity = rng.zipf(1.5, size=N_ITEMS).astype(float)
    return rng, item_vectors, popularity


def _histories(rng, item_vectors, n_users):
    tastes = rng.normal(size=(n_users, DIM))
    affinity = tastes @ item_vectors.T + rng.gumbel(size=(n_users, N_ITEMS))
    return [np.argsort(-row)[:N_HISTORY] for row in affinity]


def _top_excluding(scores, exclude):
    scores = scores.copy()
    scores[exclude] = -np.inf
    return np.argsort(-scores)[:N_RECOMMENDED]


def _recommend(histories, members, item_vectors, popularity, personalise_everyone):
    """A toy recommender: it knows its training users' histories and recommends
    items near their taste; users it never saw get the popular items (the
    non-member behaviour Zhang et al. exploit). ``personalise_everyone`` makes
    the output independent of membership (a content-based recommender that
    reads the history at query time): the null case."""
    lists = []
    for history, member in zip(histories, members):
        if member or personalise_everyone:
            lists.append(_top_excluding(item_vectors @ item_vectors[history].mean(0), history))
        else:
            lists.append(_top_excluding(popularity, history))
    return lists


def _run(personalise_everyone, seed=0):
    rng, item_vectors, popularity = _world(seed)
    shadow_users = _histories(rng, item_vectors, 300)
    shadow_members = rng.random(300) < 0.5
    shadow_lists = _recommend(
        shadow_users, shadow_members, item_vectors, popularity, personalise_everyone
    )
    attack = RecommenderMembershipAttack().fit(
        shadow_users, shadow_lists, item_vectors, shadow_members
    )

    target_users = _histories(rng, item_vectors, 400)
    target_members = rng.random(400) < 0.5
    target_lists = _recommend(
        target_users, target_members, item_vectors, popularity, personalise_everyone
    )
    scores = attack.score(target_users, target_lists, item_vectors)
    return evaluate_membership(
        target_members, scores, n_bootstrap=1000, confidence=0.99, random_state=0
    )


def test_attack_detects_members_of_a_personalising_recommender():
    metrics = _run(personalise_everyone=False)
    assert metrics.auc.low > 0.9


def test_attack_is_at_chance_when_output_ignores_membership():
    metrics = _run(personalise_everyone=True)
    assert 0.5 in metrics.auc


def test_features_and_validation():
    vectors = np.eye(3)
    features = user_membership_features([np.array([0, 1])], [np.array([2])], vectors)
    np.testing.assert_allclose(features[0, :3], [0.5, 0.5, -1.0])
    assert features[0, 3] == pytest.approx(np.sqrt(1.5))
    assert features[0, 4] == pytest.approx(0.0)
    with pytest.raises(ValueError):
        user_membership_features([np.array([5])], [np.array([0])], vectors)
    with pytest.raises(ValueError):
        user_membership_features([np.array([], dtype=int)], [np.array([0])], vectors)
    with pytest.raises(ValueError):
        RecommenderMembershipAttack().fit(
            [np.array([0])], [np.array([1])], vectors, np.array([True])
        )
    attack = RecommenderMembershipAttack().fit(
        [np.array([0]), np.array([1])],
        [np.array([0]), np.array([2])],
        vectors,
        np.array([True, False]),
    )
    with pytest.raises(ValueError):
        attack.score([np.array([0])], [np.array([1])], np.eye(4))
