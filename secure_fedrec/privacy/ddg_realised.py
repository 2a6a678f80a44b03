"""The distributed discrete Gaussian charged at the shares each released sum carried (ex post).

The planned accountant (:class:`~.ddg_accounting.DistributedDiscreteGaussianAccountant`)
charges every round at ``num_shares``, the protocol's guaranteed minimum of noise-bearing
contributors (``min_survivors``, a fraction of the expected sample), because the noise is fixed
before anyone knows who will survive. A released sum usually carries more shares than that:
with the default threshold (half the expected sample) about twice as many, so the release
holds ~1.4x the noise the plan charged and the planned ε is that much looser than the
mechanism that ran. This module charges the run's rounds at the shares they really carried.

Why that is a guarantee and not a label (docs/privacy.md, "The shares a release carried").
Fix a target user ``u`` and condition on everything the other users and the network did —
their sampling coins, their dropouts, their data. None of it depends on ``u``'s data or on
``u``'s own coin, so conditioning on it leaves the two neighbouring worlds' output
distributions a pair to compare. In a round ``r``: if ``u`` does not take part, or takes part
and drops out, both worlds release the same thing. If ``u``'s upload is in the sum, the sum
carries the others' ``n_r^{-u}`` shares plus ``u``'s own, and the worlds differ by ``u``'s
update: the DDG shift pair with ``n_r^{-u} + 1`` shares. The run's released count ``n_r`` is
``n_r^{-u}`` plus one if ``u`` was in the sum, so ``n_r^{-u} + 1 >= n_r`` for every user —
charging ``n_r`` shares charges at most the noise that was there (more shares only add
independent noise: post-processing). ``u``'s own participation keeps its probability ``q``
(its coin is independent of what we conditioned on); charging it as if it never dropped out
only adds rounds to each pattern (δ grows with every round composed). A round that released
nothing charges nothing: whether it aborted is a function of the others' behaviour and of
``u``'s participation, which the claims this applies to either reveal or hide by the same
coin in both worlds. So the realised figure holds conditionally on the others' behaviour,
for every realisation of it, and it is at most the planned figure (``n_r >= num_shares``
whenever a sum is released; where not, the smaller of the two is still a bound).

It applies where the planned accountant's worlds differ by a shift — participation revealed,
or every member's share in every sum under private sampling (the ``"symmetric"`` charge) —
and not to the amplified ``"general"`` charge, which is no proven bound to begin with.

Evaluating it: rounds with equal noise and rate and released counts close together are
charged together at the smallest count among them (conservative, as above); the number of
groups is the largest that keeps the revealed mixture's participation patterns few
(:data:`MAX_PATTERNS`), so a run of any length is evaluated in milliseconds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from dp_accounting.rdp import rdp_privacy_accountant

from .ddg_accounting import DistributedDiscreteGaussianAccountant
from .ddg_dominance import MAX_TOTAL_SLACK, shift_profile_delta, shift_profile_epsilon

__all__ = ["MAX_GROUPS", "MAX_PATTERNS", "RELEASED_SHARES_SUBSAMPLING", "ReleasedSharesCharge",
           "charge_released_shares"]

#: the charges a release's share count may be read into (the others are not shift pairs)
RELEASED_SHARES_SUBSAMPLING = ("revealed", "symmetric")
#: participation patterns the revealed mixture may enumerate per evaluation (the audit's family
#: evaluates it at ~200 ε on each of ~90 noise scales)
MAX_PATTERNS = 2048
#: groups of rounds for the subsampled PLD (a hidden sample): one PLD composition each
MAX_GROUPS = 8


@dataclass(frozen=True)
class ReleasedSharesCharge:
    """The run's released rounds, grouped, each group a DDG accountant at its own share count."""

    groups: tuple[DistributedDiscreteGaussianAccountant, ...]
    #: the planned accountant (charged at the guaranteed minimum): also a bound, the smaller is kept
    planned: DistributedDiscreteGaussianAccountant

    @property
    def share_counts(self) -> tuple[int, ...]:
        """The share count each group is charged at, one per round of the group."""
        return tuple(g.num_shares for g in self.groups for _z, _q, steps in g.history for _ in range(int(steps)))

    def scaled(self, scale: float) -> ReleasedSharesCharge:
        """The same rounds with every share's noise multiplied by ``scale`` (the audit's family)."""
        return ReleasedSharesCharge(groups=tuple(_rescaled(g, scale) for g in self.groups),
                                    planned=_rescaled(self.planned, scale))

    def _rdp(self) -> tuple[np.ndarray, np.ndarray]:
        orders = np.asarray(self.planned.orders, dtype=np.float64)
        total = np.zeros(len(orders))
        for group in self.groups:
            total += group.rdp()
        return orders, total

    def _dominated(self) -> tuple[list[tuple[float, float, int]], float, bool] | None:
        rounds: list[tuple[float, float, int]] = []
        slack, hidden = 0.0, False
        for group in self.groups:
            dominated = group.dominated_rounds()
            if dominated is None:
                return None
            rounds.extend(dominated[0])
            slack += dominated[1]
            hidden = hidden or dominated[2]
        return (rounds, slack, hidden) if slack <= MAX_TOTAL_SLACK else None

    def get_epsilon(self, delta: float) -> float:
        """ε at ``delta``: the smallest of the groups' RDP, their dominating Gaussian's exact
        profile, and the planned charge."""
        orders, rdp = self._rdp()
        best = float(rdp_privacy_accountant.compute_epsilon(orders, rdp, delta)[0])
        dominated = self._dominated()
        if dominated is not None:
            exact = shift_profile_epsilon(delta, dominated[0], hidden=dominated[2], total_slack=dominated[1])
            if exact is not None:
                best = min(best, float(exact))
        return min(best, float(self.planned.get_epsilon(delta)))

    def delta_curve(self, epsilons: Sequence[float] | np.ndarray) -> np.ndarray:
        """δ(ε) per ε, the smallest of the same three bounds."""
        orders, rdp = self._rdp()
        deltas = np.array([rdp_privacy_accountant.compute_delta(orders, rdp, float(e))[0] for e in epsilons])
        dominated = self._dominated()
        if dominated is not None:
            exact = shift_profile_delta(epsilons, dominated[0], hidden=dominated[2], total_slack=dominated[1])
            if exact is not None:
                deltas = np.minimum(deltas, exact)
        return np.minimum(deltas, self.planned.delta_curve(epsilons))


def _rescaled(accountant: DistributedDiscreteGaussianAccountant, scale: float) -> DistributedDiscreteGaussianAccountant:
    out = DistributedDiscreteGaussianAccountant(
        l2_sensitivity=accountant.l2_sensitivity, num_shares=accountant.num_shares, dim=accountant.dim,
        orders=accountant.orders, subsampling=accountant.subsampling,
        use_shift_profile=accountant.use_shift_profile)
    out.extend([(z * scale, q, steps) for z, q, steps in accountant.history])
    return out


def _patterns(groups: Sequence[tuple[float, float, np.ndarray]]) -> int:
    return math.prod(len(counts) + 1 for _z, q, counts in groups if q < 1)


def _split(rounds: dict[tuple[float, float], list[int]], pieces: int) -> list[tuple[float, float, np.ndarray]]:
    """Each (noise, rate) class of rounds cut into ``pieces`` runs of neighbouring counts."""
    out = []
    for (z, q), counts in rounds.items():
        ordered = np.sort(np.asarray(counts, dtype=np.int64))
        out.extend((z, q, chunk) for chunk in np.array_split(ordered, min(pieces, ordered.size)) if chunk.size)
    return out


def charge_released_shares(accountant: DistributedDiscreteGaussianAccountant,
                           released_shares: Sequence[int]) -> ReleasedSharesCharge | None:
    """The planned ``accountant``'s rounds charged at ``released_shares``, the noise-bearing
    contributors each round's released sum carried (0: nothing released), one per recorded step.

    None where it does not apply: a charge that is not a shift pair (``"general"``), no released
    round, or a history that does not line up with the counts (a checkpoint from before they were
    recorded).
    """
    if accountant.subsampling not in RELEASED_SHARES_SUBSAMPLING:
        return None
    steps = [(float(z), float(q)) for z, q, n in accountant.history for _ in range(int(n))]
    counts = [int(c) for c in released_shares]
    if len(steps) != len(counts) or any(c < 0 for c in counts):
        return None
    rounds: dict[tuple[float, float], list[int]] = {}
    for (z, q), count in zip(steps, counts, strict=True):
        if count > 0 and q > 0:  # a round that released nothing, or that no one could take part in
            rounds.setdefault((z, q), []).append(count)
    if not rounds:
        return None
    most = max(len(v) for v in rounds.values())
    hidden = accountant.subsampling == "symmetric"
    if hidden:
        pieces = min(most, MAX_GROUPS)
    else:
        # the most pieces whose patterns stay few: cutting a run in two never lowers the count
        # ((a + 1)(b + 1) >= a + b + 1), so bisect instead of trying every count of a long run
        low, high = 1, most
        while low < high:
            middle = (low + high + 1) // 2
            if _patterns(_split(rounds, middle)) <= MAX_PATTERNS:
                low = middle
            else:
                high = middle - 1
        pieces = low
    groups = []
    for z, q, chunk in _split(rounds, pieces):
        shares = int(chunk[0])  # the fewest in the group: charged to every round of it
        # the same share σ as planned, summed over ``shares`` instead of ``num_shares``
        z_released = z * math.sqrt(shares / accountant.num_shares)
        group = DistributedDiscreteGaussianAccountant(
            l2_sensitivity=accountant.l2_sensitivity, num_shares=shares, dim=accountant.dim,
            orders=accountant.orders, subsampling=accountant.subsampling,
            use_shift_profile=accountant.use_shift_profile)
        group.step(noise_multiplier=z_released, sample_rate=q, steps=int(chunk.size))
        groups.append(group)
    return ReleasedSharesCharge(groups=tuple(groups), planned=accountant)
