"""What a run starts from: the data set its configuration names, the train/test split, the model.

Kept free of the server's code (privacy plans, accountants), so that a Flower node that
only trains imports what training needs.
"""

from __future__ import annotations

from typing import Any

from .config import RunConfig, check_model_memory
from .data import (
    holdout_split,
    leave_last_out,
    load_ratings,
    require_test_ratings,
    synthetic_ratings,
)
from .data.dataset import DataError, RatingData, Split
from .data.loaders import SCALE_FROM_DATA
from .models import FederatedModel, build_model

__all__ = ["build_model_for", "load_data", "make_split", "resolve_config"]


def load_data(config: RunConfig) -> RatingData:
    """The configured data set; the last one loaded is kept, so that resolving a preset and
    then running the job reads the file once."""
    key = (repr(config.data), config.seed if config.data.source == "synthetic" else None)
    if _last_loaded and _last_loaded[0] == key:
        return _last_loaded[1]
    data = _load_data(config)
    _last_loaded[:] = [key, data]
    return data


_last_loaded: list[Any] = []


def resolve_config(config: RunConfig) -> RunConfig:
    """The configuration with its preset applied for the data it names (secure_fedrec/presets.py)."""
    from .presets import apply_preset

    return apply_preset(config, load_data(config))


def _load_data(config: RunConfig) -> RatingData:
    d = config.data
    if d.source == "synthetic":
        s = d.synthetic
        return synthetic_ratings(
            n_users=s.n_users, n_items=s.n_items, rank=s.rank,
            mean_ratings_per_user=s.mean_ratings_per_user, noise_std=s.noise_std,
            seed=config.seed, implicit=d.implicit,
        )
    scale = None if d.rating_min is None or d.rating_max is None else (d.rating_min, d.rating_max)
    data = load_ratings(
        d.source, d.format, implicit=d.implicit, binarize_threshold=d.binarize_threshold,
        min_user_ratings=d.min_user_ratings, min_item_ratings=d.min_item_ratings,
        user_col=d.user_col, item_col=d.item_col, rating_col=d.rating_col, timestamp_col=d.timestamp_col,
        rating_scale=scale,
    )
    if config.privacy.unit != "none" and any(note.startswith(SCALE_FROM_DATA) for note in data.notes):
        # the scale's midpoint is the model's starting global bias, shared with every client
        raise DataError(f"{data.name}: a private run needs the rating scale declared, not read from the "
                        "ratings (their min and max depend on the users): set data.rating_min and "
                        "data.rating_max")
    return data


def make_split(config: RunConfig, data: RatingData) -> Split:
    if config.split_protocol == "leave-last-out":
        split = leave_last_out(data, seed=config.seed, without_timestamps=config.data.without_timestamps)
    else:
        split = holdout_split(data, test_fraction=config.data.test_fraction, seed=config.seed)
    return require_test_ratings(split)


def build_model_for(config: RunConfig, split: Split) -> FederatedModel:
    train = split.train
    check_model_memory(config, train.n_users, train.n_items)  # before a table is allocated
    kwargs: dict[str, Any] = {"init_std": config.model.init_std, "seed": config.seed,
                              "objective": config.loss_name}
    if config.model_name == "mf":
        implicit = config.data.implicit or train.implicit
        kwargs["task"] = "implicit" if implicit else "explicit"
        # the rating scale's midpoint, not the training ratings' mean: a value every client may
        # hold without a privacy mechanism (the shared global bias then trains like any other
        # shared parameter; docs/privacy.md)
        kwargs["global_mean"] = 0.0 if implicit else sum(train.rating_scale) / 2.0
        # clients solve their private rows in closed form (models/mf.py): explicit MF, and iALS
        closed_form = config.model.solve_private and (not implicit or config.loss_name == "ials")
        kwargs["private_reg"] = config.training.reg if closed_form else 0.0
        kwargs["positive_weight"] = config.training.positive_weight
    else:
        kwargs["hidden"] = config.model.hidden
    return build_model(
        config.model_name, n_users=train.n_users, n_items=train.n_items, dim=config.model.dim, **kwargs
    )
