"""What a run starts from: the data set its configuration names, the train/test split, the model.

Kept free of the server's code (privacy plans, accountants), so that a Flower node that
only trains imports what training needs.
"""

from __future__ import annotations

from typing import Any

from .config import RunConfig, check_model_memory
from .data import holdout_split, leave_last_out, load_ratings, synthetic_ratings
from .data.dataset import RatingData, Split
from .models import FederatedModel, build_model

__all__ = ["build_model_for", "load_data", "make_split"]


def load_data(config: RunConfig) -> RatingData:
    d = config.data
    if d.source == "synthetic":
        s = d.synthetic
        return synthetic_ratings(
            n_users=s.n_users, n_items=s.n_items, rank=s.rank,
            mean_ratings_per_user=s.mean_ratings_per_user, noise_std=s.noise_std,
            seed=config.seed, implicit=d.implicit,
        )
    return load_ratings(
        d.source, d.format, implicit=d.implicit, binarize_threshold=d.binarize_threshold,
        min_user_ratings=d.min_user_ratings, min_item_ratings=d.min_item_ratings,
    )


def make_split(config: RunConfig, data: RatingData) -> Split:
    if config.split_protocol == "leave-last-out":
        return leave_last_out(data, seed=config.seed)
    return holdout_split(data, test_fraction=config.data.test_fraction, seed=config.seed)


def build_model_for(config: RunConfig, split: Split) -> FederatedModel:
    train = split.train
    check_model_memory(config, train.n_users, train.n_items)  # before a table is allocated
    kwargs: dict[str, Any] = {"init_std": config.model.init_std, "seed": config.seed}
    if config.model_name == "mf":
        kwargs["global_mean"] = float(train.ratings.mean()) if len(train) else 0.0
    else:
        kwargs["hidden"] = config.model.hidden
    return build_model(
        config.model_name, n_users=train.n_users, n_items=train.n_items, dim=config.model.dim, **kwargs
    )
