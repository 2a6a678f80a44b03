"""Membership inference: rating-level (threshold, calibrated, LiRA, RMIA) and
user-level against recommenders (Zhang et al. 2021)."""

from .base import ShadowStatistics, TrainAndScore, logit_confidence, train_shadow_models
from .lira import RMIA, LiRA
from .recsys import (
    RecommenderMembershipAttack,
    interaction_item_vectors,
    popular_item_lists,
    top_k_excluding,
    user_membership_features,
)
from .threshold import CalibratedLossAttack, LossThresholdAttack

__all__ = [
    "RMIA",
    "CalibratedLossAttack",
    "LiRA",
    "LossThresholdAttack",
    "RecommenderMembershipAttack",
    "ShadowStatistics",
    "TrainAndScore",
    "interaction_item_vectors",
    "logit_confidence",
    "popular_item_lists",
    "top_k_excluding",
    "train_shadow_models",
    "user_membership_features",
]
