"""Canaries for the one-run audit (Steinke, Nasr, Jagielski 2023), put into a split's training data.

*Canary ratings* are (user, item, rating) triples on items the user never
rated, with a rating far from the typical one (by default the lowest of the
scale), each inserted with probability ½. They audit a record-level guarantee.
*Canary users* are extra users rating random items, each taking part with
probability ½; they audit a user-level guarantee.

After training, every canary gets two membership scores:

* ``loss`` — the negative loss of the model's prediction for the canary. For
  canary ratings this uses the user's private row, i.e. an attacker with the
  recommender's prediction API (the scores it would show that user). For
  canary users, whose private rows must not be used (user-level DP covers the
  shared model only), a fresh user row is fitted to the canary's ratings with
  the shared model frozen — what any attacker holding the public model can do.
* ``displacement`` — white box, shared parameters only: how far the canary's
  item rows moved from their (seeded, hence public) initial values.
* ``alignment`` (canary ratings) — white box: how far the canary's item rows
  moved *in the direction that lowers the canary's loss* (the movement
  projected on minus the loss gradient w.r.t. those rows, taken at the trained
  model). Under DP every row gets isotropic noise; a signed projection keeps
  the canary's pull and averages the noise out, where the unsigned
  ``displacement`` adds the noise of every coordinate.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from attacks import CanaryRatings, CanaryUsers, make_canary_ratings, make_canary_users

from ..data.dataset import RatingData, Split
from ..models import FederatedModel
from ..training.local import loss_fn

__all__ = ["CanaryPlan", "insert_canaries", "score_canaries", "with_ratings"]


@dataclass(frozen=True)
class CanaryPlan:
    """The canaries of one audit and the split that contains the included ones."""

    kind: str  # "ratings" or "users"
    canaries: CanaryRatings | CanaryUsers
    users: np.ndarray  # the canary user of each canary
    split: Split


def with_ratings(data: RatingData, users: np.ndarray, items: np.ndarray, ratings: np.ndarray,
                 *, n_users: int | None = None) -> RatingData:
    """``data`` with extra ratings appended (timestamped after every existing one)."""
    ts = None
    if data.timestamps is not None:
        latest = int(data.timestamps.max()) if len(data) else 0
        ts = np.concatenate([data.timestamps, np.full(len(users), latest + 1, dtype=data.timestamps.dtype)])
    return replace(
        data,
        users=np.concatenate([data.users, np.asarray(users, dtype=data.users.dtype)]),
        items=np.concatenate([data.items, np.asarray(items, dtype=data.items.dtype)]),
        ratings=np.concatenate([data.ratings, np.asarray(ratings, dtype=data.ratings.dtype)]),
        timestamps=ts, n_users=data.n_users if n_users is None else n_users,
    )


def default_canary_rating(data: RatingData) -> float:
    return 1.0 if data.implicit else float(data.rating_scale[0])


def insert_canaries(
    split: Split, *, kind: str, count: int, member_users: np.ndarray, rating: float | None,
    items_per_user: int, seed: int,
) -> CanaryPlan:
    """Draw ``count`` canaries and return the split whose training data holds the included ones.

    Canary ratings go to ``member_users`` only, on items absent from that user's
    train and test ratings. Canary users get new user indices after every real one.
    """
    train, test = split.train, split.test
    value = default_canary_rating(train) if rating is None else float(rating)
    rng = np.random.default_rng([seed, 0xCA9A])
    if kind == "ratings":
        members = np.asarray(member_users, dtype=np.int64)
        position = np.full(train.n_users, -1, dtype=np.int64)
        position[members] = np.arange(len(members))
        all_users = np.concatenate([train.users, test.users])
        all_items = np.concatenate([train.items, test.items])
        keep = position[all_users] >= 0
        canaries = make_canary_ratings(
            count, len(members), train.n_items, existing=(position[all_users[keep]], all_items[keep]),
            rating=value, random_state=rng,
        )
        canaries = replace(canaries, users=members[canaries.users])
        new_train = with_ratings(train, *canaries.inserted())
        return CanaryPlan(kind, canaries, canaries.users, Split(new_train, test, split.protocol, split.seed))
    if kind == "users":
        if items_per_user > train.n_items:
            raise ValueError("audit.canary_items_per_user exceeds the number of items")
        canaries = make_canary_users(count, train.n_items, items_per_user=items_per_user, rating=value,
                                     random_state=rng)
        users = train.n_users + np.arange(count)
        inc = np.flatnonzero(canaries.included)
        add_users = np.concatenate([np.full(len(canaries.items[j]), users[j]) for j in inc]) if inc.size else np.zeros(0)
        add_items = np.concatenate([canaries.items[j] for j in inc]) if inc.size else np.zeros(0)
        add_ratings = np.concatenate([canaries.ratings[j] for j in inc]) if inc.size else np.zeros(0)
        n_users = train.n_users + count
        new_train = with_ratings(train, add_users, add_items, add_ratings, n_users=n_users)
        new_test = replace(test, n_users=n_users)
        return CanaryPlan(kind, canaries, users, Split(new_train, new_test, split.protocol, split.seed))
    raise ValueError(f"unknown canary kind {kind!r}")


@torch.no_grad()
def pair_losses(model: FederatedModel, users: np.ndarray, items: np.ndarray, targets: np.ndarray,
                batch: int = 65536) -> np.ndarray:
    """The training loss (MSE or BCE) of the model's prediction for each (user, item, target)."""
    criterion = loss_fn(model)
    out = []
    for start in range(0, len(users), batch):
        u = torch.as_tensor(users[start:start + batch], dtype=torch.long)
        i = torch.as_tensor(items[start:start + batch], dtype=torch.long)
        y = torch.as_tensor(targets[start:start + batch], dtype=torch.float32)
        out.append(criterion(model(u, i), y).double().numpy())
    return np.concatenate(out) if out else np.zeros(0)


def item_rows(model_state: dict[str, torch.Tensor], names: frozenset[str] | tuple[str, ...]) -> np.ndarray:
    """All item-indexed shared parameters side by side, one row per item."""
    parts = [model_state[n].detach().double().numpy().reshape(model_state[n].shape[0], -1) for n in sorted(names)]
    return np.hstack(parts)


def _fresh_user_loss(model: FederatedModel, items: np.ndarray, ratings: np.ndarray, steps: int = 100,
                     lr: float = 0.05) -> float:
    """Fit a new user row to (items, ratings) with every shared parameter frozen; the final loss."""
    order = np.argsort(items)
    items, ratings = np.asarray(items)[order], np.asarray(ratings)[order]
    view = model.client_view(0, items)
    private = [p for n, p in view.named_parameters() if n in model.private_names]
    with torch.no_grad():
        for p in private:
            p.zero_()
    for _, p in view.named_parameters():
        p.requires_grad_(False)
    for p in private:
        p.requires_grad_(True)
    opt = torch.optim.Adam(private, lr=lr)
    criterion = loss_fn(model)
    u = torch.zeros(len(items), dtype=torch.long)
    i = torch.arange(len(items))
    y = torch.as_tensor(ratings, dtype=torch.float32)
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        criterion(view(u, i), y).mean().backward()
        opt.step()
    with torch.no_grad():
        return float(criterion(view(u, i), y).mean())


def _alignment(model: FederatedModel, initial_state: dict[str, torch.Tensor], users: np.ndarray,
               items: np.ndarray, ratings: np.ndarray) -> np.ndarray:
    """Movement of each canary's item rows projected on its loss-decreasing direction."""
    names = sorted(model.item_row_names)
    params = dict(model.named_parameters())
    criterion = loss_fn(model)
    out = np.zeros(len(users))
    for j, (u, i, y) in enumerate(zip(users, items, ratings)):
        # One small backward per canary (the rows of one item only): exact per-canary
        # directions even when two canaries share an item; ~1 ms each.
        grads = torch.autograd.grad(
            criterion(model(torch.tensor([u]), torch.tensor([i])), torch.tensor([y], dtype=torch.float32)).sum(),
            [params[n] for n in names])
        direction = torch.cat([-g[i].reshape(-1) for g in grads]).double()
        moved = torch.cat([(params[n][i] - initial_state[n][i]).detach().reshape(-1) for n in names]).double()
        norm = float(direction.norm())
        out[j] = float(moved @ direction) / norm if norm > 0 else 0.0
    return out


def score_canaries(plan: CanaryPlan, model: FederatedModel, initial_state: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Membership scores of every canary (higher = more likely included): ``loss``, ``displacement``
    and, for canary ratings, ``alignment``."""
    moved = np.linalg.norm(
        item_rows(model.shared_state(), model.item_row_names) - item_rows(initial_state, model.item_row_names),
        axis=1,
    )
    c = plan.canaries
    if plan.kind == "ratings":
        loss = pair_losses(model, c.users, c.items, c.ratings)
        return {"loss": -loss, "displacement": moved[c.items],
                "alignment": _alignment(model, initial_state, c.users, c.items, c.ratings)}
    losses = np.array([_fresh_user_loss(model, items, ratings) for items, ratings in zip(c.items, c.ratings)])
    return {"loss": -losses, "displacement": np.array([moved[items].mean() for items in c.items])}
