"""Rating data: the in-memory table, file loaders, a synthetic generator and splits.

Every decision taken while loading (duplicates, filtering, binarization, a
scale taken from the data) is logged on the ``secure_fedrec.data`` logger and
recorded in ``RatingData.notes``.
"""

from .dataset import DataError, RatingData, Split
from .loaders import FORMATS, detect_format, load_ratings, resolve_ratings_path
from .splits import holdout_split, leave_last_out, require_test_ratings
from .synthetic import SyntheticTruth, synthetic_ratings, synthetic_ratings_with_truth

__all__ = [
    "FORMATS",
    "DataError",
    "RatingData",
    "Split",
    "SyntheticTruth",
    "detect_format",
    "holdout_split",
    "leave_last_out",
    "load_ratings",
    "require_test_ratings",
    "resolve_ratings_path",
    "synthetic_ratings",
    "synthetic_ratings_with_truth",
]
