"""Membership attacks on a trained recommender, wired to this package's data and models.

* rating level: was this (user, item, rating) in training? Members are
  training ratings, non-members the same users' held-out test ratings.
  Loss threshold (Yeom et al.) and LiRA (Carlini et al.) whose shadow models
  are trained *centrally* on the same model class — far cheaper than
  federated shadows, at the price of a shadow/target training mismatch.
* user level (Zhang et al. 2021): was this user a client at all? Features
  from the recommended lists against the user's interacted items.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from attacks import (
    LiRA,
    RecommenderMembershipAttack,
    evaluate_membership,
    train_shadow_models,
    user_membership_features,
)

from ..centralized import train_centralized
from ..config import RunConfig
from ..data.dataset import RatingData, Split
from ..models import FederatedModel
from .canaries import item_rows, pair_losses

__all__ = ["MembershipOutcome", "RatingPopulation", "lira_attack", "loss_threshold_attack",
           "rating_population", "user_level_attack"]

_LOG_FLOOR = 1e-4  # keeps log(loss) finite on a perfectly fitted rating


@dataclass
class MembershipOutcome:
    """One attack's labels, scores and metrics (with bootstrap intervals)."""

    name: str
    labels: np.ndarray
    scores: np.ndarray
    metrics: Any  # attacks.MembershipMetrics
    notes: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"attack": self.name, **self.metrics.as_dict(), "notes": self.notes}


@dataclass(frozen=True)
class RatingPopulation:
    """Rating-level samples: ``rows`` of train (members) or test (non-members)."""

    users: np.ndarray
    items: np.ndarray
    ratings: np.ndarray
    member: np.ndarray  # bool
    train_rows: np.ndarray  # rows of the training data that are population members


def rating_population(base_train: RatingData, test: RatingData, member_users: np.ndarray, per_class: int,
                      seed: int) -> RatingPopulation:
    """Up to ``per_class`` training ratings and as many test ratings of ``member_users``."""
    rng = np.random.default_rng([seed, 0x1A])
    is_member_user = np.zeros(base_train.n_users, dtype=bool)
    is_member_user[member_users] = True
    train_rows = np.flatnonzero(is_member_user[base_train.users])
    test_rows = np.flatnonzero(is_member_user[test.users])
    n = min(per_class, len(train_rows), len(test_rows))
    if n < 2:
        raise ValueError("rating-level attacks need held-out test ratings of trained users")
    tr = np.sort(rng.choice(train_rows, n, replace=False))
    te = np.sort(rng.choice(test_rows, n, replace=False))
    return RatingPopulation(
        users=np.concatenate([base_train.users[tr], test.users[te]]),
        items=np.concatenate([base_train.items[tr], test.items[te]]),
        ratings=np.concatenate([base_train.ratings[tr], test.ratings[te]]).astype(np.float32),
        member=np.concatenate([np.ones(n, bool), np.zeros(n, bool)]),
        train_rows=tr,
    )


def _statistic(model: FederatedModel, pop: RatingPopulation) -> np.ndarray:
    # −log(loss): monotone in −loss (same ROC for the threshold attack) and far closer to
    # Gaussian per sample than a squared error, which is what LiRA's test assumes.
    return -np.log(pair_losses(model, pop.users, pop.items, pop.ratings) + _LOG_FLOOR)


def _evaluate(name: str, labels: np.ndarray, scores: np.ndarray, fpr_levels, n_bootstrap: int,
              confidence: float, seed: int, notes: str = "") -> MembershipOutcome:
    metrics = evaluate_membership(labels, scores, fpr_levels=fpr_levels, n_bootstrap=n_bootstrap,
                                  confidence=confidence, random_state=seed)
    return MembershipOutcome(name, labels, scores, metrics, notes)


def loss_threshold_attack(model: FederatedModel, pop: RatingPopulation, **evaluation) -> MembershipOutcome:
    """Yeom et al.: lower loss, more likely a member."""
    return _evaluate("loss", pop.member, _statistic(model, pop), **evaluation,
                     notes="score = -loss of the model's prediction (uses the user's private row: "
                           "an attacker seeing the recommender's predicted scores)")


def lira_attack(
    config: RunConfig, target: FederatedModel, split: Split, base_train: RatingData, pop: RatingPopulation,
    *, n_shadow: int, shadow_epochs: int, seed: int, **evaluation,
) -> list[MembershipOutcome]:
    """LiRA online and offline (fixed variance) with centrally trained shadow models."""
    rest = np.ones(len(base_train), dtype=bool)
    rest[pop.train_rows] = False
    rest_data = base_train.subset(rest)

    def train_and_score(in_training: np.ndarray, shadow_seed: int) -> np.ndarray:
        from .canaries import with_ratings

        shadow_train = with_ratings(rest_data, pop.users[in_training], pop.items[in_training],
                                    pop.ratings[in_training])
        shadow_split = Split(shadow_train, split.test, split.protocol, split.seed)
        shadow_config = dataclasses.replace(config, seed=int(shadow_seed))
        model = train_centralized(shadow_config, shadow_split, epochs=shadow_epochs).model
        return _statistic(model, pop)

    shadow = train_shadow_models(train_and_score, len(pop.member), n_shadow, random_state=seed)
    target_stat = _statistic(target, pop)
    notes = (f"{n_shadow} shadow models trained centrally ({shadow_epochs} epochs of minibatch Adam, "
             "same model class and loss), statistic -log(loss)")
    out = []
    for online in (True, False):
        attack = LiRA(online=online, fixed_variance=True).fit_shadow(shadow)
        name = "lira_online" if online else "lira_offline"
        out.append(_evaluate(name, pop.member, attack.score(target_stat), seed=seed, **evaluation, notes=notes))
    return out


@torch.no_grad()
def recommended_lists(model: FederatedModel, users: np.ndarray, k: int) -> list[np.ndarray]:
    """Top-k items by the model's score for each user (nothing excluded, so members and
    non-members are treated alike)."""
    out = []
    for start in range(0, len(users), 256):
        scores = model.score_all_items(torch.as_tensor(users[start:start + 256], dtype=torch.long))
        top = torch.topk(scores, min(k, scores.shape[1]), dim=1).indices.numpy()
        out.extend(list(top))
    return out


def user_level_attack(
    config: RunConfig, target: FederatedModel, split: Split, *, member_users: np.ndarray,
    nonmember_users: np.ndarray, shadow_users: np.ndarray, k: int, shadow_epochs: int, seed: int,
    **evaluation,
) -> list[MembershipOutcome]:
    """Zhang et al. 2021 against the federated target; the shadow recommender is trained centrally
    on half of ``shadow_users`` (the attacker's own data), the other half being its non-members."""
    train = split.train
    rows = train.rows_by_user()
    history = lambda users: [train.items[rows[u]] for u in users]
    rng = np.random.default_rng([seed, 0x05E7])
    shuffled = rng.permutation(shadow_users)
    shadow_in, shadow_out = shuffled[: len(shuffled) // 2], shuffled[len(shuffled) // 2:]
    is_in = np.zeros(train.n_users, dtype=bool)
    is_in[shadow_in] = True
    shadow_split = Split(train.subset(is_in[train.users]), split.test, split.protocol, split.seed)
    shadow_model = train_centralized(config, shadow_split, epochs=shadow_epochs).model
    # The item vectors are the target's shared item parameters: every client (and the server)
    # holds them in federated learning, so the attacker does too.
    vectors = item_rows(target.shared_state(), target.item_row_names)
    shadow_users_all = np.concatenate([shadow_in, shadow_out])
    attack = RecommenderMembershipAttack().fit(
        history(shadow_users_all), recommended_lists(shadow_model, shadow_users_all, k), vectors,
        np.concatenate([np.ones(len(shadow_in), bool), np.zeros(len(shadow_out), bool)]),
    )
    users = np.concatenate([member_users, nonmember_users])
    labels = np.concatenate([np.ones(len(member_users), bool), np.zeros(len(nonmember_users), bool)])
    interacted, recommended = history(users), recommended_lists(target, users, k)
    scores = attack.score(interacted, recommended, vectors)
    shadow_free = user_membership_features(interacted, recommended, vectors)[:, -1]
    return [
        _evaluate("user", labels, scores, seed=seed, **evaluation,
                  notes=f"Zhang et al. 2021; top-{k} recommended lists; shadow recommender trained "
                        f"centrally on {len(shadow_in)} users ({len(shadow_out)} shadow non-members); "
                        "item vectors = the target's shared item parameters"),
        # Without a shadow model: a member's recommendations resemble what it interacted with.
        _evaluate("user_centroid", labels, shadow_free, seed=seed, **evaluation,
                  notes="no shadow model: score = cosine of the interacted and recommended centroids"),
        # Nothing is excluded from the lists, so a member's list repeats items it rated.
        _evaluate("user_overlap", labels, np.array([np.isin(r, h).mean() for r, h in zip(recommended, interacted)]),
                  seed=seed, **evaluation,
                  notes=f"no shadow model: score = fraction of the top-{k} list the user interacted with"),
    ]
