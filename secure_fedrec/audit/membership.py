"""Membership attacks on a trained recommender, wired to this package's data and models.

* rating level: was this (user, item, rating) in training? Members are
  training ratings, non-members the same users' held-out test ratings.
  Loss threshold (Yeom et al.) and LiRA (Carlini et al.) whose shadow models
  are trained *centrally* on the same model class — far cheaper than
  federated shadows, at the price of a shadow/target training mismatch.
* user level (Zhang et al. 2021): was this user a client at all? Features
  from the recommended lists against the user's interacted items, in two
  settings: non-members get popular items (the paper's) or personalised lists
  from a private row they fit themselves (a federated recommender's new client).
"""

from __future__ import annotations

import copy
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
)
from attacks.membership.recsys import (
    interaction_item_vectors,
    popular_item_lists,
    top_k_excluding,
)

from ..centralized import train_centralized
from ..config import RunConfig
from ..data.dataset import RatingData, Split
from ..models import FederatedModel
from ..training.local import loss_fn
from .canaries import pair_losses

__all__ = [
    "NONMEMBER_SETTINGS",
    "MembershipOutcome",
    "RatingPopulation",
    "fit_private_rows",
    "lira_attack",
    "loss_threshold_attack",
    "rating_population",
    "recommended_lists",
    "train_shadow_recommender",
    "user_level_attack",
]

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
              confidence: float, seed: int, notes: str = "", groups: np.ndarray | None = None) -> MembershipOutcome:
    metrics = evaluate_membership(labels, scores, fpr_levels=fpr_levels, n_bootstrap=n_bootstrap,
                                  confidence=confidence, random_state=seed, groups=groups)
    return MembershipOutcome(name, labels, scores, metrics, notes)


def loss_threshold_attack(model: FederatedModel, pop: RatingPopulation, **evaluation) -> MembershipOutcome:
    """Yeom et al.: lower loss, more likely a member."""
    return _evaluate("loss", pop.member, _statistic(model, pop), **evaluation, groups=pop.users,
                     notes="score = -loss of the model's prediction (uses the user's private row: "
                           "an attacker seeing the recommender's predicted scores); intervals resample users")


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
        out.append(_evaluate(name, pop.member, attack.score(target_stat), seed=seed, **evaluation,
                             notes=notes + "; intervals resample users", groups=pop.users))
    return out


@torch.no_grad()
def recommended_lists(model: FederatedModel, users: np.ndarray, history: list[np.ndarray], k: int,
                      n_items: int | None = None) -> list[np.ndarray]:
    """Top-k items by the model's score for each user, excluding the items the user already
    interacted with (what a recommender shows, and what Zhang et al. attack). ``n_items``:
    recommend only among the first that many (the catalogue without an audit's phantom items)."""
    out: list[np.ndarray] = []
    for start in range(0, len(users), 256):
        scores = model.score_all_items(torch.as_tensor(users[start:start + 256], dtype=torch.long))
        out.extend(top_k_excluding(scores[:, :n_items].double().numpy(), history[start:start + 256], k))
    return out


def fit_private_rows(model: FederatedModel, data: RatingData, users: np.ndarray, *, steps: int, lr: float,
                     reg: float, seed: int) -> FederatedModel:
    """A copy of ``model`` whose private rows of ``users`` are fitted to their ratings in ``data``
    with every shared parameter frozen — what a new client of a federated recommender does
    before it can rank items: train its own row locally against the shared model.

    Each user minimises the mean loss over its own ratings (plus ``reg`` times the penalty,
    as in local training) with full-batch Adam from a zero row."""
    fitted = copy.deepcopy(model)
    params = dict(fitted.named_parameters())
    private = [params[n] for n in fitted.private_names]
    for p in fitted.parameters():
        p.requires_grad_(False)
    rows = torch.as_tensor(np.asarray(users, dtype=np.int64))
    with torch.no_grad():
        for p in private:
            p[rows] = 0.0
    for p in private:
        p.requires_grad_(True)
    keep = np.isin(data.users, users)
    u, i, y = data.users[keep], data.items[keep], data.ratings[keep].astype(np.float32)
    if fitted.task != "explicit":  # implicit: the rated items against as many random items
        rng = np.random.default_rng([seed, 0xF17])
        u = np.concatenate([u, u])
        i = np.concatenate([i, rng.integers(0, data.n_items, size=len(i))])
        y = np.concatenate([np.ones(len(y)), np.zeros(len(y))]).astype(np.float32)
    counts = np.bincount(u, minlength=data.n_users).astype(np.float32)
    weight = torch.as_tensor(1.0 / counts[u])  # sum of per-user means: each row sees its own mean loss
    u_t, i_t, y_t = (torch.as_tensor(a) for a in (u, i, y))
    criterion = loss_fn(fitted)
    opt = torch.optim.Adam(private, lr=lr)
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        with torch.enable_grad():
            loss = ((criterion(fitted(u_t, i_t), y_t) + reg * fitted.penalty(u_t, i_t)) * weight).sum()
            loss.backward()
        opt.step()
    for p in private:
        p.requires_grad_(False)
    return fitted


def train_shadow_recommender(config: RunConfig, split: Split, users: np.ndarray, *, how: str,
                             epochs: int) -> FederatedModel:
    """The attacker's shadow recommender on ``users``' training data.

    ``federated``: the target's own configuration (the attacker knows the algorithm, as in
    Zhang et al. and LiRA), over plaintext aggregation (the protocol does not change the
    model's distribution, only the cost) and with another seed (it does not know the
    target's initialisation). ``central``: ``epochs`` of centralized minibatch Adam — cheaper,
    but its lists differ from a federated target's, which the classifier then mis-transfers.
    """
    keep = np.isin(split.train.users, users)
    shadow_split = Split(split.train.subset(keep), split.test.subset(np.isin(split.test.users, users)),
                         split.protocol, split.seed)
    if how == "central":
        return train_centralized(config, shadow_split, epochs=epochs).model
    if how != "federated":
        raise ValueError(f"unknown shadow training {how!r}; use 'federated' or 'central'")
    from ..engines.inprocess import FederatedTrainer

    privacy = config.privacy
    if privacy.unit == "user" and privacy.noise == "distributed":  # same noise in total, added centrally
        privacy = dataclasses.replace(privacy, noise="central")
    shadow_config = dataclasses.replace(
        config, seed=config.seed + 1, privacy=privacy,
        aggregation=dataclasses.replace(config.aggregation, protocol="plaintext"),
        evaluation=dataclasses.replace(config.evaluation, every=max(1, config.training.rounds)))
    trainer = FederatedTrainer(shadow_config, shadow_split)
    trainer.run()
    return trainer.model


#: how a recommender treats users it was not trained on (the user-level attack's two settings)
NONMEMBER_SETTINGS = {
    # Zhang et al.'s setting: a user unknown to the recommender gets the most popular items.
    # Against a federated recommender this measures whether the user has a trained row at all
    # (members get personal lists, everyone else the same popular ones), not training leakage.
    "popular": "user_popular",
    # Ours: a new client fits its private row to its history against the shared model and
    # ranks items with it, exactly like a member does with the row it trained.
    "fitted": "user",
}


def user_level_attack(
    config: RunConfig, target: FederatedModel, split: Split, *, member_users: np.ndarray,
    nonmember_users: np.ndarray, shadow_users: np.ndarray, k: int, shadow_epochs: int, seed: int,
    settings: tuple[str, ...] = ("fitted", "popular"), vector_dim: int = 20, shadow_training: str = "federated",
    **evaluation,
) -> list[MembershipOutcome]:
    """Zhang et al. 2021 against the federated target, once per non-member setting.

    The attacker holds ``shadow_users``' data: it factorises their interactions into item
    vectors, trains a shadow recommender on half of them (the other half are its non-members)
    the way the target was trained (``shadow_training``, see :func:`train_shadow_recommender`),
    and treats its own non-members the way the target treats them in each
    setting. It knows the history of every user it attacks. Members' lists come from their
    trained private rows; nobody is recommended an item they already interacted with."""
    train = split.train
    rows = train.rows_by_user()
    history = lambda users: [np.unique(train.items[rows[u]]) for u in users]
    rng = np.random.default_rng([seed, 0x05E7])
    shuffled = rng.permutation(shadow_users)
    shadow_in, shadow_out = np.sort(shuffled[: len(shuffled) // 2]), np.sort(shuffled[len(shuffled) // 2:])
    is_shadow = np.isin(train.users, shadow_users)
    vector_dim = max(1, min(vector_dim, len(shadow_users) - 1))  # the attacker's matrix has that rank at most
    vectors = interaction_item_vectors(train.users[is_shadow], train.items[is_shadow], n_users=train.n_users,
                                       n_items=train.n_items, dim=vector_dim, random_state=seed)
    shadow_train = train.subset(np.isin(train.users, shadow_in))
    target_train = train.subset(np.isin(train.users, member_users))
    shadow_model = train_shadow_recommender(config, split, shadow_in, how=shadow_training, epochs=shadow_epochs)
    t = config.training
    fit = {"steps": t.rounds * t.local_epochs, "lr": t.lr, "reg": t.reg, "seed": seed}

    def lists(model: FederatedModel, model_train: RatingData, members: np.ndarray, nonmembers: np.ndarray,
              setting: str) -> list[np.ndarray]:
        out = recommended_lists(model, members, history(members), k, train.n_items)
        if setting == "popular":
            popularity = np.bincount(model_train.items, minlength=model_train.n_items)
            return out + popular_item_lists(popularity, history(nonmembers), k)
        new_clients = fit_private_rows(model, train, nonmembers, **fit)
        return out + recommended_lists(new_clients, nonmembers, history(nonmembers), k, train.n_items)

    users = np.concatenate([member_users, nonmember_users])
    labels = np.concatenate([np.ones(len(member_users), bool), np.zeros(len(nonmember_users), bool)])
    shadow_labels = np.concatenate([np.ones(len(shadow_in), bool), np.zeros(len(shadow_out), bool)])
    outcomes = []
    for setting in settings:
        attack = RecommenderMembershipAttack().fit(
            history(np.concatenate([shadow_in, shadow_out])),
            lists(shadow_model, shadow_train, shadow_in, shadow_out, setting), vectors, shadow_labels)
        scores = attack.score(history(users), lists(target, target_train, member_users, nonmember_users, setting),
                              vectors)
        treatment = ("the most popular items of the recommender's training data (so this measures whether "
                     "a user HAS a trained row, not what training leaked)" if setting == "popular" else
                     f"top-{k} of a private row fitted to their history ({fit['steps']} Adam steps, shared model frozen)")
        outcomes.append(_evaluate(
            NONMEMBER_SETTINGS[setting], labels, scores, seed=seed, **evaluation,
            notes=f"Zhang et al. 2021; top-{k} lists excluding interacted items; non-members get {treatment}; "
                  f"item vectors: rank-{vector_dim} SVD of the attacker's {len(shadow_users)} users' interactions; "
                  f"shadow recommender trained ({shadow_training}) on {len(shadow_in)} of them"))
    return outcomes
