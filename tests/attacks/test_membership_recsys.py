"""User-level membership inference from recommended lists (Zhang et al. 2021)."""

import numpy as np
import pytest

from attacks.membership import (
    RecommenderMembershipAttack,
    interaction_item_vectors,
    popular_item_lists,
    top_k_excluding,
    user_membership_features,
)
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


# -- the paper's pipeline end to end: item vectors from the attacker's own interactions -------


def _interaction_vectors(histories, dim=DIM, seed=0):
    users = np.concatenate([np.full(len(h), u) for u, h in enumerate(histories)])
    return interaction_item_vectors(users, np.concatenate(histories), n_users=len(histories),
                                    n_items=N_ITEMS, dim=dim, random_state=seed)


def _paper_pipeline(personalise_everyone, seed=1):
    """Like ``_run`` but the attacker never sees the true item vectors: it factorises its
    shadow users' interactions (Zhang et al. §3) and uses those vectors for both models."""
    rng, true_vectors, popularity = _world(seed)
    shadow_users = _histories(rng, true_vectors, 300)
    attacker_vectors = _interaction_vectors(shadow_users)
    shadow_members = rng.random(300) < 0.5
    attack = RecommenderMembershipAttack().fit(
        shadow_users,
        _recommend(shadow_users, shadow_members, true_vectors, popularity, personalise_everyone),
        attacker_vectors, shadow_members,
    )
    target_users = _histories(rng, true_vectors, 400)
    target_members = rng.random(400) < 0.5
    target_lists = _recommend(target_users, target_members, true_vectors, popularity, personalise_everyone)
    scores = attack.score(target_users, target_lists, attacker_vectors)
    return evaluate_membership(target_members, scores, n_bootstrap=1000, confidence=0.99, random_state=0)


def test_paper_pipeline_detects_planted_membership():
    assert _paper_pipeline(personalise_everyone=False).auc.low > 0.8


def test_paper_pipeline_is_at_chance_without_membership_signal():
    metrics = _paper_pipeline(personalise_everyone=True)
    assert 0.5 in metrics.auc and metrics.auc.high - metrics.auc.low < 0.25


def test_interaction_vectors_recover_item_groups_and_are_deterministic():
    # Two communities of users, each interacting only with its own half of the items:
    # items of the same half must get (near-)parallel vectors, the halves orthogonal ones.
    rng = np.random.default_rng(0)
    histories = [rng.choice(np.arange(0, 50) + 50 * (u % 2), 10, replace=False) for u in range(200)]
    users = np.concatenate([np.full(10, u) for u in range(200)])
    items = np.concatenate(histories)
    vecs = interaction_item_vectors(users, items, n_users=200, n_items=120, dim=2, random_state=0)
    again = interaction_item_vectors(users, items, n_users=200, n_items=120, dim=2, random_state=5)
    np.testing.assert_allclose(vecs, again, atol=1e-8)
    unit = vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
    assert np.abs(unit[:50] @ unit[:50].T).min() > 0.99
    assert np.abs(unit[:50] @ unit[50:100].T).max() < 0.05
    assert np.all(vecs[100:] == 0)  # never interacted with: the attacker knows nothing of them
    with pytest.raises(ValueError):
        interaction_item_vectors(users, items, n_users=200, n_items=120, dim=200)
    with pytest.raises(ValueError):
        interaction_item_vectors(users, items + 200, n_users=200, n_items=120, dim=2)


def test_recommended_lists_exclude_history():
    scores = np.array([[0.1, 0.9, 0.8, 0.3, 0.7], [0.5, 0.4, 0.3, 0.2, 0.1]])
    lists = top_k_excluding(scores, [np.array([1]), np.array([], dtype=int)], 3)
    assert [x.tolist() for x in lists] == [[2, 4, 3], [0, 1, 2]]
    assert [x.tolist() for x in popular_item_lists(np.array([5, 1, 9, 3, 0]), [np.array([2]), np.array([0, 3])], 2)] \
        == [[0, 3], [2, 1]]
    with pytest.raises(ValueError):
        top_k_excluding(scores, [np.array([1])], 2)


def test_custom_classifier_is_used():
    class Constant:
        def fit(self, features, labels):
            self.n = features.shape[1]
            return self

        def predict_proba(self, features):  # scikit-learn layout: one column per class
            return np.tile([0.25, 0.75], (len(features), 1))

    vectors = np.eye(3)
    attack = RecommenderMembershipAttack(classifier=Constant()).fit(
        [np.array([0]), np.array([1])], [np.array([0]), np.array([2])], vectors, np.array([True, False]))
    np.testing.assert_allclose(attack.score([np.array([0])], [np.array([1])], vectors), [0.75])
