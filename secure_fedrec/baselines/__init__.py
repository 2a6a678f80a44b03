"""Reference recommenders that a federated model has to beat, evaluated on the run's own split.

Explicit ratings: the global mean, the item mean (plain and shrunk), the user
mean, and user + item biases fitted by alternating least squares (Surprise's
``BaselineOnly``). Implicit feedback: most-popular and item-kNN (cosine).
Surprise's SVD, SVD++ and BaselineOnly run on exactly the same split through
:mod:`secure_fedrec.baselines.surprise_models` when scikit-surprise is
installed (the ``benchmarks`` extra); nothing here needs it otherwise.
"""

from .explicit import BiasBaseline, GlobalMean, ItemMean, UserMean
from .implicit import ItemKNN, MostPopular
from .registry import BASELINES, baseline_names, evaluate_baseline

__all__ = [
    "BASELINES",
    "BiasBaseline",
    "GlobalMean",
    "ItemKNN",
    "ItemMean",
    "MostPopular",
    "UserMean",
    "baseline_names",
    "evaluate_baseline",
]
