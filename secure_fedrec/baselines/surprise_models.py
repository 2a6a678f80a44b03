"""Surprise's SVD, SVD++ and BaselineOnly trained and evaluated on our split.

Surprise (scikit-surprise) is an optional dependency (the ``benchmarks``
extra): it is imported only when one of these is asked for, and its absence is
a clear error rather than an import failure of the package.
"""

from __future__ import annotations

import numpy as np

from ..data.dataset import RatingData

__all__ = ["SURPRISE_MODELS", "SurpriseModel"]

#: our name -> Surprise class name (defaults of Surprise 1.1)
SURPRISE_MODELS = {"svd": "SVD", "svd++": "SVDpp", "baseline-only": "BaselineOnly"}


class SurpriseModel:
    """A Surprise algorithm fitted on exactly our training ratings (same indices, same scale)."""

    def __init__(self, name: str, seed: int = 0) -> None:
        if name not in SURPRISE_MODELS:
            raise ValueError(f"unknown Surprise model {name!r}; choose one of {', '.join(SURPRISE_MODELS)}")
        self.name, self.seed = name, seed

    def fit(self, train: RatingData) -> SurpriseModel:
        try:
            import pandas as pd
            import surprise
        except ImportError:  # pragma: no cover - depends on the installation
            raise RuntimeError("the Surprise baselines need scikit-surprise: "
                               "pip install -e '.[benchmarks]'") from None
        frame = pd.DataFrame({"user": train.users, "item": train.items,
                              "rating": train.ratings.astype(np.float64)})
        reader = surprise.Reader(rating_scale=train.rating_scale)
        trainset = surprise.Dataset.load_from_df(frame, reader).build_full_trainset()
        cls = getattr(surprise, SURPRISE_MODELS[self.name])
        kwargs = {"verbose": False} if self.name == "baseline-only" else {"random_state": self.seed}
        if self.name == "svd++":
            kwargs["cache_ratings"] = True
        self.algo_ = cls(**kwargs).fit(trainset)
        return self

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        # Surprise keys ratings by raw id; ours are the indices themselves (unknown ids get μ + biases)
        return np.array([self.algo_.predict(u, i, clip=False).est
                         for u, i in zip(users.tolist(), items.tolist())])
