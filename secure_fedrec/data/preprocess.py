"""From raw parsed columns to a clean :class:`RatingData`.

Every loader ends here, so the decisions below are taken the same way for
every file format. Each one is logged on the ``secure_fedrec.data`` logger and
recorded in ``RatingData.notes``:

1. **Duplicates.** When a (user, item) pair occurs more than once, the row with
   the latest timestamp is kept (ties, and files without timestamps: the row
   that comes last in the file).
2. **Implicit feedback.** In implicit mode every remaining row is a positive
   interaction with value 1.0, except rows whose feedback value (a weight or a
   count) is <= 0, which are dropped as non-interactions. With a
   ``binarize_threshold`` a row is positive when its value is >= the threshold;
   the others are dropped, or kept with value 0.0 as explicit negatives when
   ``keep_negatives`` is set.
3. **Filtering.** Users with fewer than ``min_user_ratings`` and items with
   fewer than ``min_item_ratings`` rows are removed, repeatedly, until both
   conditions hold at once (removing an item can push a user below the
   minimum and vice versa). Negatives kept by binarization count as rows.
4. **Re-indexing.** Users and items that still have rows get contiguous
   indices in the sorted order of their raw ids; ``user_ids[u]`` and
   ``item_ids[i]`` give the raw ids back. A user or item left with no rows is
   dropped from the index, so no user in the result has zero ratings.
5. **Order.** Rows are sorted by (user, timestamp, item) so that the result
   does not depend on the row order of the file beyond rule 1.
"""

from __future__ import annotations

import logging

import numpy as np

from .dataset import DataError, RatingData

__all__ = ["build_rating_data", "logger"]

logger = logging.getLogger("secure_fedrec.data")


class NoteBook:
    """Collects the decisions taken while loading; each one is logged as it is taken."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.notes: list[str] = []

    def record(self, message: str, *, level: int = logging.INFO) -> None:
        logger.log(level, "%s: %s", self.source, message)
        self.notes.append(message)


def build_rating_data(
    raw_users: np.ndarray,
    raw_items: np.ndarray,
    values: np.ndarray | None,
    timestamps: np.ndarray | None,
    *,
    implicit: bool,
    binarize_threshold: float | None,
    keep_negatives: bool,
    min_user_ratings: int,
    min_item_ratings: int,
    rating_scale: tuple[float, float],
    name: str,
    notebook: NoteBook,
) -> RatingData:
    """Apply the module-level rules 1-5 to parsed columns (one entry per file row)."""
    n_rows = len(raw_users)
    if n_rows == 0:
        raise DataError(f"{notebook.source}: no ratings found")
    user_ids, user_codes = _encode(raw_users)
    item_ids, item_codes = _encode(raw_items)

    keep = _latest_per_pair(user_codes, item_codes, timestamps, len(item_ids))
    n_duplicates = n_rows - int(keep.sum())
    if n_duplicates:
        rule = "latest timestamp" if timestamps is not None else "last row in the file"
        notebook.record(
            f"{n_duplicates} duplicated (user, item) rows removed, keeping the {rule}",
            level=logging.WARNING,
        )

    if values is None:
        values = np.ones(n_rows, dtype=np.float64)
    if implicit:
        values, keep = _to_implicit(values, keep, binarize_threshold, keep_negatives, notebook)

    keep = _filter_to_fixed_point(
        user_codes, item_codes, keep, min_user_ratings, min_item_ratings, notebook
    )
    if not keep.any():
        raise DataError(
            f"{notebook.source}: no ratings left after filtering "
            f"(min_user_ratings={min_user_ratings}, min_item_ratings={min_item_ratings})"
        )

    if not keep.all():  # skips five 10M-row copies when nothing was removed
        user_codes, item_codes, values = user_codes[keep], item_codes[keep], values[keep]
        timestamps = None if timestamps is None else timestamps[keep]
    kept_users, users = _encode(user_codes)
    kept_items, items = _encode(item_codes)
    ratings = values.astype(np.float32)
    ts = None if timestamps is None else timestamps.astype(np.int64)
    order = _order_by_user_time_item(users, ts, items, len(kept_items))
    return RatingData(
        users=users[order],
        items=items[order],
        ratings=ratings[order],
        n_users=len(kept_users),
        n_items=len(kept_items),
        timestamps=None if ts is None else ts[order],
        implicit=implicit,
        rating_scale=rating_scale,
        user_ids=user_ids[kept_users],
        item_ids=item_ids[kept_items],
        name=name,
        notes=tuple(notebook.notes),
    )


def _encode(raw_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted distinct ids, index of each row's id among them), like ``np.unique``.

    Small non-negative integer ids (every MovieLens file) take a counting path that
    is linear in the number of rows; ``np.unique`` sorts, which for the 10M rows of
    ml-10m costs several seconds per column.
    """
    if raw_ids.dtype.kind in "iu" and len(raw_ids):
        low, high = int(raw_ids.min()), int(raw_ids.max())
        if low >= 0 and high < max(4 * len(raw_ids), 1 << 20):
            present = np.zeros(high + 1, dtype=bool)
            present[raw_ids] = True
            index_of = np.cumsum(present) - 1
            return np.flatnonzero(present).astype(raw_ids.dtype), index_of[raw_ids]
    distinct, codes = np.unique(raw_ids, return_inverse=True)
    return distinct, codes.astype(np.int64).reshape(-1)


def _latest_per_pair(
    user_codes: np.ndarray, item_codes: np.ndarray, timestamps: np.ndarray | None, n_items: int
) -> np.ndarray:
    """Mask keeping one row per (user, item): the latest timestamp, then the last in file order."""
    pair = user_codes * n_items + item_codes
    sorted_pairs = np.sort(pair)
    repeated = sorted_pairs[1:][sorted_pairs[1:] == sorted_pairs[:-1]]
    keep = np.ones(len(pair), dtype=bool)
    if len(repeated) == 0:  # the common case, decided with one sort
        return keep
    repeated = np.unique(repeated)  # few values: a binary search beats np.isin's full sort
    position = np.minimum(np.searchsorted(repeated, pair), len(repeated) - 1)
    involved = np.flatnonzero(repeated[position] == pair)
    ts = np.zeros(len(involved), dtype=np.int64) if timestamps is None else timestamps[involved]
    order = np.lexsort((involved, ts, pair[involved]))
    sorted_pair = pair[involved][order]
    last_of_group = np.ones(len(involved), dtype=bool)
    last_of_group[:-1] = sorted_pair[:-1] != sorted_pair[1:]
    keep[involved[order[~last_of_group]]] = False
    return keep


def _order_by_user_time_item(
    users: np.ndarray, timestamps: np.ndarray | None, items: np.ndarray, n_items: int
) -> np.ndarray:
    """Row order by (user, timestamp, item); after deduplication this key is unique."""
    # Stable sort is timsort here: it is fast on files already sorted by user.
    if timestamps is None:
        return np.argsort(users * n_items + items, kind="stable")
    t_min, t_max = (int(timestamps.min()), int(timestamps.max())) if len(timestamps) else (0, 0)
    n_users = int(users.max()) + 1 if len(users) else 0
    if n_users * (t_max - t_min + 1) * n_items < 2**63:
        # One argsort of a combined key is several times faster than np.lexsort.
        key = (users * (t_max - t_min + 1) + (timestamps - t_min)) * n_items + items
        return np.argsort(key, kind="stable")
    return np.lexsort((items, timestamps, users))


def _to_implicit(
    values: np.ndarray,
    keep: np.ndarray,
    threshold: float | None,
    keep_negatives: bool,
    notebook: NoteBook,
) -> tuple[np.ndarray, np.ndarray]:
    if threshold is None:
        non_interactions = keep & (values <= 0)
        if non_interactions.any():
            notebook.record(
                f"{int(non_interactions.sum())} rows with feedback value <= 0 dropped "
                "as non-interactions"
            )
        return np.ones_like(values), keep & ~non_interactions
    positive = values >= threshold
    below = keep & ~positive
    if keep_negatives:
        notebook.record(
            f"binarized at {threshold:g}: {int((keep & positive).sum())} positives, "
            f"{int(below.sum())} rows below the threshold kept as negatives (0.0)"
        )
        return positive.astype(np.float64), keep
    notebook.record(
        f"binarized at {threshold:g}: {int((keep & positive).sum())} positives kept, "
        f"{int(below.sum())} rows below the threshold dropped"
    )
    return np.ones_like(values), keep & positive


def _filter_to_fixed_point(
    user_codes: np.ndarray,
    item_codes: np.ndarray,
    keep: np.ndarray,
    min_user_ratings: int,
    min_item_ratings: int,
    notebook: NoteBook,
) -> np.ndarray:
    if min_user_ratings <= 1 and min_item_ratings <= 1:
        return keep  # every user and item that is present has a row
    keep = keep.copy()
    before = int(keep.sum())
    rounds = 0
    while True:
        per_user = np.bincount(user_codes[keep], minlength=int(user_codes.max()) + 1)
        per_item = np.bincount(item_codes[keep], minlength=int(item_codes.max()) + 1)
        too_few = keep & (
            (per_user[user_codes] < min_user_ratings) | (per_item[item_codes] < min_item_ratings)
        )
        if not too_few.any():
            break
        keep &= ~too_few
        rounds += 1
    if rounds:
        notebook.record(
            f"filtering (min_user_ratings={min_user_ratings}, "
            f"min_item_ratings={min_item_ratings}) removed {before - int(keep.sum())} rows "
            f"in {rounds} rounds"
        )
    return keep
