"""The model a run configuration asks for, sized and initialized for its split."""

from __future__ import annotations

from typing import Any

from ..config import RunConfig
from ..data.dataset import Split
from . import build_model
from .base import FederatedModel

__all__ = ["build_model_for"]


def build_model_for(config: RunConfig, split: Split) -> FederatedModel:
    train = split.train
    kwargs: dict[str, Any] = {"init_std": config.model.init_std, "seed": config.seed,
                              "objective": config.loss_name}
    if config.model_name == "mf":
        implicit = config.data.implicit or train.implicit
        kwargs["task"] = "implicit" if implicit else "explicit"
        kwargs["global_mean"] = 0.0 if implicit else (float(train.ratings.mean()) if len(train) else 0.0)
        # explicit MF: clients solve their private rows in closed form (models/mf.py)
        kwargs["private_reg"] = 0.0 if implicit or not config.model.solve_private else config.training.reg
    else:
        kwargs["hidden"] = config.model.hidden
    return build_model(
        config.model_name, n_users=train.n_users, n_items=train.n_items, dim=config.model.dim, **kwargs
    )
