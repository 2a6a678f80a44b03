"""ε̂ from canaries: which observer sees what, which claim it is held to, and the controls.

Every score names its *observer* — the party whose view it is computed from:

=====================  ==================================================================
observer               what it may use
=====================  ==================================================================
``released rounds``    every round's released aggregate (the noised sum after
                       unmasking, what the server optimizer receives); a curious server
``client uploads``     each client's own upload (only under the plaintext protocol)
``final model``        the final shared parameters (and the public initial ones)
``user device``        the canary user's private row: the user's own device, which no
                       guarantee protects the user from; reported, never audited
=====================  ==================================================================

A score is held to the guarantee that covers its observer (``AUDITED``): a
user-level guarantee covers released rounds and the final model, not client
uploads (central noise is added after them) and never private rows; a
record-level guarantee covers a client's uploads (DP-SGD runs on the device)
and everything computed from them. Canary *ratings* under a user-level
guarantee are one rating of a user who takes part either way: add/remove-one
user DP covers that only by group privacy over two steps, (2ε, (1+e^ε)δ), so
that is the claim they are held to.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from attacks import (
    PrivacyViolationWarning,
    audit_clopper_pearson_heldout,
    audit_heldout_fdp,
    audit_one_run,
    audit_one_run_fdp,
    canary_client_scores,
    evaluate_membership,
    one_shot_estimate,
    participation_mu,
    round_scales,
    simulate_canary_projections,
)

from ..privacy.accounting import create_accountant

__all__ = ["AUDITED", "OBSERVERS", "audit_scores", "canary_guess_counts", "ceiling", "claim_for",
           "one_shot_estimates", "pooled_heldout_audit"]

OBSERVERS = {
    "llr": "released rounds", "sum": "released rounds", "aggregate_rows": "released rounds",
    "client_rows": "client uploads", "displacement": "final model", "loss": "final model",
    "alignment": "user device", "private_loss": "user device",
}

#: (privacy unit, observer) pairs whose scores the unit's guarantee bounds
AUDITED = {("user", "released rounds"), ("user", "final model"), ("record", "client uploads"),
           ("record", "released rounds"), ("record", "final model"),
           ("none", "released rounds"), ("none", "final model"), ("none", "client uploads")}


def claim_for(unit: str, kind: str, epsilon: float, delta: float) -> tuple[float, float, str]:
    """(ε, δ) the canaries are held to, and why."""
    if unit == "user" and kind == "ratings" and math.isfinite(epsilon):
        return 2 * epsilon, min(1.0, (1 + math.exp(epsilon)) * delta), (
            "one rating of a user who takes part either way: group privacy over two add/remove steps")
    return epsilon, delta, "the accountant's (ε, δ)"


def canary_guess_counts(num_canaries: int, *, expected_visible: float | None = None) -> tuple[list[int], list[int]]:
    """"In" and "out" guess counts, chosen from public quantities only.

    ``expected_visible``: how many included canaries are expected to take part at
    least once (m/2 · (1 − (1 − q)^T) for canary clients); guessing "in" for
    fractions of it lets a perfect attack use all the canaries it can see.
    """
    m = num_canaries
    positives = {max(1, m // d) for d in (20, 10, 4)}
    if expected_visible is not None:
        positives |= {max(1, int(f * expected_visible)) for f in (0.5, 0.8, 0.95)}
    positives = sorted(p for p in positives if p <= m)
    return positives, [0, max(1, m // 20)]


def audit_scores(
    scores: dict[str, np.ndarray], included: np.ndarray, *, unit: str, kind: str, epsilon: float, delta: float,
    confidence: float, family: Any, guesses: tuple[list[int], list[int]], evaluation: dict, seed: int,
    independent: str | None = None,
) -> tuple[dict[str, Any], dict]:
    """Audit every score; the headline ε̂ is the largest over the *audited* ones, each test
    run at the Bonferroni level so that the maximum keeps ``confidence``.

    ``independent``: why the canaries are independent trials (the isolated design); the
    held-out Clopper–Pearson test is then a bound too (reported, not in the verdict), and
    with a claim to test (``family``) one test is fixed in advance as the headline — the
    held-out f-DP test of the ``llr`` score, the likelihood ratio of the accounted mechanism —
    at the full ``confidence`` (no Bonferroni split); the others are reported beside it, each
    at ``confidence`` on its own, and never enter the verdict."""
    eps_claim, delta_claim, why = claim_for(unit, kind, epsilon, delta)
    audited = [n for n in scores if (unit, OBSERVERS[n]) in AUDITED]
    primary = ("llr", "heldout_fdp") if independent and family is not None and "llr" in audited else None
    methods = 2 if family is not None else 1
    per_test = confidence if primary else 1.0 - (1.0 - confidence) / max(1, len(audited) * methods)
    positives, negatives = guesses
    entries, curves = {}, {}
    best: tuple[float, str, str] = (0.0, "", "")
    claimed = eps_claim if math.isfinite(eps_claim) else None
    for name, s in scores.items():
        entry: dict[str, Any] = {"observer": OBSERVERS[name], "audited": name in audited}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PrivacyViolationWarning)  # one warning, for the headline
            level = per_test if name in audited else confidence
            one_run = audit_one_run(s, included, num_positive=positives, num_negative=negatives,
                                    epsilon_claimed=claimed, delta=delta_claim, confidence=level)
            entry["one_run"] = {"epsilon_hat": one_run.epsilon_lower_bound, "confidence": level, **one_run.details}
            tests = [("one_run", one_run.epsilon_lower_bound)]
            if family is not None:
                fdp = audit_one_run_fdp(s, included, num_positive=positives, num_negative=negatives,
                                        family=family, epsilon_claimed=claimed, delta=delta_claim,
                                        confidence=level)
                entry["one_run_fdp"] = {"epsilon_hat": fdp.epsilon_lower_bound, "confidence": level,
                                        **fdp.details}
                tests.append(("one_run_fdp", fdp.epsilon_lower_bound))
            if included.sum() >= 4 and (~included).sum() >= 4:
                cp = audit_clopper_pearson_heldout(s, included, epsilon_claimed=claimed, delta=delta_claim,
                                                   confidence=level if independent else confidence,
                                                   random_state=seed)
                entry["clopper_pearson_heldout"] = {
                    "epsilon_hat": cp.epsilon_lower_bound, **cp.details,
                    "note": (f"a bound: {independent}" if independent
                             else "canaries as independent trials (not true in one run): not a bound here")}
                if independent and family is not None:
                    held = audit_heldout_fdp(s, included, family=family, design=independent,
                                             epsilon_claimed=claimed, delta=delta_claim, confidence=level,
                                             random_state=seed)
                    entry["heldout_fdp"] = {"epsilon_hat": held.epsilon_lower_bound, "confidence": level,
                                            **held.details}
                    tests.append(("heldout_fdp", held.epsilon_lower_bound))
        # the largest of this score's tests, each at its own level: a summary, not a 95 % bound
        entry["epsilon_hat"] = max(e for _, e in tests)
        if included.any() and not included.all():
            m = evaluate_membership(included, s, **evaluation)
            entry["membership"] = m.as_dict()
            curves[f"canary_{name}"] = m.roc
        entries[name] = entry
        if name in audited:
            for method, e in tests:
                if (primary is None or (name, method) == primary) and e > best[0]:
                    best = (e, name, method)
    eps_hat, best_score, best_method = best
    violation = claimed is not None and eps_hat > claimed
    if violation:
        warnings.warn(f"PRIVACY VIOLATION: audit eps_hat={eps_hat:.3f} > claimed eps={claimed:.3f} "
                      f"({best_score} score, {best_method})", PrivacyViolationWarning, stacklevel=2)
    return {
        "epsilon_hat": eps_hat, "best_score": best_score or None, "best_method": best_method or None,
        "claimed_epsilon": eps_claim, "claimed_delta": delta_claim, "claim": why,
        "tightness": eps_hat / eps_claim if claimed else None, "violation": violation,
        "audited_scores": audited, "tests_per_score": methods, "scores": entries,
        "headline_test": ("/".join(primary) + " (fixed in advance, full confidence)" if primary
                          else f"largest one-run bound, Bonferroni over {len(audited) * methods} tests"),
        "guesses": {"num_positive": positives, "num_negative": negatives},
    }, curves


def pooled_heldout_audit(runs: Sequence[Mapping[str, Any]], *, score: str = "llr", confidence: float = 0.95,
                         seed: int = 0) -> dict[str, Any]:
    """The held-out tests on the isolated canaries of several runs of one configuration, pooled.

    Each run's isolated canaries are independent trials of the accounted mechanism (each score
    depends only on its own inclusion bit, sampling coins and coordinate noise), and separate
    runs draw independent bits, coins and noise, so the canaries of ``R`` runs are ``R·m``
    independent trials: the multi-run setting of Nasr et al. 2023, where the held-out
    Clopper–Pearson and f-DP tests are bounds. ``runs`` are what ``run_audit(collect_canaries=…)``
    hands over; they must claim the same (ε, δ) after the same rounds at the same sampling rate
    under the same design (checked), and the first run's mechanism family is the claim tested.
    """
    if not runs:
        raise ValueError("no runs to pool")
    first = runs[0]
    if first.get("design") is None or first.get("family") is None:
        raise ValueError("pooling needs isolated canaries (independent trials) and a claim to test")
    for r in runs[1:]:
        same = (all(r.get(key) == first.get(key) for key in ("design", "unit", "kind", "rounds", "sample_rate"))
                and math.isclose(r["epsilon"], first["epsilon"], rel_tol=1e-9)
                and math.isclose(r["delta"], first["delta"], rel_tol=1e-9))
        if not same:
            raise ValueError("pooled runs must audit the same mechanism: same design, unit, kind, rounds, "
                             "sampling rate, ε and δ")
    eps_claim, delta_claim, _ = claim_for(first["unit"], first["kind"], first["epsilon"], first["delta"])
    scores = np.concatenate([np.asarray(r["scores"][score], dtype=np.float64) for r in runs])
    included = np.concatenate([np.asarray(r["included"], dtype=bool) for r in runs])
    design = f"{first['design']}; pooled over {len(runs)} independent runs"
    claimed = eps_claim if math.isfinite(eps_claim) else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrivacyViolationWarning)
        held = audit_heldout_fdp(scores, included, family=first["family"], design=design, epsilon_claimed=claimed,
                                 delta=delta_claim, confidence=confidence, random_state=seed)
        cp = audit_clopper_pearson_heldout(scores, included, epsilon_claimed=claimed, delta=delta_claim,
                                           confidence=confidence, random_state=seed)
    return {"runs": len(runs), "canaries": int(included.size), "included": int(included.sum()), "score": score,
            "design": design, "epsilon": first["epsilon"], "delta": first["delta"], "confidence": confidence,
            "heldout_fdp": {"epsilon_hat": held.epsilon_lower_bound, **held.details},
            "clopper_pearson_heldout": {"epsilon_hat": cp.epsilon_lower_bound, **cp.details},
            "epsilon_hat": held.epsilon_lower_bound,
            "tightness": held.epsilon_lower_bound / first["epsilon"] if first["epsilon"] > 0 else math.nan,
            "violation": bool(held.epsilon_lower_bound > eps_claim)}


def ceiling(
    *, num_canaries: int, rounds: int, sample_rate: float, mu: float, family: Any, epsilon: float, delta: float,
    confidence: float, guesses: tuple[list[int], list[int]], repeats: int = 5, seed: int = 0,
    independent: str | None = None, revealed: bool = False,
) -> dict[str, Any]:
    """What the same tests certify on an ideal implementation of the accounted mechanism.

    Canaries of a Gaussian mechanism with the run's sampling rate, rounds and
    μ = clip / noise std, no crosstalk, scored by the LLR (the optimal test), and
    audited with the same guess counts and the same two bounds at the same
    Bonferroni level as the run's two released-round scores. The median over
    ``repeats`` simulations is the most this many canaries can show.

    ``revealed``: every canary, member or not, takes part in each round by its own coin at
    ``sample_rate`` and the LLR uses the rounds it took part in (``audit.participation =
    "revealed"``); otherwise only members take part and no score knows when.
    """
    primary = bool(independent and family is not None)  # the headline is one test: audit_scores
    per_test = confidence if primary else 1.0 - (1.0 - confidence) / (2 * (2 if family is not None else 1))
    positives, negatives = guesses
    values: dict[str, list[float]] = {"one_run": [], "one_run_fdp": [], "heldout_fdp": []}
    rng = np.random.default_rng([seed, 0xCE1])
    for _ in range(repeats):
        if revealed:
            included = rng.random(num_canaries) < 0.5
            took_part = rng.random((rounds, num_canaries)) < sample_rate
            x = rng.standard_normal((rounds, num_canaries)) + mu * (took_part & included[None, :])
            s = canary_client_scores(x, shift=mu, sample_rate=sample_rate, took_part=took_part)["llr"]
        else:
            included, x = simulate_canary_projections(num_canaries, rounds, sample_rate=sample_rate, mu=mu,
                                                      random_state=rng)
            s = canary_client_scores(x, shift=mu, sample_rate=sample_rate)["llr"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PrivacyViolationWarning)
            values["one_run"].append(audit_one_run(s, included, num_positive=positives, num_negative=negatives,
                                                   delta=delta, confidence=per_test).epsilon_lower_bound)
            if family is not None:
                values["one_run_fdp"].append(audit_one_run_fdp(
                    s, included, num_positive=positives, num_negative=negatives, family=family, delta=delta,
                    confidence=per_test).epsilon_lower_bound)
            if primary:
                values["heldout_fdp"].append(audit_heldout_fdp(
                    s, included, family=family, design=independent, delta=delta, confidence=per_test,
                    random_state=seed).epsilon_lower_bound)
    out: dict[str, Any] = {"mu": mu, "repeats": repeats, "rounds": rounds, "sample_rate": sample_rate,
                           "participation": "revealed" if revealed else "hidden"}
    for method, v in values.items():
        if v:
            out[method] = {"median": float(np.median(v)), "min": float(np.min(v)), "max": float(np.max(v))}
    best = (out["heldout_fdp"]["median"] if primary
            else max((out[m]["median"] for m in values if m in out), default=0.0))
    out["epsilon_hat_median"] = best
    out["tightness"] = best / epsilon if math.isfinite(epsilon) and epsilon > 0 else None
    return out


def one_shot_estimates(hook, included: np.ndarray, *, delta: float, epsilon: float) -> dict[str, Any]:
    """Andrew et al.'s one-shot ε ESTIMATES (``attacks.one_shot``), beside the bounds, never a verdict.

    * ``fitted``: Gaussians fitted to the members' and non-members' ``sum`` statistic (each
      canary's normalised projections summed over the released rounds: the composition of its
      rounds), the Gaussian mechanism's ε for that separation at δ;
    * ``composed``: μ of one participation (rounds a canary was sampled in, against the rest;
      the auditor drew them) composed over the observed rounds at the run's sampling rate by
      the PLD accountant — the accountant's own computation with the noise the release
      actually carried.
    """
    x = np.vstack(hook.projections)
    z = x / round_scales(x)[:, None]
    out: dict[str, Any] = {"kind": "ESTIMATE, not a lower bound: assumes Gaussian canary statistics; "
                                   "never used for the violation verdict"}
    if included.sum() >= 2 and (~included).sum() >= 2:
        fitted = one_shot_estimate(z.sum(axis=0), included, delta=delta)
        out["fitted"] = fitted.as_dict()
    took = np.vstack(hook.took_part) if hook.took_part else np.zeros_like(z, dtype=bool)
    if took.sum() >= 2 and (~took).sum() >= 2:
        mu = participation_mu(z, took)
        rounds, q = z.shape[0], float(hook.sample_rate)
        if not math.isfinite(mu):
            eps = math.inf
        elif mu <= 0:
            eps = 0.0
        else:
            accountant = create_accountant("pld")
            accountant.extend([(1.0 / mu, q, rounds)])
            eps = float(accountant.get_epsilon(delta))
        out["composed"] = {"epsilon": eps, "mu_per_participation": mu, "rounds": rounds, "sample_rate": q,
                           "participations": int(took.sum()), "delta": delta}
    for name in ("fitted", "composed"):
        if name in out:
            out[name]["ratio"] = (out[name]["epsilon"] / epsilon
                                  if math.isfinite(epsilon) and epsilon > 0 else None)
    return out
