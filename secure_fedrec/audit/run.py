"""One end-to-end audit: train with canaries, run the attacks, write audit.json and plots.

Users are split when the user-level attack runs: half are clients of the
audited federated run (members), a quarter never take part (the target's
non-member users), and a quarter are the attacker's own data for its shadow
recommender. Otherwise every user is a client.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from attacks import (
    PrivacyViolationWarning,
    audit_delta,
    audit_one_run,
    evaluate_membership,
)

from ..config import RunConfig, config_to_dict, dump_toml
from ..data.dataset import Split
from ..engines.inprocess import FederatedTrainer, RoundMetrics
from ..runner import environment, load_data, make_split, write_json_atomic
from .canaries import CanaryPlan, insert_canaries, score_canaries
from .membership import (
    MembershipOutcome,
    lira_attack,
    loss_threshold_attack,
    rating_population,
    user_level_attack,
)
from .plots import plot_epsilon_audit, write_roc_plots
from .spec import AuditSpec
from .updates import update_inference

__all__ = ["AuditDeltaWarning", "audit_config", "guess_counts", "partition_users", "run_audit"]


class AuditDeltaWarning(UserWarning):
    """The run's δ is too large for its one-run audit to certify anything about ε."""


def audit_config(config: RunConfig, spec: AuditSpec, num_users: int) -> tuple[RunConfig, float]:
    """The run configuration to train with, and the δ to audit at.

    With m canaries the one-run bound is blind once m·δ nears the test level
    (``attacks.audit_delta``), and the accountant's default δ = 1/N^1.1 is far too large
    for that (7.8e-4 on ml-latest-small against 2.5e-6 for 1000 canaries at 95 %). So when
    ``privacy.delta`` is not set, a DP run is trained *and* audited at
    min(1/N^1.1, audit_delta(m)); the accountant then calibrates its noise to that δ. An
    explicit ``privacy.delta`` is respected but flagged (``delta_too_large``, a warning) when
    it exceeds audit_delta(m). A run without DP is audited at audit_delta(m) too.
    """
    from ..privacy.calibration import default_delta

    enabled = config.privacy.unit != "none"
    if not spec.canaries:
        return config, (config.privacy.delta or default_delta(num_users)) if enabled else 0.0
    wanted = audit_delta(spec.canaries, spec.confidence)
    if not enabled:
        return config, wanted
    if config.privacy.delta is None:
        delta = min(default_delta(num_users), wanted)
        return dataclasses.replace(config, privacy=dataclasses.replace(config.privacy, delta=delta)), delta
    if config.privacy.delta > wanted:
        warnings.warn(f"privacy.delta = {config.privacy.delta:g} is too large to audit with {spec.canaries} "
                      f"canaries at {spec.confidence:.0%} confidence (the bound degrades above "
                      f"{wanted:.3g}); unset it to let the audit choose", AuditDeltaWarning, stacklevel=3)
    return config, config.privacy.delta


def guess_counts(num_canaries: int) -> tuple[list[int], list[int]]:
    """The (num_positive, num_negative) guess counts tried (Bonferroni-corrected by audit_one_run)."""
    ks = sorted({max(1, num_canaries // d) for d in (20, 10, 4)})
    return ks, [0, *ks]


def partition_users(users: np.ndarray, *, user_attack: bool, seed: int) -> dict[str, np.ndarray]:
    """members / non-members / shadow users (the last two empty without the user-level attack)."""
    if not user_attack:
        return {"members": np.sort(users), "nonmembers": users[:0], "shadow": users[:0]}
    order = np.random.default_rng([seed, 0x5EED]).permutation(users)
    half, three_quarters = len(order) // 2, (3 * len(order)) // 4
    return {"members": np.sort(order[:half]), "nonmembers": np.sort(order[half:three_quarters]),
            "shadow": np.sort(order[three_quarters:])}


def _subset_users(split: Split, keep: np.ndarray) -> Split:
    mask = np.zeros(split.train.n_users, dtype=bool)
    mask[keep] = True
    return Split(split.train.subset(mask[split.train.users]), split.test.subset(mask[split.test.users]),
                 split.protocol, split.seed)


def _canary_audit(plan: CanaryPlan, trainer: FederatedTrainer, initial: dict, spec: AuditSpec,
                  epsilon: float, delta: float, evaluation: dict) -> tuple[dict[str, Any], dict]:
    scores = score_canaries(plan, trainer.model, initial)
    included = plan.canaries.included
    positives, negatives = guess_counts(len(included))
    # Several scores are tried; each audit runs at the Bonferroni level so the largest ε̂ keeps `confidence`.
    per_score_confidence = 1.0 - (1.0 - spec.confidence) / len(scores)
    audits, curves, best = {}, {}, None
    for name, s in scores.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PrivacyViolationWarning)  # reported once, below, for the best
            result = audit_one_run(s, included, num_positive=positives, num_negative=negatives,
                                   epsilon_claimed=epsilon, delta=delta, confidence=per_score_confidence)
        entry = {"epsilon_hat": result.epsilon_lower_bound, "confidence": result.confidence,
                 "summary": result.summary(), **result.details}
        if included.any() and not included.all():
            m = evaluate_membership(included, s, **evaluation)
            entry["membership"] = m.as_dict()
            curves[f"canary_{name}"] = m.roc
        audits[name] = entry
        if best is None or result.epsilon_lower_bound > best[1].epsilon_lower_bound:
            best = (name, result)
    name, result = best
    violation = math.isfinite(epsilon) and result.epsilon_lower_bound > epsilon
    if violation:
        warnings.warn(f"PRIVACY VIOLATION: one-run audit eps_hat={result.epsilon_lower_bound:.3f} > "
                      f"accountant eps={epsilon:.3f} ({name} score)", PrivacyViolationWarning, stacklevel=2)
    summary = {
        "kind": plan.kind, "num_canaries": len(included), "num_included": int(included.sum()),
        "epsilon": epsilon, "delta": delta, "confidence": spec.confidence,
        "epsilon_hat": result.epsilon_lower_bound, "best_score": name,
        "tightness": (result.epsilon_lower_bound / epsilon if math.isfinite(epsilon) and epsilon > 0 else None),
        "violation": violation, "scores": audits,
        # The δ term of the one-run p-value is 2·m·δ·(…): above audit_delta(m) it can eat the test
        # level whatever the attack does (see audit_config).
        "delta_too_large": delta > audit_delta(len(included), spec.confidence) * (1 + 1e-9),
        "guesses": {"num_positive": positives, "num_negative": negatives},
    }
    return summary, curves


def run_audit(
    config: RunConfig, spec: AuditSpec, out_dir: str | Path | None = None, *,
    on_round: Callable[[RoundMetrics], None] | None = None, log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train the configured federated run with canaries, attack it, and return (and write) audit.json."""
    started = time.perf_counter()
    say = log or (lambda _msg: None)
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    seed = config.seed
    data = load_data(config)
    split = make_split(config, data)
    users = np.flatnonzero(split.train.ratings_per_user() > 0)
    if spec.max_users and spec.max_users < len(users):
        users = np.sort(np.random.default_rng([seed, 0x05B]).choice(users, spec.max_users, replace=False))
        split = _subset_users(split, users)
    groups = partition_users(users, user_attack="user" in spec.attacks, seed=seed)
    target_split = _subset_users(split, groups["members"])
    plan = None
    train_split = target_split
    if spec.canaries:
        plan = insert_canaries(target_split, kind=spec.canary_kind, count=spec.canaries,
                               member_users=groups["members"], rating=spec.canary_rating,
                               items_per_user=spec.canary_items_per_user, seed=seed)
        train_split = plan.split

    config, audit_delta_value = audit_config(config, spec, train_split.train.n_users)
    if out is not None:  # the configuration actually trained (δ included), to reproduce the run
        (out / "config.toml").write_text(dump_toml(config_to_dict(config)), encoding="utf-8")
    say(f"training the federated model on {len(groups['members'])} users"
        + (f" with {spec.canaries} canary {spec.canary_kind} ({int(plan.canaries.included.sum())} included)" if plan else ""))
    trainer = FederatedTrainer(config, train_split)
    initial = trainer.model.shared_state()
    train_started = time.perf_counter()
    history = trainer.run(on_round=on_round)
    train_seconds = time.perf_counter() - train_started
    privacy = trainer.privacy.summary()
    epsilon = float(privacy.get("epsilon", math.inf))
    if not trainer.privacy.enabled:
        epsilon = math.inf
    delta = float(privacy["delta"]) if trainer.privacy.enabled else audit_delta_value

    evaluation = {"fpr_levels": spec.fpr_levels, "n_bootstrap": spec.n_bootstrap,
                  "confidence": spec.confidence, "random_state": seed}
    attacks_out: dict[str, Any] = {}
    curves: dict = {}
    timings: dict[str, float] = {"training": train_seconds}
    canary_summary = None
    if plan is not None:
        say("one-run audit on the canaries")
        t0 = time.perf_counter()
        canary_summary, canary_curves = _canary_audit(plan, trainer, initial, spec, epsilon, delta,
                                                      {k: v for k, v in evaluation.items()})
        curves.update(canary_curves)
        timings["canary_audit"] = time.perf_counter() - t0

    def record(outcome: MembershipOutcome) -> None:
        attacks_out[outcome.name] = outcome.as_dict()
        curves[outcome.name] = outcome.metrics.roc

    eval_kwargs = {"fpr_levels": spec.fpr_levels, "n_bootstrap": spec.n_bootstrap,
                   "confidence": spec.confidence, "seed": seed}
    population = None
    if "loss" in spec.attacks or "lira" in spec.attacks:
        population = rating_population(target_split.train, target_split.test, groups["members"],
                                       spec.member_samples, seed)
    if "loss" in spec.attacks:
        say("rating-level loss-threshold attack")
        t0 = time.perf_counter()
        record(loss_threshold_attack(trainer.model, population, **eval_kwargs))
        timings["loss"] = time.perf_counter() - t0
    if "lira" in spec.attacks:
        say(f"rating-level LiRA ({spec.shadow_models} centrally trained shadow models)")
        t0 = time.perf_counter()
        for outcome in lira_attack(config, trainer.model, target_split, target_split.train, population,
                                   n_shadow=spec.shadow_models, shadow_epochs=spec.shadow_epochs,
                                   **eval_kwargs):
            record(outcome)
        timings["lira"] = time.perf_counter() - t0
    if "user" in spec.attacks:
        say("user-level membership attack (Zhang et al.)")
        t0 = time.perf_counter()
        for outcome in user_level_attack(config, trainer.model, split, member_users=groups["members"],
                                         nonmember_users=groups["nonmembers"], shadow_users=groups["shadow"],
                                         k=spec.recommend_k, shadow_epochs=spec.shadow_epochs,
                                         shadow_training=spec.user_shadow, **eval_kwargs):
            record(outcome)
        timings["user"] = time.perf_counter() - t0
    if "update" in spec.attacks:
        say("update inference (plaintext update vs secure-aggregation sums)")
        t0 = time.perf_counter()
        attacks_out["update"] = update_inference(trainer, targets=spec.update_targets,
                                                 cohort_sizes=spec.cohort_sizes, seed=seed)
        timings["update"] = time.perf_counter() - t0

    result: dict[str, Any] = {
        "violation": bool(canary_summary and canary_summary["violation"]),
        "config": config_to_dict(config),
        "audit": spec.as_dict(),
        "seed": seed,
        "model": config.model_name,
        "protocol": config.aggregation.protocol,
        "dataset": data.stats(),
        "users": {k: len(v) for k, v in groups.items()},
        "privacy": privacy,
        "epsilon": epsilon,
        "delta": delta,
        "training": {"rounds": len(history), "final": dict(history[-1].evaluation) if history else {},
                     "train_loss": history[-1].train_loss if history else None,
                     "stopped_early": trainer.privacy.stopped_reason},
        "canary_audit": canary_summary,
        "attacks": attacks_out,
        "timings_seconds": timings,
        "wall_time_seconds": time.perf_counter() - started,
        "environment": environment(),
    }
    if out is not None:
        result["plots"] = [p.name for p in write_roc_plots(curves, out)]
        if canary_summary is not None:
            label = "no DP" if not math.isfinite(epsilon) else f"ε={epsilon:.3g}"
            plot_epsilon_audit([(epsilon, canary_summary["epsilon_hat"], label)], out / "epsilon.png")
            result["plots"].append("epsilon.png")
        write_json_atomic(out / "audit.json", result)
    return result
