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
    CanaryDirections,
    DiracDirections,
    audit_delta,
    canary_client_scores,
    draw_canary_inclusion,
    round_scales,
)

from ..config import ConfigError, RunConfig, config_to_dict, dump_toml
from ..data.dataset import Split
from ..engines.inprocess import FederatedTrainer, RoundMetrics
from ..plans import RecordDistributed, UserCentral, UserDistributed, UserLevelPlan
from ..runner import environment, load_data, make_split, write_json_atomic
from .canaries import CanaryPlan, insert_canaries, score_canaries
from .canary_audit import audit_scores, canary_guess_counts, ceiling, one_shot_estimates
from .families import (
    ReleasedSharesClaim,
    mechanism_family,
    participation_known_claim,
    participation_known_family,
    participation_revealed_family,
    released_shares_claim,
)
from .hook import (
    CanaryClientHook,
    GradientCanaryHook,
    ReleaseRecorder,
    item_coordinates,
)
from .isolation import (
    ISOLATED_DESIGN,
    isolated_coordinates,
    item_width,
    phantom_items_needed,
    resolve_space,
    with_phantom_items,
)
from .membership import (
    MembershipOutcome,
    lira_attack,
    loss_threshold_attack,
    rating_population,
    user_level_attack,
)
from .plots import plot_epsilon_audit, write_roc_plots
from .spec import AuditSpec
from .twin import clip_without_noise, shares_without_noise
from .updates import update_inference

__all__ = [
    "AuditDeltaWarning",
    "AuditError",
    "audit_config",
    "participation_schedule",
    "partition_users",
    "resolve_kind",
    "resolve_participation",
    "revealed_participation_schedule",
    "run_audit",
]


class AuditDeltaWarning(UserWarning):
    """The run's δ is too large for its one-run audit to certify anything about ε."""


def audit_config(config: RunConfig, spec: AuditSpec, num_users: int, *,
                 isolated: bool = False) -> tuple[RunConfig, float]:
    """The run configuration to train with, and the δ to audit at.

    With m canaries the one-run bound is blind once m·δ nears the test level
    (``attacks.audit_delta``), and the accountant's default δ = min(1/(10N), N^-1.1)
    (``privacy.calibration.default_delta``) is far too large for that (1.5e-4 on ml-latest-small against 2.5e-6 for 1000 canaries at 95 %). So when
    ``privacy.delta`` is not set, a DP run is trained *and* audited at
    min(default δ, audit_delta(m)); the accountant then calibrates its noise to that δ. An
    explicit ``privacy.delta`` is respected but flagged (``delta_too_large``, a warning) when
    it exceeds audit_delta(m). A run without DP is audited at audit_delta(m) too.

    Isolated canaries (``isolated``) are independent trials: their held-out bound does not pay
    m·δ, so the run is trained and audited at its own δ, as it would run without an audit.
    """
    from ..privacy.calibration import default_delta

    enabled = config.privacy.unit != "none"
    if isolated and enabled:
        return config, config.privacy.delta or default_delta(num_users)
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


class AuditError(ConfigError):
    """The audit cannot run on this configuration (reported like a configuration error)."""


#: canary kinds scored from per-round projections of the release on a known direction
DIRECTION_KINDS = ("clients", "gradients")


def resolve_kind(kind: str, unit: str, noise: str = "central") -> str:
    """The canary kind an audit uses, refusing kinds the privacy unit cannot be held to.

    ``auto``: canary clients at user level and without DP, gradient canaries for record-level
    DP-SGD under secure aggregation (distributed noise), canary ratings for record-level
    DP-SGD on each client (its step has no canary hook).
    """
    if kind == "auto":
        if unit == "record":
            return "gradients" if noise == "distributed" else "ratings"
        return "clients"
    if kind == "gradients" and not (unit == "record" and noise == "distributed"):
        raise AuditError("audit.canary_kind = 'gradients' needs privacy.unit = 'record' with privacy.noise = "
                         "'distributed' (gradient canaries enter the record-level DP-SGD step of that mechanism)")
    if unit == "record" and kind not in ("ratings", "gradients"):
        raise AuditError(f"audit.canary_kind = {kind!r} adds whole clients or users, which a record-level "
                         "guarantee does not bound; use 'gradients', 'ratings' or 'auto' for a record-level run")
    return kind


def _included(kind: str, hook, plan: CanaryPlan | None) -> np.ndarray:
    if kind == "clients":
        return hook.included
    if kind == "gradients":
        return hook.members
    return plan.canaries.included


def _make_hook(kind: str, spec: AuditSpec, trainer: FederatedTrainer, plan: CanaryPlan | None, seed: int,
               *, included: np.ndarray | None = None, norm: float | None = None, first_phantom: int | None = None):
    """The run's auditor; ``first_phantom``: isolated canaries on the phantom items from that index."""
    isolated = (isolated_coordinates(trainer.layout, first_phantom, spec.canaries)
                if first_phantom is not None else None)
    if kind == "clients":
        m = spec.canaries
        inc = included if included is not None else draw_canary_inclusion(m, random_state=np.random.default_rng([seed, 0xC1]))
        q = trainer.privacy.population.sample_rate  # every client's chance to be sampled in a round
        directions = (DiracDirections(isolated, trainer.layout.size) if isolated is not None
                      else CanaryDirections(m, trainer.layout.size, seed))
        return CanaryClientHook(directions, inc, q,
                                first_id=trainer.split.train.n_users, seed=seed,
                                norm=norm if norm is not None else spec.canary_norm,
                                # isolated canaries under distributed noise: thousands of sybils
                                # that each added a share would bury the mechanism under their noise
                                withhold_noise=isolated is not None and isinstance(trainer.privacy, UserDistributed),
                                schedule=_schedule(spec, m, trainer.config.training.rounds, q, seed))
    if kind == "gradients":
        m = spec.canaries
        inc = included if included is not None else draw_canary_inclusion(m, random_state=np.random.default_rng([seed, 0xC1]))
        server = trainer.server
        population = trainer.population
        items = np.bincount(trainer.split.train.items, minlength=trainer.model.n_items)
        hook = GradientCanaryHook.design(
            trainer.layout, items, {int(u): int(server.examples[u]) for u in population}, included=inc,
            clip_norm=trainer.config.privacy.clip_norm, sample_rate=trainer.privacy.sample_rate, seed=seed,
            isolated=isolated)
        trainer.canary_gradients = hook  # the engine's hook into every client's DP-SGD step
        return hook
    c = plan.canaries
    items = [np.atleast_1d(i) for i in (c.items if kind == "users" else c.items[:, None])]
    return ReleaseRecorder(rows=[item_coordinates(trainer.layout, i) for i in items], owners=np.asarray(plan.users),
                           item_coordinates=item_coordinates(trainer.layout, np.arange(trainer.model.n_items)),
                           # the labelled simulation of the secure sum (record level, distributed noise)
                           # sends ring vectors with one noise share each: no plaintext server's view
                           plaintext=(trainer.config.aggregation.protocol == "plaintext"
                                      and trainer.server.pipeline.bits is None))


def participation_schedule(num_canaries: int, rounds: int, rounds_taken_part: int, seed: int) -> np.ndarray:
    """(rounds, canaries) bool: the rounds each canary takes part in, ``rounds_taken_part`` of
    them drawn uniformly at the auditor's seed, independent of the inclusion bits."""
    rng = np.random.default_rng([seed, 0x9A47])
    chosen = np.argsort(rng.random((num_canaries, rounds)), axis=1)[:, :rounds_taken_part]
    schedule = np.zeros((rounds, num_canaries), dtype=bool)
    schedule[chosen.T, np.arange(num_canaries)[None, :]] = True
    return schedule


def revealed_participation_schedule(num_canaries: int, rounds: int, sample_rate: float, seed: int) -> np.ndarray:
    """(rounds, canaries) bool: each canary takes part in each round by its own Poisson coin at
    ``sample_rate`` (the auditor's seed), independent of the inclusion bits."""
    rng = np.random.default_rng([seed, 0x9A48])
    return rng.random((rounds, num_canaries)) < sample_rate


def _schedule(spec: AuditSpec, num_canaries: int, rounds: int, sample_rate: float, seed: int) -> np.ndarray | None:
    """Who takes part when the observer knows it (``audit.participation``), or None."""
    if spec.participation == "known":
        return participation_schedule(num_canaries, rounds, spec.rounds_taken_part, seed)
    if spec.participation == "revealed":
        return revealed_participation_schedule(num_canaries, rounds, sample_rate, seed)
    return None


def resolve_participation(spec: AuditSpec, config: RunConfig, kind: str, isolated: bool) -> AuditSpec:
    """``audit.participation = "auto"``: "revealed" where the run's ε is the participation-revealed
    figure (user level, distributed noise, server sampling, ``privacy.calibrate_to`` not
    "amplified") and the canaries allow its audit (canary clients, isolated); "sampled" otherwise.
    So the default audit tests the run's own headline against the observer it is stated for."""
    if spec.participation != "auto":
        return spec
    p = config.privacy
    revealed = (p.unit == "user" and p.noise == "distributed" and not p.private_sampling
                and p.calibrate_to != "amplified" and kind == "clients" and isolated and bool(spec.canaries))
    return dataclasses.replace(spec, participation="revealed" if revealed else "sampled")


def _check_participation(spec: AuditSpec, config: RunConfig, kind: str, isolated: bool) -> None:
    """``audit.participation`` = "known" / "revealed": the guarantees against an observer who knows the sample."""
    if spec.participation == "sampled" or not spec.canaries:
        return
    problems = []
    if spec.participation == "revealed" and not (config.privacy.unit == "user" and config.privacy.noise == "distributed"):
        problems.append("needs privacy.unit = 'user' and privacy.noise = 'distributed' (the participation-revealed "
                        "figure is the server-sampled distributed mechanism's)")
    if config.privacy.unit != "user":
        problems.append("needs privacy.unit = 'user' (participation_known is a user-level guarantee)")
    if kind != "clients":
        problems.append("needs canary clients (audit.canary_kind = 'clients' or 'auto')")
    if not isolated:
        problems.append("needs isolated canaries (audit.canary_space = 'isolated' or 'auto' where the run allows)")
    if config.privacy.private_sampling:
        problems.append("is moot with privacy.private_sampling = true: no observer knows who was sampled, and "
                        "the amplified claim the default audit tests is the server's guarantee")
    if spec.participation == "known" and spec.rounds_taken_part > config.training.rounds:
        problems.append(f"audit.rounds_taken_part = {spec.rounds_taken_part} exceeds training.rounds = "
                        f"{config.training.rounds}")
    if problems:
        raise AuditError(f"audit.participation = {spec.participation!r} " + "; ".join(problems))


def _scores(kind: str, hook, plan: CanaryPlan | None, trainer: FederatedTrainer, initial: dict) -> dict[str, np.ndarray]:
    if kind in DIRECTION_KINDS:
        if not hook.projections:
            raise AuditError("no round released an aggregate: nothing to score the canaries on")
        known = getattr(hook, "schedule", None) is not None  # the observer knows who took part
        return canary_client_scores(np.vstack(hook.projections), shift=np.asarray(hook.shifts),
                                    sample_rate=hook.sample_rate,
                                    took_part=np.vstack(hook.took_part) if known else None)
    final = score_canaries(plan, trainer.model, initial)
    out = {"displacement": final["displacement"]}
    if kind == "ratings":
        out["private_loss"], out["alignment"] = final["loss"], final["alignment"]
    else:
        out["loss"] = final["loss"]  # a fresh row fitted against the frozen shared model
    if hook.aggregate_energy:
        widths = np.array([max(1, len(r)) for r in hook.rows], dtype=float)
        scale2 = np.maximum(np.square(hook.aggregate_scale), 1e-24)[:, None]
        out["aggregate_rows"] = (np.vstack(hook.aggregate_energy) / scale2).sum(axis=0) / widths
    if hook.client_energy is not None:
        out["client_rows"] = hook.client_energy.copy()
    return out


def _ceiling_mu(trainer: FederatedTrainer, released: ReleasedSharesClaim | None = None) -> float | None:
    """The accounted Gaussian mechanism's μ = clip / noise std of one round (None without user-level DP);
    with ``released``, at the median share count the claim charges its rounds at."""
    privacy = trainer.privacy
    if isinstance(privacy, UserDistributed):  # the accounted noise: the planned minimum of shares
        clip = 1.0 if privacy.adaptive is not None else trainer.config.privacy.clip_norm
        shares = (1.0 if released is None
                  else float(np.median(released.charge.share_counts)) / released.charge.planned.num_shares)
        return clip / (privacy.ddg_plan.model_unit_noise_std * math.sqrt(shares))
    if isinstance(privacy, RecordDistributed):  # one DP-SGD step a round, the accounted noise
        return trainer.config.privacy.clip_norm / privacy.ddg.model_unit_noise_std
    if isinstance(privacy, UserCentral):
        z = privacy.adaptive.update_noise_multiplier if privacy.adaptive is not None else privacy.noise_multiplier
        return 1.0 / z if z else None
    return None


def _canary_audit(kind: str, plan: CanaryPlan | None, hook, trainer: FederatedTrainer, initial: dict,
                  spec: AuditSpec, epsilon: float, delta: float, evaluation: dict, seed: int,
                  say: Callable[[str], None], *, isolated: bool = False,
                  collect: Callable[[dict[str, Any]], None] | None = None) -> tuple[dict[str, Any], dict]:
    included = _included(kind, hook, plan)
    scores = _scores(kind, hook, plan, trainer, initial)
    unit = trainer.privacy.unit
    rounds = len(trainer.history)
    # what the canaries are held to: the run's claim, or with participation known to the observer
    # the un-amplified one over the rounds each canary took part in (one Gaussian shift per round)
    known = kind == "clients" and hook.schedule is not None and spec.participation == "known"
    revealed = kind == "clients" and hook.schedule is not None and spec.participation == "revealed"
    participation = None
    sample_rate = getattr(hook, "sample_rate", None)
    if revealed:
        participation = {
            "observer": ("knows which canary took part in which round, each by its own Poisson coin at the run's "
                         "rate: the server that draws the sample, or any observer told"),
            "run_epsilon": epsilon,
            "claim": "privacy.participation_revealed: no amplification, participation revealed (zero-out)",
            "never_took_part": int(np.count_nonzero(hook.schedule[:rounds].sum(axis=0) == 0))}
    if known:
        sample_rate, rounds = 1.0, spec.rounds_taken_part
        participation = {
            "observer": "knows which canary took part in which round (the server that picks the sample)",
            "rounds_taken_part": rounds, "amplified_epsilon": epsilon,
            "claim": "privacy.participation_known: the accountant at sample rate 1 over the rounds taken part in",
            "unobserved": int(np.count_nonzero(hook.schedule.sum(axis=0) != np.vstack(hook.took_part).sum(axis=0)))
            if hook.took_part else spec.canaries}
    visible = ((spec.canaries / 2 if known else spec.canaries / 2 * (1 - (1 - hook.sample_rate) ** rounds))
               if kind in DIRECTION_KINDS else None)  # revealed: the canaries that took part at least once
    guesses = canary_guess_counts(spec.canaries, expected_visible=visible)
    family = None
    # the claim charged at the noise shares each released sum carried, where it applies (it is at
    # most the planned one: the audit tests the run's tightest proven claim)
    released = None
    planned_epsilon = epsilon
    if known and unit != "none":
        released = participation_known_claim(trainer.privacy, delta, rounds)
        family = participation_known_family(trainer.privacy, delta, rounds) if released is None else None
        planned_epsilon = UserLevelPlan.epsilon_without_sampling(trainer.privacy, rounds)
        epsilon = trainer.privacy.epsilon_without_sampling(rounds)
    elif revealed and unit != "none":
        released = released_shares_claim(trainer.privacy, delta, revealed=True)
        epsilon = planned_epsilon = trainer.privacy.accountant.epsilon_participation_revealed(delta)
        family = participation_revealed_family(trainer.privacy, delta) if released is None else None
    elif unit != "none" and not (unit == "user" and kind == "ratings"):
        released = released_shares_claim(trainer.privacy, delta, revealed=False) if kind in DIRECTION_KINDS else None
        owners = np.unique(plan.users[plan.canaries.included]) if kind == "ratings" else ()
        family = mechanism_family(trainer.privacy, delta, record_clients=owners) if released is None else None
    if released is not None:
        family, epsilon = released.family, released.epsilon
    independent = ISOLATED_DESIGN if isolated else None
    if collect is not None:
        collect({"scores": scores, "included": included, "family": family, "unit": unit, "kind": kind,
                 "epsilon": epsilon, "delta": delta, "design": independent, "rounds": rounds,
                 "sample_rate": sample_rate})
    summary, curves = audit_scores(scores, included, unit=unit, kind=kind, epsilon=epsilon, delta=delta,
                                   confidence=spec.confidence, family=family, guesses=guesses,
                                   evaluation=evaluation, seed=seed, independent=independent)
    if revealed:
        summary["claim"] = ("privacy.participation_revealed: each round's participation revealed, no amplification "
                            "(zero-out), the guarantee proven for every observer")
    if known:
        summary["claim"] = (f"privacy.participation_known for {rounds} round(s) taken part in: the accountant at "
                            "sample rate 1, the guarantee against an observer who knows who took part")
    if released is not None:
        summary["claim"] = summary.get("claim", "the run's claim") + (
            "; each round charged at the noise shares its released sum carried (ex post, at most the planned ε; "
            "docs/privacy.md, 'The shares a release carried')")
        summary["planned_epsilon"] = planned_epsilon
        summary["released_shares_charged"] = list(released.charge.share_counts)
    mu = _ceiling_mu(trainer, released) if kind in DIRECTION_KINDS else None
    if mu is not None and spec.ceiling_repeats:
        say(f"ceiling: the same tests on {spec.ceiling_repeats} simulated ideal runs")
        summary["ceiling"] = ceiling(num_canaries=spec.canaries, rounds=rounds, sample_rate=sample_rate,
                                     mu=mu, family=family, epsilon=epsilon, delta=delta,
                                     confidence=spec.confidence, guesses=guesses,
                                     repeats=spec.ceiling_repeats, seed=seed, independent=independent,
                                     revealed=revealed)
    if isolated and mu is not None and hook.projections:
        summary["noise_calibration"] = _noise_calibration(hook, mu)
        # "planned" there is the noise the claim charges: at the released shares where it does
        summary["noise_calibration"]["planned_at"] = ("the median share count the claim charges" if released
                                                      else "the guaranteed minimum of shares")
        if spec.ceiling_repeats:
            say("ceiling at the noise the release carried")
            summary["ceiling_at_release"] = ceiling(
                num_canaries=spec.canaries, rounds=rounds, sample_rate=sample_rate,
                mu=summary["noise_calibration"]["released_mu"], family=family, epsilon=epsilon, delta=delta,
                confidence=spec.confidence, guesses=guesses, repeats=spec.ceiling_repeats, seed=seed,
                independent=independent, revealed=revealed)
    summary.update({
        "kind": kind, "num_canaries": len(included), "num_included": int(included.sum()),
        "space": "isolated" if isolated else ("model" if kind in DIRECTION_KINDS else "data"),
        "design": independent or "canaries share the run: only the one-run bounds hold",
        "epsilon": epsilon, "delta": delta, "confidence": spec.confidence,
        # The δ term of the one-run p-value is 2·m·δ·(…): above audit_delta(m) it can eat the test
        # level whatever the attack does (see audit_config).
        "delta_too_large": (not isolated) and delta > audit_delta(len(included), spec.confidence) * (1 + 1e-9),
    })
    if kind in DIRECTION_KINDS:
        summary.update(rounds_observed=len(hook.projections), sample_rate=hook.sample_rate,
                       canary_norm=float(np.mean(hook.shifts)) if hook.shifts else None,
                       participation=participation or {"observer": "does not know who took part: the "
                                                       "auditor's coins are used by no score"})
        # the one-shot estimates model Poisson participation of the included canaries only
        summary["estimate"] = None if known or revealed else one_shot_estimates(hook, included, delta=summary["claimed_delta"],
                                                                    epsilon=summary["claimed_epsilon"])
    return summary, curves


def _noise_calibration(hook, planned_mu: float) -> dict[str, Any]:
    """The noise the release carried on the isolated canaries' coordinates against the plan's.

    Each round's σ is estimated from the release alone (1.4826·MAD over the canary
    coordinates, ``attacks.round_scales``). A ratio well below 1 means the release held less
    noise than the accountant was told (a bug the bound may be too weak to see); above 1 is
    slack — every surviving client's distributed share instead of the planned minimum."""
    x = np.vstack(hook.projections)
    sigma = round_scales(x)
    shifts = np.asarray(hook.shifts, dtype=np.float64)
    released_mu = float(np.median(shifts / sigma))
    ratio = planned_mu / released_mu  # released σ / planned σ
    tolerance = 3.5 / math.sqrt(x.shape[1])  # a few standard errors of the MAD estimate
    return {"planned_mu": planned_mu, "released_mu": released_mu, "released_over_planned_noise": ratio,
            "per_round_noise_std": sigma.tolist(), "less_noise_than_planned": bool(ratio < 1.0 - tolerance),
            "note": "σ per round from the release (MAD over the canary coordinates); μ = canary norm / σ"}


def _control(kind: str, config: RunConfig, train_split: Split, plan: CanaryPlan | None, hook, spec: AuditSpec,
             delta: float, evaluation: dict, seed: int, *, first_phantom: int | None = None) -> dict[str, Any]:
    """The same canaries and the same audit on the run without noise (plaintext sum: same release)."""
    # Gradient canaries live inside the record-level DP-SGD step: that twin keeps the mechanism
    # (the labelled plaintext simulation of its secure sum) and loses only the noise.
    privacy = (config.privacy if kind == "gradients"
               else dataclasses.replace(config.privacy, unit="none", noise="central"))
    twin_config = dataclasses.replace(
        config, privacy=privacy, aggregation=dataclasses.replace(config.aggregation, protocol="plaintext"),
        evaluation=dataclasses.replace(config.evaluation, every=max(1, config.training.rounds)))
    twin = FederatedTrainer(twin_config, train_split)
    if kind == "gradients":
        shares_without_noise(twin)
    elif config.privacy.unit == "user":
        clip_without_noise(twin, config.privacy.clip_norm)
    initial = twin.model.shared_state()
    twin.auditor = twin_hook = _make_hook(kind, spec, twin, plan, seed,
                                          included=_included(kind, hook, plan) if kind in DIRECTION_KINDS else None,
                                          norm=(hook.shifts[0] if kind == "clients" and hook.shifts else None),
                                          first_phantom=first_phantom)
    started = time.perf_counter()
    twin.run()
    scores = _scores(kind, twin_hook, plan, twin, initial)
    included = _included(kind, twin_hook, plan)
    known = kind == "clients" and twin_hook.schedule is not None
    visible = ((spec.canaries / 2 if known else spec.canaries / 2 * (1 - (1 - twin_hook.sample_rate)
                                                                     ** len(twin.history)))
               if kind in DIRECTION_KINDS else None)
    summary, _ = audit_scores(scores, included, unit="none", kind=kind, epsilon=math.inf, delta=delta,
                              confidence=spec.confidence, family=None,
                              guesses=canary_guess_counts(spec.canaries, expected_visible=visible),
                              evaluation={**evaluation, "n_bootstrap": 1}, seed=seed,
                              independent=ISOLATED_DESIGN if first_phantom is not None else None)
    out = {"epsilon_hat": summary["epsilon_hat"], "best_score": summary["best_score"],
           "scores": {n: {"epsilon_hat": e["epsilon_hat"], "observer": e["observer"],
                          "auc": e.get("membership", {}).get("auc")} for n, e in summary["scores"].items()},
           "seconds": time.perf_counter() - started,
           "what": "the same canaries, the same scores and tests, on the run without noise (user level: "
                   "still clipped, mean over E[clients]; record level: the same DP-SGD step with zero "
                   "noise shares; plaintext sum)"}
    if kind in DIRECTION_KINDS and not known:
        out["estimate"] = one_shot_estimates(twin_hook, included, delta=delta, epsilon=math.inf)
    return out


def run_audit(
    config: RunConfig, spec: AuditSpec, out_dir: str | Path | None = None, *,
    on_round: Callable[[RoundMetrics], None] | None = None, log: Callable[[str], None] | None = None,
    collect_canaries: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train the configured federated run with canaries, attack it, and return (and write) audit.json.

    ``collect_canaries`` receives the canary audit's raw material (per-canary scores, inclusion
    bits, the claim's mechanism family, ε, δ, the design): isolated canaries of several runs of the
    same configuration are independent trials of one mechanism, and :func:`~.canary_audit.pooled_heldout_audit`
    tests them together."""
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
    kind = resolve_kind(spec.canary_kind, config.privacy.unit, config.privacy.noise)
    if spec.canaries and kind not in DIRECTION_KINDS:
        plan = insert_canaries(target_split, kind=kind, count=spec.canaries,
                               member_users=groups["members"], rating=spec.canary_rating,
                               items_per_user=spec.canary_items_per_user, seed=seed)
        train_split = plan.split

    first_phantom = None
    if spec.canaries and kind in DIRECTION_KINDS:
        try:
            space = resolve_space(spec.canary_space, config, kind, implicit=bool(split.train.implicit))
        except ValueError as exc:
            raise AuditError(str(exc)) from None
        if space == "isolated":
            first_phantom = train_split.train.n_items
            train_split = with_phantom_items(
                train_split, phantom_items_needed(spec.canaries, item_width(config, train_split)))

    spec = resolve_participation(spec, config, kind, isolated=first_phantom is not None)
    _check_participation(spec, config, kind, isolated=first_phantom is not None)
    config, audit_delta_value = audit_config(config, spec, train_split.train.n_users,
                                             isolated=first_phantom is not None)
    if out is not None:  # the configuration actually trained (δ included), to reproduce the run
        (out / "config.toml").write_text(dump_toml(config_to_dict(config)), encoding="utf-8")
    trainer = FederatedTrainer(config, train_split)
    trainer.auditor = hook = (_make_hook(kind, spec, trainer, plan, seed, first_phantom=first_phantom)
                              if spec.canaries else None)
    if hook is not None:
        n_inc = int(_included(kind, hook, plan).sum())
    say(f"training the federated model on {len(groups['members'])} users"
        + (f" with {spec.canaries} canary {kind} ({n_inc} included)" if hook is not None else ""))
    initial = trainer.model.shared_state()
    train_started = time.perf_counter()
    history = trainer.run(on_round=on_round)
    train_seconds = time.perf_counter() - train_started
    if not history:
        raise AuditError(
            "the run trained no round: " + (trainer.privacy.stopped_reason or "nothing to audit")
            + ". The noise multiplier cannot afford one round within privacy.target_epsilon; raise "
              "privacy.noise_multiplier (or unset it to calibrate) or raise the target.")
    privacy = trainer.server.privacy_summary()
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
    if hook is not None:
        say("one-run audits on the canaries")
        t0 = time.perf_counter()
        canary_summary, canary_curves = _canary_audit(kind, plan, hook, trainer, initial, spec, epsilon, delta,
                                                      dict(evaluation), seed, say,
                                                      isolated=first_phantom is not None,
                                                      collect=collect_canaries)
        curves.update(canary_curves)
        timings["canary_audit"] = time.perf_counter() - t0
        if spec.control and trainer.privacy.enabled:
            say("control: the same audit on the run without DP")
            # the control's headline is a one-run bound (no claim to test): at a δ small against 1/m
            control_delta = min(delta, audit_delta(spec.canaries, spec.confidence))
            canary_summary["control"] = _control(kind, config, train_split, plan, hook, spec, control_delta,
                                                 dict(evaluation), seed, first_phantom=first_phantom)
            timings["control"] = canary_summary["control"]["seconds"]

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
            points = [(canary_summary["claimed_epsilon"], canary_summary["epsilon_hat"], f"this run ({label})")]
            if canary_summary.get("ceiling"):
                points.append((canary_summary["claimed_epsilon"], canary_summary["ceiling"]["epsilon_hat_median"],
                               "ceiling: ideal mechanism, same canaries"))
            if canary_summary.get("control"):
                points.append((math.inf, canary_summary["control"]["epsilon_hat"], "control: same run without DP"))
            estimates = [(canary_summary["claimed_epsilon"], e["epsilon"], f"one-shot {name} ESTIMATE (not a bound)")
                         for name, e in (canary_summary.get("estimate") or {}).items() if isinstance(e, dict)]
            plot_epsilon_audit(points, out / "epsilon.png", estimates=estimates)
            result["plots"].append("epsilon.png")
        write_json_atomic(out / "audit.json", result)
    return result
