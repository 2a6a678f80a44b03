"""Privacy plans: the closed set of mechanisms a run can use (see :mod:`.base` for the table).

:func:`build_privacy_plan` picks the plan for ``privacy.unit`` and ``privacy.noise``; each
plan knows how clients train, the aggregation layers on each side of the secure sum,
its accountant and its budget guard.
"""

from __future__ import annotations

from ..config import RunConfig
from .base import Population, PrivacyPlan
from .none import NoPrivacy
from .record import RecordLocal
from .record_distributed import RecordDistributed
from .user import AdaptiveClipping, UserCentral, UserDistributed, UserLevelPlan

__all__ = ["AdaptiveClipping", "NoPrivacy", "Population", "PrivacyPlan", "RecordDistributed", "RecordLocal",
           "UserCentral", "UserDistributed", "UserLevelPlan", "build_privacy_plan"]


def build_privacy_plan(config: RunConfig, population: Population) -> PrivacyPlan:
    """The run's plan: one type per (unit, noise placement)."""
    p = config.privacy
    if p.unit == "none":
        return NoPrivacy(config, population)
    if p.unit == "record":
        return RecordLocal(config, population) if p.noise == "local" else RecordDistributed(config, population)
    if p.noise == "central":
        return UserCentral(config, population)
    return UserDistributed(config, population)
