"""The ``[audit]`` table of an audit configuration: what to attack and how hard.

The run configuration (``secure_fedrec.config``) validates its keys strictly and
knows nothing about audits, so an audit file is a run configuration plus one
``[audit]`` table that is split off here and validated on its own.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..config import ConfigError

__all__ = ["ATTACKS", "AuditSpec", "AuditSpecError", "spec_from_dict", "split_audit_table"]

#: attacks an audit can run, in the order they run
ATTACKS = ("loss", "lira", "user", "update")
CANARY_KINDS = ("auto", "clients", "gradients", "ratings", "users")
CANARY_SPACES = ("auto", "isolated", "model")
PARTICIPATION = ("auto", "sampled", "known", "revealed")
USER_SHADOWS = ("federated", "central")


class AuditSpecError(ConfigError):
    """An ``[audit]`` key or value that is not valid (a ConfigError, so the CLI reports it cleanly)."""


@dataclass(frozen=True)
class AuditSpec:
    """How an audit is run. Every field has a default; see ``docs/attacks.md``."""

    canaries: int = 500  # one-run audit canaries (0: no canary audit)
    # "clients" (random directions, user level), "gradients" (crafted examples inside record-level
    # DP-SGD under secure aggregation), "ratings", "users"; "auto": gradients for record level with
    # distributed noise, ratings for record level with local noise, clients otherwise
    canary_kind: str = "auto"
    # "isolated": each canary client / gradient canary alone on a coordinate of a phantom item
    # (independent trials: held-out Clopper-Pearson and f-DP bounds hold); "model": random
    # directions over the model's own coordinates (one-run bounds only); "auto": isolated where
    # the run allows it (audit/isolation.py)
    canary_space: str = "auto"
    canary_norm: float | None = None  # canary clients' update norm; None: the run's clip norm
    # Who knows which canary client took part in which round. "sampled": included canaries take
    # part by the auditor's Poisson coin, which no score uses (the amplified claim: an observer who
    # does not know the sample). "known": every canary, included or not, takes part in
    # `rounds_taken_part` rounds fixed in advance (an excluded one uploads zero) and the scores
    # use those rounds (the claim privacy.participation_known: the server that picks the sample).
    # "revealed": every canary, included or not, takes part by its own Poisson coin at the run's
    # rate (an excluded one uploads zero) and the scores use those rounds (the claim
    # privacy.participation_revealed, proven for every observer; distributed noise, server sampling).
    # "auto": "revealed" where that figure is the run's ε (privacy.calibrate_to = "proven", the
    # default, under server sampling with distributed noise) and the canaries allow it, else "sampled".
    participation: str = "auto"
    rounds_taken_part: int = 1
    control: bool = True  # also audit the same run without DP (the no-DP twin)
    ceiling_repeats: int = 5  # simulations of an ideal mechanism for the ceiling (0: none)
    canary_rating: float | None = None  # None: the lowest rating of the scale (1.0 for implicit)
    canary_items_per_user: int = 10  # canary users only
    attacks: tuple[str, ...] = ATTACKS
    shadow_models: int = 8  # LiRA shadows (trained centrally)
    shadow_epochs: int = 20  # centralized epochs per LiRA shadow (and per user-level shadow if "central")
    member_samples: int = 2000  # per class, for the rating-level attacks (LiRA population)
    fpr_levels: tuple[float, ...] = (0.01, 0.001, 0.0)
    n_bootstrap: int = 200
    confidence: float = 0.95
    update_targets: int = 20  # clients whose items the update-inference attack tries to recover
    cohort_sizes: tuple[int, ...] = ()  # aggregate sizes for update inference; () = 2, 10, the round's
    recommend_k: int = 20  # length of the recommended lists the user-level attack sees
    user_shadow: str = "federated"  # user-level shadow recommender: "federated" (like the target) or "central"
    max_users: int = 0  # audit on a random subset of this many users (0: all)

    def __post_init__(self) -> None:
        # Every number has a finite range: an audit file is input like any other.
        _check(0 <= self.canaries <= 1_000_000, "audit.canaries", "must be in [0, 1000000]")
        _check(self.canary_kind in CANARY_KINDS, "audit.canary_kind",
               f"must be one of {', '.join(map(repr, CANARY_KINDS))}; got {self.canary_kind!r}")
        _check(self.canary_space in CANARY_SPACES, "audit.canary_space",
               f"must be one of {', '.join(map(repr, CANARY_SPACES))}; got {self.canary_space!r}")
        _check(self.participation in PARTICIPATION, "audit.participation",
               f"must be one of {', '.join(map(repr, PARTICIPATION))}; got {self.participation!r}")
        _check(1 <= self.rounds_taken_part <= 10_000, "audit.rounds_taken_part", "must be in [1, 10000]")
        _check(1 <= self.canary_items_per_user <= 1000, "audit.canary_items_per_user", "must be in [1, 1000]")
        _check(self.canary_norm is None or 0 < self.canary_norm <= 1e6, "audit.canary_norm", "must be in (0, 1e6]")
        _check(self.canary_rating is None or -1e6 <= self.canary_rating <= 1e6, "audit.canary_rating",
               "must be a finite number in [-1e6, 1e6]")
        _check(0 <= self.ceiling_repeats <= 100, "audit.ceiling_repeats", "must be in [0, 100]")
        unknown = [a for a in self.attacks if a not in ATTACKS]
        _check(not unknown, "audit.attacks",
               f"has unknown attack {unknown[0] if unknown else ''!r}; valid: {', '.join(ATTACKS)}")
        _check(len(set(self.attacks)) == len(self.attacks), "audit.attacks", "lists an attack twice")
        _check(2 <= self.shadow_models <= 256, "audit.shadow_models",
               "must be in [2, 256] (LiRA needs IN and OUT shadows)")
        _check(1 <= self.shadow_epochs <= 10_000, "audit.shadow_epochs", "must be in [1, 10000]")
        _check(10 <= self.member_samples <= 10_000_000, "audit.member_samples", "must be in [10, 10000000]")
        _check(len(self.fpr_levels) <= 20, "audit.fpr_levels", "must list at most 20 levels")
        _check(all(0.0 <= f < 1.0 for f in self.fpr_levels), "audit.fpr_levels", "must be in [0, 1)")
        _check(1 <= self.n_bootstrap <= 100_000, "audit.n_bootstrap", "must be in [1, 100000]")
        _check(0.0 < self.confidence < 1.0, "audit.confidence", "must be in (0, 1)")
        _check(1 <= self.update_targets <= 100_000, "audit.update_targets", "must be in [1, 100000]")
        _check(len(self.cohort_sizes) <= 20, "audit.cohort_sizes", "must list at most 20 sizes")
        _check(all(1 <= n <= 100_000 for n in self.cohort_sizes), "audit.cohort_sizes", "must be in [1, 100000]")
        _check(1 <= self.recommend_k <= 10_000, "audit.recommend_k", "must be in [1, 10000]")
        _check(self.user_shadow in USER_SHADOWS, "audit.user_shadow",
               f"must be one of {', '.join(map(repr, USER_SHADOWS))}; got {self.user_shadow!r}")
        _check(self.max_users == 0 or 8 <= self.max_users <= 100_000_000, "audit.max_users",
               "must be 0 (all) or in [8, 100000000]")

    def as_dict(self) -> dict[str, Any]:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
                for f in dataclasses.fields(self)}


def _check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise AuditSpecError(f"{key} {message}")


_INT_KEYS = {"canaries", "canary_items_per_user", "shadow_models", "shadow_epochs", "member_samples",
             "n_bootstrap", "update_targets", "recommend_k", "max_users", "ceiling_repeats",
             "rounds_taken_part"}
_FLOAT_KEYS = {"confidence"}


def spec_from_dict(raw: dict[str, Any]) -> AuditSpec:
    """Validate an ``[audit]`` table (types and values) and build the spec."""
    if not isinstance(raw, dict):
        raise AuditSpecError("audit must be a table")
    known = {f.name for f in dataclasses.fields(AuditSpec)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise AuditSpecError(f"unknown key audit.{unknown[0]}; valid keys here: {', '.join(sorted(known))}")
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        name = f"audit.{key}"
        if key in _INT_KEYS:
            _check(isinstance(value, int) and not isinstance(value, bool), name, f"must be an integer; got {value!r}")
        elif key in _FLOAT_KEYS:
            _check(isinstance(value, (int, float)) and not isinstance(value, bool), name,
                   f"must be a number; got {value!r}")
            value = float(value)
        elif key == "control":
            _check(isinstance(value, bool), name, f"must be true or false; got {value!r}")
        elif key in ("canary_rating", "canary_norm"):
            _check(value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)), name,
                   f"must be a number; got {value!r}")
            value = None if value is None else float(value)
        elif key in ("canary_kind", "canary_space", "user_shadow", "participation"):
            _check(isinstance(value, str), name, f"must be a string; got {value!r}")
        elif key == "attacks":
            if isinstance(value, str):  # --set audit.attacks=loss,lira
                value = [a.strip() for a in value.split(",") if a.strip()]
            _check(isinstance(value, (list, tuple)) and all(isinstance(a, str) for a in value), name,
                   f"must be a list of attack names; got {value!r}")
            value = tuple(value)
        elif key == "fpr_levels":
            _check(isinstance(value, (list, tuple)) and all(
                isinstance(f, (int, float)) and not isinstance(f, bool) for f in value), name,
                f"must be a list of numbers; got {value!r}")
            value = tuple(float(f) for f in value)
        elif key == "cohort_sizes":
            _check(isinstance(value, (list, tuple)) and all(
                isinstance(n, int) and not isinstance(n, bool) for n in value), name,
                f"must be a list of integers; got {value!r}")
            value = tuple(value)
        kwargs[key] = value
    return AuditSpec(**kwargs)


def split_audit_table(raw: dict[str, Any]) -> tuple[dict[str, Any], AuditSpec]:
    """``(run configuration table, audit spec)`` from a whole audit file's table."""
    run = dict(raw)
    return run, spec_from_dict(run.pop("audit", {}))
