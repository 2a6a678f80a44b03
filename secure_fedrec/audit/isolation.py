"""Isolated canaries: each canary alone on a coordinate nothing else in the run writes to.

The audit adds ``K`` *phantom items* to the catalogue — items with no rating in
the training or test data — and gives canary j one coordinate of their shared
item rows (a Dirac canary, Nasr et al. 2023). Real clients change only the rows
of items they rated (explicit feedback), so on those coordinates the released
aggregate is exactly the sampled included canary plus the mechanism's noise and
rounding on that coordinate, which are independent across coordinates. Each
canary's score is then a function of its own inclusion bit, its own sampling
coins and its own coordinate's noise: the canaries are *independent trials* of
the accounted mechanism, as good as separate training runs, and the held-out
tests (Clopper–Pearson, and f-DP against the accountant's curve,
:func:`attacks.audit_heldout_fdp`) are valid bounds, not one-run bounds.

The premise fails, and the audit refuses the design, when something couples
coordinates or writes to unrated items: implicit feedback (sampled negatives
may be phantom items), the compact rotated encoding (the rotation mixes
coordinates), adaptive clipping (the clip norm follows the number of included
canaries), canary kinds that are not directions (ratings, users), and record-level
dropouts or stragglers (a dropped client takes all its gradient canaries with it).

No training example involves a phantom item. Ranking evaluation of the audited model
(leave-last-out, sampled negatives) and the update-inference attack's item table may
include them: they belong to the audited run's model, not to a production one.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from ..config import RunConfig
from ..data.dataset import RatingData, Split
from ..inputs import build_model_for
from ..models.base import ParamLayout
from .hook import item_coordinates

__all__ = ["ISOLATED_DESIGN", "isolated_coordinates", "isolation_problems", "item_width",
           "phantom_items_needed", "resolve_space", "with_phantom_items"]

#: written next to every bound that relies on it (audit.json)
ISOLATED_DESIGN = ("isolated Dirac canaries: each on its own coordinate of a phantom item no example touches; "
                   "no layer couples coordinates (fixed clipping, no rotation), so each canary's score depends "
                   "only on its inclusion, its sampling and its coordinate's noise: independent trials")


def isolation_problems(config: RunConfig, kind: str, *, implicit: bool) -> list[str]:
    """Why isolated canaries would not be independent trials in this run (empty: they are)."""
    problems = []
    if kind not in ("clients", "gradients"):
        problems.append(f"canary kind {kind!r} is not a direction (isolated canaries are canary clients or "
                        "gradient canaries)")
    if implicit or config.data.implicit:
        problems.append("implicit feedback: sampled negatives may land on the phantom items")
    if config.aggregation.encoding == "compact":
        problems.append("aggregation.encoding = 'compact' rotates the vector, mixing coordinates (user level), "
                        "or drops a public subset each round (record level)")
    if kind == "gradients" and (config.training.dropout_rate > 0 or config.training.straggler_rate > 0):
        problems.append("dropouts or stragglers at record level: a client that drops takes all the gradient "
                        "canaries it holds with it, so they are no longer independent")
    if config.privacy.clipping == "adaptive":
        problems.append("privacy.clipping = 'adaptive' moves the clip norm with the number of included canaries")
    return problems


def resolve_space(space: str, config: RunConfig, kind: str, *, implicit: bool) -> str:
    """``model`` or ``isolated``; ``auto`` is isolated wherever the run allows it."""
    problems = isolation_problems(config, kind, implicit=implicit)
    if space == "auto":
        return "model" if problems else "isolated"
    if space == "isolated" and problems:
        raise ValueError("audit.canary_space = 'isolated' needs canaries that are independent trials: "
                         + "; ".join(problems))
    return space


def item_width(config: RunConfig, split: Split) -> int:
    """Shared coordinates per item row of the configured model (embedding, bias, ...)."""
    empty = np.zeros(0, dtype=np.int64)
    tiny = dataclasses.replace(split.train, users=empty, items=empty, ratings=np.zeros(0, dtype=np.float32),
                               timestamps=None if split.train.timestamps is None else empty,
                               n_users=1, n_items=1, user_ids=None, item_ids=None)
    model = build_model_for(config, Split(tiny, tiny, split.protocol, split.seed))
    return int(item_coordinates(model.layout(), np.array([0])).size)


def _with_items(data: RatingData, count: int) -> RatingData:
    ids = data.item_ids
    if ids is not None:
        if np.issubdtype(np.asarray(ids).dtype, np.integer):
            extra = np.asarray(ids).max(initial=-1) + 1 + np.arange(count)
        else:
            extra = np.array([f"audit-phantom-{k}" for k in range(count)], dtype=object)
        ids = np.concatenate([np.asarray(ids, dtype=object if extra.dtype == object else None), extra])
    return dataclasses.replace(data, n_items=data.n_items + count, item_ids=ids)


def with_phantom_items(split: Split, count: int) -> Split:
    """``split`` with ``count`` more items that nobody rated, after every real item."""
    if count < 0:
        raise ValueError("count must be >= 0")
    return Split(_with_items(split.train, count), _with_items(split.test, count), split.protocol, split.seed)


def phantom_items_needed(num_canaries: int, width: int) -> int:
    return math.ceil(num_canaries / max(1, width))


def isolated_coordinates(layout: ParamLayout, first_phantom: int, num_canaries: int) -> np.ndarray:
    """One distinct coordinate per canary, on the phantom items' rows (items ``first_phantom`` on)."""
    width = int(item_coordinates(layout, np.array([first_phantom])).size)
    count = phantom_items_needed(num_canaries, width)
    coordinates = item_coordinates(layout, np.arange(first_phantom, first_phantom + count))
    if coordinates.size < num_canaries or coordinates.max(initial=-1) >= layout.size:
        raise ValueError("the model has fewer phantom coordinates than canaries")
    return np.sort(coordinates)[:num_canaries]
