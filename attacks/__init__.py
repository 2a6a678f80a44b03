"""Membership inference, update inference and privacy audits (model-agnostic).

Depends only on numpy and scipy (matplotlib for plots, imported lazily).
Models enter only through callables and arrays passed in; nothing here imports
torch or :mod:`secure_fedrec`.

Convention: membership labels are 1 for members; higher scores mean "more
likely a member" (or "more likely rated").
"""

from ._validation import check_random_state
from .audit import (
    AuditResult,
    CanaryRatings,
    CanaryUsers,
    PrivacyViolationWarning,
    audit_clopper_pearson,
    audit_delta,
    audit_one_run,
    clopper_pearson_interval,
    count_correct_guesses,
    draw_canary_inclusion,
    epsilon_lower_bound_clopper_pearson,
    guesses_from_scores,
    make_canary_ratings,
    make_canary_users,
    one_run_epsilon_lower_bound,
    one_run_p_value,
)
from .inference import (
    AggregateObservation,
    ClientUpdateObservation,
    ItemInferenceResult,
    UpdateInferenceAttack,
    evaluate_item_inference,
    server_observation,
)
from .membership import (
    RMIA,
    CalibratedLossAttack,
    LiRA,
    LossThresholdAttack,
    RecommenderMembershipAttack,
    ShadowStatistics,
    interaction_item_vectors,
    logit_confidence,
    popular_item_lists,
    top_k_excluding,
    train_shadow_models,
    user_membership_features,
)
from .metrics import (
    ConfidenceInterval,
    MembershipMetrics,
    RocCurve,
    attacker_advantage,
    bootstrap_interval,
    evaluate_membership,
    plot_roc,
    roc_auc,
    roc_curve,
    tpr_at_fpr,
)

__all__ = [
    "RMIA",
    "AggregateObservation",
    "AuditResult",
    "CalibratedLossAttack",
    "CanaryRatings",
    "CanaryUsers",
    "ClientUpdateObservation",
    "ConfidenceInterval",
    "ItemInferenceResult",
    "LiRA",
    "LossThresholdAttack",
    "MembershipMetrics",
    "PrivacyViolationWarning",
    "RecommenderMembershipAttack",
    "RocCurve",
    "ShadowStatistics",
    "UpdateInferenceAttack",
    "attacker_advantage",
    "audit_clopper_pearson",
    "audit_delta",
    "audit_one_run",
    "bootstrap_interval",
    "check_random_state",
    "clopper_pearson_interval",
    "count_correct_guesses",
    "draw_canary_inclusion",
    "epsilon_lower_bound_clopper_pearson",
    "evaluate_item_inference",
    "evaluate_membership",
    "guesses_from_scores",
    "interaction_item_vectors",
    "logit_confidence",
    "make_canary_ratings",
    "make_canary_users",
    "one_run_epsilon_lower_bound",
    "one_run_p_value",
    "plot_roc",
    "popular_item_lists",
    "roc_auc",
    "roc_curve",
    "server_observation",
    "top_k_excluding",
    "tpr_at_fpr",
    "train_shadow_models",
    "user_membership_features",
]
