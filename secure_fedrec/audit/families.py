"""The accountant's claim as a family of trade-off curves, for the one-run f-DP audit.

:class:`attacks.MechanismFamily` wants, for a noise scale ``s``, the trade-off
curve of the accounted mechanism with its noise multiplied by ``s`` and the ε
the accountant would then report at the audit's δ. Each is built from the
run's own accountant history, so the claim tested is exactly what the run was
charged:

* user level, central noise: the PLD of the Poisson-subsampled Gaussian rounds
  (dp-accounting, pessimistic discretisation: δ(ε) is an upper bound);
* user level, distributed noise: the RDP of the distributed discrete Gaussian
  rounds, converted to δ(ε) by dp-accounting, or, where smaller, the exact profile of
  the continuous Gaussian that dominates them (rounds at sample rate 1, revealed
  participation, private sampling; :mod:`secure_fedrec.privacy.ddg_dominance`) — the
  accountant's ``delta_curve``; where the worlds differ by a shift, each round charged at
  the noise shares its released sum carried (:func:`released_shares_claim`,
  :mod:`secure_fedrec.privacy.ddg_realised`), the run's tightest proven claim;
* record level, local noise: every canary client's own RDP history (DP-SGD steps);
  δ(ε) is the largest over those clients, a claim every one of them meets;
* record level, distributed noise: the population's one DDG accountant (symmetric
  subsampling bound, docs/privacy.md §4.4, or where smaller the dominating Gaussian's PLD),
  as for user level.

δ(ε) is evaluated on a fixed ε grid; :class:`attacks.ProfileTradeoff` takes the
sup over those points only, a weaker claim than the accountant's (sound).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from dp_accounting.rdp import rdp_privacy_accountant

from attacks import MechanismFamily, ProfileTradeoff

from ..plans import (
    PrivacyPlan,
    RecordDistributed,
    RecordLocal,
    UserDistributed,
    UserLevelPlan,
)
from ..privacy.accounting import Accountant, create_accountant
from ..privacy.ddg_accounting import DistributedDiscreteGaussianAccountant
from ..privacy.ddg_dominance import shift_profile_delta
from ..privacy.ddg_realised import ReleasedSharesCharge, charge_released_shares

__all__ = ["EPSILON_GRID", "NOISE_SCALES", "ReleasedSharesClaim", "mechanism_family", "participation_known_claim",
           "participation_known_family", "participation_revealed_family", "released_shares_claim"]

#: where δ(ε) is evaluated: fine where one-run audits land, coarse beyond
EPSILON_GRID = np.concatenate([np.linspace(0.0, 3.0, 61), np.linspace(3.1, 12.0, 90), np.linspace(12.5, 40.0, 56)])
#: noise scales searched: 0.1x (a run ten times less noisy than claimed) to 30x; 6.6 % apart,
#: so ε̂ is rounded down by at most the ε change of one step
NOISE_SCALES = tuple(float(s) for s in np.geomspace(0.1, 30.0, 90))


def _profile(deltas: np.ndarray) -> ProfileTradeoff:
    return ProfileTradeoff(EPSILON_GRID, np.clip(deltas, 0.0, 1.0))


def _central(history: Sequence[tuple[float, float, int]], delta: float) -> MechanismFamily:
    def scaled(s: float) -> list[tuple[float, float, int]]:
        return [(z * s, q, steps) for z, q, steps in history]

    def tradeoff(s: float) -> ProfileTradeoff:
        # dp-accounting's PLD of the Poisson-subsampled Gaussian rounds, the whole grid in one call
        return _profile(shift_profile_delta(EPSILON_GRID, scaled(s), hidden=True))

    def epsilon(s: float) -> float:
        accountant = create_accountant("pld")
        accountant.extend(scaled(s))
        return accountant.get_epsilon(delta)

    return MechanismFamily(tradeoff=tradeoff, epsilon=epsilon, scales=NOISE_SCALES)


def _rdp_deltas(orders: np.ndarray, rdp: np.ndarray) -> np.ndarray:
    return np.array([rdp_privacy_accountant.compute_delta(orders, rdp, float(e))[0] for e in EPSILON_GRID])


def _distributed(accountant: DistributedDiscreteGaussianAccountant, delta: float,
                 history: Sequence[tuple[float, float, int]] | None = None) -> MechanismFamily:
    # The accountant fixes the mechanism's geometry (integer sensitivity, guaranteed shares,
    # dimension) and records the sum's noise multiplier per round: scaling the noise scales it.
    history = list(accountant.history if history is None else history)

    def scaled(s: float) -> DistributedDiscreteGaussianAccountant:
        trial = DistributedDiscreteGaussianAccountant(
            l2_sensitivity=accountant.l2_sensitivity, num_shares=accountant.num_shares, dim=accountant.dim,
            orders=accountant.orders, subsampling=accountant.subsampling)
        trial.extend([(z * s, q, steps) for z, q, steps in history])
        return trial

    def tradeoff(s: float) -> ProfileTradeoff:
        return _profile(scaled(s).delta_curve(EPSILON_GRID))

    return MechanismFamily(tradeoff=tradeoff, epsilon=lambda s: scaled(s).get_epsilon(delta), scales=NOISE_SCALES)


def _released(charge: ReleasedSharesCharge, delta: float) -> MechanismFamily:
    # the shares' noise scales with the family's s, the rounds' released counts stay
    def tradeoff(s: float) -> ProfileTradeoff:
        return _profile(charge.scaled(s).delta_curve(EPSILON_GRID))

    return MechanismFamily(tradeoff=tradeoff, epsilon=lambda s: charge.scaled(s).get_epsilon(delta),
                           scales=NOISE_SCALES)


@dataclass(frozen=True)
class ReleasedSharesClaim:
    """The run's claim charged at the noise shares its released sums carried."""

    family: MechanismFamily
    epsilon: float
    charge: ReleasedSharesCharge


def released_shares_claim(privacy: PrivacyPlan, delta: float, *, revealed: bool) -> ReleasedSharesClaim | None:
    """User level, distributed noise: the claim with each round charged at the shares its sum
    carried (:mod:`secure_fedrec.privacy.ddg_realised`; at most the planned claim) — participation
    revealed (``revealed``) or the run's own charge. None where that does not apply (the amplified
    charge, nothing released)."""
    if not isinstance(privacy, UserDistributed) or not privacy.accountant.history:
        return None
    accountant = privacy.accountant.with_subsampling("revealed") if revealed else privacy.accountant
    charge = charge_released_shares(accountant, privacy.released_shares)
    if charge is None:
        return None
    return ReleasedSharesClaim(family=_released(charge, delta), epsilon=charge.get_epsilon(delta), charge=charge)


def participation_known_claim(privacy: PrivacyPlan, delta: float, rounds_taken_part: int) -> ReleasedSharesClaim | None:
    """The per-count claim (:func:`participation_known_family`) charged at the shares the sums
    carried, where the run recorded them (user level, distributed noise); None elsewhere."""
    charge = privacy.unsampled_charge(rounds_taken_part) if isinstance(privacy, UserDistributed) else None
    if charge is None:
        return None
    return ReleasedSharesClaim(family=_released(charge, delta), epsilon=charge.get_epsilon(delta), charge=charge)


def _record(histories: Sequence[Sequence[tuple[float, float, int]]], delta: float) -> MechanismFamily:
    distinct = sorted({tuple(h) for h in histories if h})

    def accountants(s: float) -> list[Accountant]:
        out = []
        for history in distinct:
            accountant = create_accountant("rdp")
            accountant.extend([(z * s, q, steps) for z, q, steps in history])
            out.append(accountant)
        return out

    def tradeoff(s: float) -> ProfileTradeoff:
        worst = np.zeros(EPSILON_GRID.size)
        for accountant in accountants(s):
            worst = np.maximum(worst, _rdp_deltas(np.asarray(accountant.orders), accountant.rdp()))
        return _profile(worst)

    def epsilon(s: float) -> float:
        return max((a.get_epsilon(delta) for a in accountants(s)), default=0.0)

    return MechanismFamily(tradeoff=tradeoff, epsilon=epsilon, scales=NOISE_SCALES)


def mechanism_family(privacy: PrivacyPlan, delta: float, *,
                     record_clients: Sequence[int] = ()) -> MechanismFamily | None:
    """The family of the run's accounted mechanism (None without DP or before any round).

    ``record_clients``: at record level, the clients whose canaries are audited.
    """
    if isinstance(privacy, UserLevelPlan) and privacy.accountant.history:
        if isinstance(privacy.accountant, DistributedDiscreteGaussianAccountant):
            return _distributed(privacy.accountant, delta)
        return _central(list(privacy.accountant.history), delta)
    if isinstance(privacy, RecordDistributed) and privacy.accountant.history:
        # record level, distributed noise: one population accountant, the same mechanism per round
        return _distributed(privacy.accountant, delta)
    if isinstance(privacy, RecordLocal):
        accountants = privacy.client_accountants
        histories = [accountants[c].history for c in record_clients if c in accountants]
        if any(histories):
            return _record(histories, delta)
    return None


def participation_known_family(privacy: PrivacyPlan, delta: float, rounds_taken_part: int) -> MechanismFamily | None:
    """The family of the guarantee against an observer who knows who took part (user level).

    Such an observer learns nothing from a round a user sat out, and a round it took part in is
    the un-sampled mechanism (docs/privacy.md, "Client sampling and who knows it"): the claim is
    the accountant's, at sample rate 1, over the ``rounds_taken_part`` least-noised rounds — the
    figure ``privacy.participation_known`` reports (:meth:`UserLevelPlan.epsilon_without_sampling`).
    """
    if not isinstance(privacy, UserLevelPlan) or not privacy.accountant.history:
        return None
    history = privacy.unsampled_history(rounds_taken_part)  # the rounds the reported figure charges
    charge = privacy.unsampled_charge(rounds_taken_part) if isinstance(privacy, UserDistributed) else None
    if charge is not None:  # the same rounds at the shares their sums carried (what is reported)
        return _released(charge, delta)
    if isinstance(privacy.accountant, DistributedDiscreteGaussianAccountant):
        return _distributed(privacy.accountant, delta, history)
    return _central(history, delta)


def participation_revealed_family(privacy: PrivacyPlan, delta: float) -> MechanismFamily | None:
    """The family of the guarantee proven for every observer under server sampling with distributed
    noise: each round's participation revealed, no amplification (zero-out) — the figure
    ``privacy.participation_revealed`` reports (docs/privacy.md, "The share count")."""
    if not isinstance(privacy, UserLevelPlan) or not privacy.accountant.history:
        return None
    accountant = privacy.accountant
    if not isinstance(accountant, DistributedDiscreteGaussianAccountant):
        return None
    return _distributed(accountant.with_subsampling("revealed"), delta)
