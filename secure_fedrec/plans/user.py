"""User-level DP (DP-FedAvg): each client's whole update is clipped, the sum carries Gaussian noise.

Two placements of the noise, each with fixed or adaptive clipping (Andrew et al.
2021, :mod:`secure_fedrec.privacy.adaptive_clipping`):

* :class:`UserCentral` — the server adds ``N(0, (zC)²)`` after the (secure) sum: it
  trusts the server. Accounted with PLD or RDP, one Poisson-subsampled Gaussian step
  per round.
* :class:`UserDistributed` — every client adds its share of discrete Gaussian noise
  before the secure sum (Kairouz, Liu, Steinke 2021); the shares of the guaranteed
  minimum of survivors carry the whole noise, so the server never sees an un-noised
  sum. Accounted with the DDG's RDP bound, one step per round.

Every round counts under Poisson sampling of clients, whether it released a sum or
aborted, so :meth:`after_round` charges every round.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..aggregation import (
    AdaptiveClip,
    AdaptiveClipState,
    CentralGaussianNoise,
    Clip,
    CompactRotatedEncoding,
    DistributedDiscreteGaussianEncoding,
    Encoding,
    Layer,
    Mean,
    Measurements,
    compact_length,
)
from ..config import ConfigError
from ..privacy.accounting import Accountant, create_accountant
from ..privacy.adaptive_clipping import (
    InvalidBitNoiseError,
    augmented_l2_bound,
    bit_scale_for_l2_bound,
    default_bit_noise_std,
)
from ..privacy.calibration import calibrate_noise_multiplier
from ..privacy.clipping import effective_update_noise_multiplier
from ..privacy.ddg_accounting import (
    DistributedDiscreteGaussianAccountant,
    conditional_rounding_l2_bound,
)
from ..privacy.ddg_realised import ReleasedSharesCharge, charge_released_shares
from ..privacy.distributed_dp import DdgPlan, plan_distributed_discrete_gaussian
from .base import PROTOCOL_NAMES, TOLERANCE, PrivacyPlan, ring_encoding

#: a checkpoint's released share counts: at most one per round and one share per user
#: (the ranges of training.rounds and of a population in config.py)
MAX_RECORDED_ROUNDS, MAX_SHARES = 10**6, 10**8

__all__ = ["AdaptiveClipping", "UserCentral", "UserDistributed", "UserLevelPlan"]


@dataclass(frozen=True)
class AdaptiveClipping:
    """The numbers of adaptive clipping under a user-level plan.

    ``bit_noise_std`` (σ_b) is the noise on the clipped-count sum, ``bit_scale`` (k)
    the scale of the bit coordinate, ``update_noise_multiplier`` (z_Δ) the noise on
    the unit-scale update; the accountant is charged the plan's ``z`` (Andrew et
    al. 2021, Thm. 1: both sums are one Gaussian mechanism).
    """

    bit_noise_std: float
    bit_scale: float
    update_noise_multiplier: float


class UserLevelPlan(PrivacyPlan):
    """What the two user-level placements share: clipping, the mean over E[clients], the guard."""

    unit = "user"
    accountant: Accountant
    adaptive: AdaptiveClipping | None = None

    def _clip_layer(self) -> Layer:
        p = self.config.privacy
        if self.adaptive is None:
            return Clip(clip_norm=p.clip_norm)
        return AdaptiveClip(initial_clip_norm=p.clip_norm, target_quantile=p.target_quantile,
                            learning_rate=p.clip_learning_rate, bit_scale=self.adaptive.bit_scale)

    def _default_bit_noise_std(self) -> float:
        p = self.config.privacy
        return p.clip_count_stddev if p.clip_count_stddev is not None else default_bit_noise_std(
            self.expected_clients)

    @property
    def mechanism_dim(self) -> int:
        """Coordinates the mechanism noises (the update, plus the bit when adaptive)."""
        return self.population.dim + (1 if self.adaptive is not None else 0)

    @property
    def compact(self) -> bool:
        """Whether the upload is the compact encoding (``aggregation.encoding = "compact"``)."""
        return self.config.aggregation.encoding == "compact"

    @property
    def noised_dim(self) -> int:
        """Coordinates the sum carries and the noise covers: ``mechanism_dim``, or the compact subset."""
        if not self.compact:
            return self.mechanism_dim
        return compact_length(self.mechanism_dim, self.config.aggregation.compact_keep, self._dense_tail)

    @property
    def _dense_tail(self) -> int:
        return 1 if self.config.privacy.clipping == "adaptive" else 0

    @property
    def _max_clients(self) -> int:
        """A high-probability ceiling on the clients of a round (Poisson: mean + 6 std), for ring sizing."""
        expected = self.expected_clients
        return math.ceil(expected + 6 * math.sqrt(expected))

    def _compact_encoding(self, *, gamma: float, l2_sensitivity: float, **noise: float) -> Encoding:
        agg = self.config.aggregation
        return CompactRotatedEncoding(
            keep_fraction=agg.compact_keep, salt=int(self.config.seed) % 2**63, dense_length=self.mechanism_dim,
            gamma=gamma, l2_sensitivity=l2_sensitivity, bits=agg.compact_bits, dense_tail=self._dense_tail,
            **noise)

    @property
    def clip_norm(self) -> float:
        """The clip norm of the next round (the adaptive one moves every round)."""
        states = [s for s in self.layer_states if isinstance(s, AdaptiveClipState)]
        return states[0].clip_norm if states else self.config.privacy.clip_norm

    @property
    def sample_rate(self) -> float:
        return self.population.sample_rate

    def _round_noise_multiplier(self) -> float:
        """What the accountant is charged for one round."""
        raise NotImplementedError

    def can_run_round(self) -> bool:
        target = self.config.privacy.target_epsilon
        if target is None:
            return True
        eps = self.accountant.epsilon_after(noise_multiplier=self._round_noise_multiplier(),
                                            sample_rate=self.sample_rate, delta=self.delta)
        if eps > target * (1 + TOLERANCE):
            self.stopped_reason = (f"stopped before the next round: it would spend ε={eps:.3f} "
                                   f"> target {target}")
            return False
        return True

    def after_round(self) -> Measurements:
        self.accountant.step(noise_multiplier=self._round_noise_multiplier(), sample_rate=self.sample_rate)
        return {"epsilon": self.accountant.get_epsilon(self.delta)}

    def _summary_common(self) -> dict[str, Any]:
        p = self.config.privacy
        out: dict[str, Any] = {"unit": self.unit, "noise": self.noise, "delta": self.delta,
                               "target_epsilon": p.target_epsilon, "clip_norm": p.clip_norm}
        eps = self.accountant.get_epsilon(self.delta) if self.accountant.history else 0.0
        out.update(epsilon=eps, sample_rate=self.sample_rate, clipping=p.clipping)
        if self.compact:
            agg = self.config.aggregation
            out.update(encoding="compact", compact_bits=agg.compact_bits, compact_keep=agg.compact_keep,
                       noised_dim=self.noised_dim,
                       compact_note="a public random subset of the coordinates each round, randomly rotated; "
                                    "the accountant's dimension and sensitivity are the subset's")
        if self.adaptive is not None:
            out.update(
                clip_norm_initial=p.clip_norm, clip_norm_final=self.clip_norm,
                target_quantile=p.target_quantile, clip_learning_rate=p.clip_learning_rate,
                bit_noise_std=self.adaptive.bit_noise_std,
                update_noise_multiplier=self.adaptive.update_noise_multiplier,
                adaptive_clipping="Andrew et al. 2021: the noisy count of unclipped updates is part of "
                                  "the accounted Gaussian mechanism",
            )
        return out

    @property
    def private_sampling(self) -> bool:
        """Whether every member uploads every round, taking part by its own coin (then nobody
        learns who was sampled); only the distributed placement offers it."""
        return False

    def unsampled_history(self, rounds: int) -> list[tuple[float, float, int]]:
        """What a user who took part in ``rounds`` rounds is charged for by an observer who knows
        which: the ``rounds`` least-noised rounds run, each at sample rate 1."""
        noise = sorted(z for z, _rate, steps in self.accountant.history for _ in range(int(steps)))[:rounds]
        return [(z, 1.0, 1) for z in noise]

    def epsilon_without_sampling(self, rounds: int) -> float:
        """ε of a user who took part in ``rounds`` of the rounds run, for an observer who knows
        which rounds those were: the same mechanism and accountant with no amplification by
        client sampling (sample rate 1), charged for the ``rounds`` least-noised rounds."""
        history = self.unsampled_history(rounds)
        if not history:
            return 0.0
        unsampled = copy.deepcopy(self.accountant)
        unsampled.history = []
        for z, rate, _steps in history:
            unsampled.step(noise_multiplier=z, sample_rate=rate)
        return float(unsampled.get_epsilon(self.delta))

    def known_participation(self, rounds_per_client: np.ndarray) -> dict[str, Any]:
        if self.private_sampling:
            return {"participation_known": None,
                    "participation": ("hidden: every member uploads in every round and takes part by its own "
                                      "CSPRNG coin, so no observer learns who was sampled")}
        counts = np.asarray(rounds_per_client, dtype=np.int64)
        if counts.size == 0 or not self.accountant.history:
            return {}
        most = int(counts.max())
        by_rounds = {str(k): self.epsilon_without_sampling(k) for k in range(1, most + 1)}
        taking_part = counts[counts > 0]
        median = int(np.median(taking_part)) if taking_part.size else 0
        return {"participation_known": {
            "observer": ("anyone who knows which users were sampled in which round: the server under "
                         "distributed noise (it runs the secure aggregation with exactly those clients), a "
                         "round's SecAgg neighbours, and anyone with the run's seed, from which the sample "
                         "is drawn (docs/privacy.md, 'Client sampling and who knows it')"),
            "amplification": "none: each round a user took part in is charged at sample rate 1",
            "max_rounds_per_user": most,
            "median_rounds_per_participating_user": median,
            "users_never_sampled": int(np.count_nonzero(counts == 0)),
            "epsilon_by_rounds_taken_part": by_rounds,
            "epsilon_worst_user": by_rounds[str(most)] if most else 0.0,
            "epsilon_median_user": by_rounds[str(median)] if median else 0.0,
        }}

    @property
    def neighbouring_relation(self) -> str:
        return "neighbouring datasets differ in one user's data"

    def _finish_summary(self, out: dict[str, Any]) -> dict[str, Any]:
        out["assumptions"] = (f"clients sampled by Poisson sampling with rate {self.sample_rate:.4g}; "
                              f"{self.neighbouring_relation}")
        out["statement"] = self.statement(out.get("epsilon", math.inf))
        return out

    def statement(self, epsilon: float) -> str:
        """One line: the unit, (ε, δ) spent, where the noise is added and who is trusted."""
        protocol = PROTOCOL_NAMES.get(self.config.aggregation.protocol, self.config.aggregation.protocol)
        target = self.config.privacy.target_epsilon
        budget = f" of target ε={target:g}" if target is not None else ""
        subject = "user-level DP (one user's entire rating history)"
        if self.noise == "distributed":
            where = (f"distributed discrete Gaussian noise added by the clients before {protocol} "
                     "(the server never sees an un-noised sum)")
        else:
            where = f"Gaussian noise added by the server after {protocol} (trusts the server)"
        return f"{subject}: ε={epsilon:.3g}{budget}{self._epsilon_qualifier()}, δ={self.delta:.2g}; {where}"

    def _epsilon_qualifier(self) -> str:
        """What the ε of :meth:`statement` holds against, where the mechanism needs saying so."""
        return ""

    def state_dict(self) -> dict[str, Any]:
        state = {**super().state_dict(), "accountant": self.accountant.state_dict()}
        if self.adaptive is not None:
            state["adaptive_clip"] = {"clip_norm": self.clip_norm}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.accountant.load_state_dict(state["accountant"])
        if self.adaptive is not None:
            if "adaptive_clip" not in state:
                raise ValueError("the checkpoint has no adaptive clip norm")
            clip = float(state["adaptive_clip"]["clip_norm"])
            if not (math.isfinite(clip) and clip > 0):
                raise ValueError("the checkpoint's adaptive clip norm is not a positive number")
            self.layer_states = tuple(AdaptiveClipState(clip) if isinstance(s, AdaptiveClipState) else s
                                      for s in self.layer_states)


class UserCentral(UserLevelPlan):
    """Central Gaussian noise ``zC`` added by the server after the sum."""

    def _calibrate(self) -> None:
        p, t = self.config.privacy, self.config.training
        self.noise_multiplier: float = (
            p.noise_multiplier if p.noise_multiplier is not None
            else calibrate_noise_multiplier(p.target_epsilon, self.delta, sample_rate=self.sample_rate,
                                            steps=t.rounds, accountant=p.accountant))
        self.accountant = create_accountant(p.accountant)
        if p.clipping == "adaptive":
            bit_noise = self._default_bit_noise_std()
            try:
                update_z = effective_update_noise_multiplier(self.noise_multiplier, bit_noise)
            except ValueError:
                raise ConfigError(
                    f"privacy.clip_count_stddev (σ_b={bit_noise:g}) must exceed z/2 = "
                    f"{self.noise_multiplier / 2:g}: otherwise the clipped-count estimate alone spends the "
                    "whole privacy budget") from None
            self.adaptive = AdaptiveClipping(bit_noise_std=bit_noise, bit_scale=update_z / bit_noise,
                                             update_noise_multiplier=update_z)
        if self.compact:
            if self.adaptive is not None:
                raise ConfigError("aggregation.encoding = 'compact' with central noise needs "
                                  "privacy.clipping = 'fixed'")
            self._plan_compact_ring()

    def _plan_compact_ring(self) -> None:
        """The finest step ``gamma`` at which no sum of up to ``max_clients`` updates can wrap.

        With central noise a wrap is not post-processing (the noise comes after the modular
        sum, so a wrapped coordinate would move by ``2^bits`` and void the sensitivity): the
        ring is sized for the worst case, every client's rotated integer coordinate at its L2
        bound ``Δ`` (conditional rounding enforces it exactly), ``max_clients * Δ < 2^(bits-1)``;
        the encoding refuses to decode a round with more contributors. The server's noise is
        ``z * gamma * Δ``, so the accountant's ``z`` stays exact.
        """
        agg, c = self.config.aggregation, self.config.privacy.clip_norm
        dim, beta = self.noised_dim, math.exp(-0.5)
        self.compact_max_summands = self._max_clients
        limit = ((1 << (agg.compact_bits - 1)) - 1) / self.compact_max_summands  # largest Δ allowed

        def sensitivity(gamma: float) -> float:
            return conditional_rounding_l2_bound(c, gamma, dim, beta)

        low, high = math.log(c) - 40.0, math.log(c) + 5.0  # log(gamma): too fine, coarse enough
        if sensitivity(math.exp(high)) > limit:
            raise ConfigError(f"aggregation.compact_bits = {agg.compact_bits} cannot hold the sum of "
                              f"{self.compact_max_summands} clients' rounded {dim}-coordinate vectors; raise it")
        for _ in range(60):
            middle = (low + high) / 2
            if sensitivity(math.exp(middle)) > limit:
                low = middle
            else:
                high = middle
        self.compact_gamma = math.exp(high)
        self.compact_sensitivity = sensitivity(self.compact_gamma)

    def _round_noise_multiplier(self) -> float:
        return self.noise_multiplier

    def _layers(self) -> tuple[Layer, ...]:
        if self.compact:  # the encoding's server half adds the noise, on the kept coordinates only
            return (Mean(denominator="expected"), self._clip_layer())
        if self.adaptive is None:  # noise zC on the clipped sum
            noise = CentralGaussianNoise(stddev=self.noise_multiplier * self.config.privacy.clip_norm)
        else:  # the inner layers see unit-scale vectors plus the bit: noise z_Δ
            noise = CentralGaussianNoise(stddev=self.adaptive.update_noise_multiplier)
        return (Mean(denominator="expected"), self._clip_layer(), noise)

    def _encoding(self) -> Encoding:
        if self.compact:
            sensitivity = self.compact_gamma * self.compact_sensitivity  # model units
            return self._compact_encoding(gamma=self.compact_gamma, l2_sensitivity=self.compact_sensitivity,
                                          share_sigma=0.0, central_stddev=self.noise_multiplier * sensitivity,
                                          max_summands=self.compact_max_summands)
        if self.adaptive is None:
            return ring_encoding(self.config, self.config.privacy.clip_norm)
        # unit-scale rows have |x_j| <= 1 and the bit coordinate is ±bit_scale/2
        return ring_encoding(self.config, max(1.0, self.adaptive.bit_scale / 2))

    def summary(self) -> dict[str, Any]:
        out = self._summary_common()
        out.update(accountant=f"{self.config.privacy.accountant.upper()} (dp-accounting), "
                              "Poisson-subsampled Gaussian",
                   noise_multiplier=self.noise_multiplier)
        return self._finish_summary(out)


class UserDistributed(UserLevelPlan):
    """Distributed discrete Gaussian shares added by the clients before the secure sum."""

    @property
    def private_sampling(self) -> bool:
        return bool(self.config.privacy.private_sampling)

    @property
    def every_client(self) -> bool:
        return self.private_sampling

    @property
    def private_sampling_rate(self) -> float | None:
        return self.sample_rate if self.private_sampling else None

    def _calibrate(self) -> None:
        self.ddg_plan: DdgPlan
        # With private sampling every member's share is in every sum: the floor and the ring are
        # sized for the population; otherwise for the (Poisson) sample.
        uploaders = float(self.population.n_users) if self.private_sampling else self.expected_clients
        self._min_survivors = max(2, math.floor(self.config.aggregation.threshold_fraction * uploaders))
        self.max_clients = max(self._min_survivors, math.ceil(uploaders + 6 * math.sqrt(uploaders)))
        if self.config.privacy.clipping == "adaptive":
            self._plan_adaptive()
        else:
            self.ddg_plan = self._plan_ddg(l2_clip=self.config.privacy.clip_norm, dim=self.population.dim)
        self.accountant = DistributedDiscreteGaussianAccountant(
            l2_sensitivity=self.ddg_plan.l2_sensitivity, num_shares=self._min_survivors, dim=self.noised_dim,
            subsampling=self._subsampling)
        #: per charged round, the noise-bearing contributors its released sum carried (0: none released)
        self.released_shares: list[int] = []
        self._released_epsilon: tuple[tuple[int, int] | None, float | None] = (None, None)

    def record_release(self, noise_bearing: int) -> None:
        self.released_shares.append(int(noise_bearing))

    def released_shares_charge(self) -> ReleasedSharesCharge | None:
        """The rounds charged at the shares their sums carried (:mod:`..privacy.ddg_realised`), or
        None where that does not apply (the amplified charge, no released round)."""
        return charge_released_shares(self.accountant, self.released_shares)

    def unsampled_charge(self, rounds: int) -> ReleasedSharesCharge | None:
        """What a user who took part in ``rounds`` rounds is charged by an observer who knows which,
        each round at the shares its sum carried: the ``rounds`` released rounds with the least
        noise (fewest shares), at sample rate 1 — where a user surely takes part the worlds differ
        by a shift whatever the sampling charge. None before any released round."""
        steps = [z for z, _q, n in self.accountant.history for _ in range(int(n))]
        if len(steps) != len(self.released_shares):
            return None
        # the least-noised rounds: the smallest share variance summed over the shares carried
        released = sorted(((z * z * c, z, c) for z, c in zip(steps, self.released_shares, strict=True) if c > 0))
        chosen = released[:rounds]
        if not chosen:
            return None
        unsampled = DistributedDiscreteGaussianAccountant(
            l2_sensitivity=self.accountant.l2_sensitivity, num_shares=self.accountant.num_shares,
            dim=self.accountant.dim, orders=self.accountant.orders, subsampling="revealed")
        for _variance, z, _count in chosen:
            unsampled.step(noise_multiplier=z, sample_rate=1.0)
        return charge_released_shares(unsampled, [count for _variance, _z, count in chosen])

    def epsilon_without_sampling(self, rounds: int) -> float:
        planned = super().epsilon_without_sampling(rounds)
        charge = self.unsampled_charge(rounds)
        return planned if charge is None else min(planned, charge.get_epsilon(self.delta))

    def epsilon_at_released_shares(self) -> float | None:
        # the summary and its statement line both ask: computed once per recorded round
        key = (len(self.accountant.history), len(self.released_shares))
        if self._released_epsilon[0] != key:
            charge = self.released_shares_charge()
            self._released_epsilon = (key, None if charge is None else charge.get_epsilon(self.delta))
        return self._released_epsilon[1]

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "released_shares": list(self.released_shares)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        shares = state.get("released_shares", [])  # absent in checkpoints from before: no ex-post figure
        if not (isinstance(shares, list) and len(shares) <= MAX_RECORDED_ROUNDS
                and all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= MAX_SHARES for c in shares)):
            raise ValueError("the checkpoint's released share counts are not a list of non-negative integers")
        self.released_shares = list(shares)
        self._released_epsilon = (None, None)

    def known_participation(self, rounds_per_client: np.ndarray) -> dict[str, Any]:
        out = super().known_participation(rounds_per_client)
        if self.private_sampling or not self.accountant.history:
            return out
        # Server sampling: a sampled user adds a share an unsampled one does not, so the amplified ε
        # does not cover the number of shares in the sum (docs/privacy.md, "The share count").
        # This one does: every observer is told who took part.
        if out.get("participation_known") and self.unsampled_charge(1) is not None:
            out["participation_known"]["charged_at"] = ("each round at the noise shares its released sum carried "
                                                        "(docs/privacy.md, 'The shares a release carried')")
        revealed = self.accountant.with_subsampling("revealed")
        at_released = charge_released_shares(revealed, self.released_shares)
        return {**out, "participation_revealed": {
            "epsilon": revealed.get_epsilon(self.delta),
            "epsilon_at_released_shares": None if at_released is None else at_released.get_epsilon(self.delta),
            "delta": self.delta,
            "calibrated_to": self._subsampling == "revealed",  # then it is the run's ε
            "relation": ("zero-out: the user takes part by the same coins in both worlds, its data replaced "
                         "by none; that it took part is not protected"),
            "observer": ("anyone, the server that draws the sample included; covers every statistic of the "
                         "released sums, the number of noise shares in them included"),
            "accountant": ("the smaller of: the exact profile of the continuous Gaussian that dominates the "
                           "distributed discrete Gaussian, averaged over the revealed participation patterns "
                           "(docs/privacy.md, 'The dominating Gaussian'); and RDP, each round "
                           "1/(α-1)·log(1 - q + q·exp((α-1)·RDP_α)) of the unsampled mechanism, composed"),
        }}

    def _plan_ddg(self, *, l2_clip: float, dim: int) -> DdgPlan:
        """The DDG plan for vectors of ``dim`` coordinates before the encoding (the compact encoding
        noises its kept, rotated subset: fewer coordinates, a smaller ring, the rotated wrap bound)."""
        p, agg = self.config.privacy, self.config.aggregation
        if self.compact:
            dim = compact_length(dim, agg.compact_keep, self._dense_tail)
        return plan_distributed_discrete_gaussian(
            target_epsilon=p.target_epsilon, delta=self.delta, l2_clip=l2_clip, dim=dim,
            bits=agg.compact_bits if self.compact else agg.bits, min_survivors=self._min_survivors,
            max_clients=self.max_clients, sample_rate=self.sample_rate, rounds=self.config.training.rounds,
            rotated=self.compact, subsampling=self._subsampling)

    def statement(self, epsilon: float) -> str:
        line = super().statement(epsilon)
        released = self.epsilon_at_released_shares()
        if released is None or released >= epsilon:
            return line
        return f"{line}; ε={released:.3g} charged at the noise shares the released sums carried"

    def _released_shares_summary(self) -> dict[str, Any]:
        charge = self.released_shares_charge()
        if charge is None:
            return {}
        released = [c for c in self.released_shares if c > 0]
        return {
            "epsilon_at_released_shares": self.epsilon_at_released_shares(),
            "released_shares": {"min": min(released), "median": float(np.median(released)), "max": max(released),
                                "rounds_released": len(released), "rounds_charged": len(self.released_shares)},
            "released_shares_note": (
                f"the same mechanism charged at the noise shares each released sum carried (ex post) instead of "
                f"the guaranteed {self._min_survivors}: that count is fixed by who took part and who dropped out, "
                "which does not depend on the data and which this claim does not protect; a bound for every "
                "user, at most the planned ε (docs/privacy.md, 'The shares a release carried')"),
        }

    def _epsilon_qualifier(self) -> str:
        if self._subsampling == "revealed":
            return " (proven for every observer, who took part revealed)"
        if self._subsampling == "general":
            return " (amplified by the hidden sample: NOT a proven bound, docs/privacy.md 'The share count')"
        return ""

    @property
    def neighbouring_relation(self) -> str:
        if self._subsampling == "revealed":
            return "who took part revealed; neighbouring datasets: one user's data replaced by none (zero-out)"
        return super().neighbouring_relation

    @property
    def _subsampling(self) -> str:
        """How the accountant charges a round's Poisson participation (the docstring of
        :class:`DistributedDiscreteGaussianAccountant`)."""
        if self.private_sampling:
            return "symmetric"
        return "general" if self.config.privacy.calibrate_to == "amplified" else "revealed"

    def _plan_adaptive(self) -> None:
        """The augmented vector (update / C, plus the bit) under the distributed discrete Gaussian.

        The DDG plan is calibrated for an L2 bound ``L`` of the augmented vector:
        first at ``L = 1`` to learn the effective multiplier ``z`` the target ε
        allows, then at ``L = sqrt(1 / (1 - (z / 2σ_b)²))``, with the bit scale
        chosen so the vector's norm is at most ``L`` exactly. The accountant
        sees that plan, so ε is exact whatever the realized bit noise; the bit
        noise is σ_b up to the recalibration (reported as ``bit_noise_std``).
        """
        bit_noise = self._default_bit_noise_std()
        dim = self.population.dim + 1
        unit_plan = self._plan_ddg(l2_clip=1.0, dim=dim)
        effective = unit_plan.model_unit_noise_std / (unit_plan.gamma * unit_plan.l2_sensitivity)
        try:
            bound = augmented_l2_bound(effective, bit_noise)
        except InvalidBitNoiseError as exc:
            raise ConfigError(str(exc)) from None
        self.ddg_plan = self._plan_ddg(l2_clip=bound, dim=dim)
        bit_scale = bit_scale_for_l2_bound(bound)
        self.adaptive = AdaptiveClipping(bit_noise_std=self.ddg_plan.model_unit_noise_std / bit_scale,
                                         bit_scale=bit_scale,
                                         update_noise_multiplier=self.ddg_plan.model_unit_noise_std)

    @property
    def min_survivors(self) -> int:
        return self._min_survivors

    def _round_noise_multiplier(self) -> float:
        return self.ddg_plan.noise_multiplier(self._min_survivors)

    def _layers(self) -> tuple[Layer, ...]:
        return (Mean(denominator="expected"), self._clip_layer())

    def _encoding(self) -> Encoding:
        plan = self.ddg_plan
        if self.compact:
            return self._compact_encoding(gamma=plan.gamma, l2_sensitivity=plan.l2_sensitivity,
                                          share_sigma=plan.share_sigma, noise_stddev=plan.model_unit_noise_std,
                                          wrap_probability=plan.wrap_probability)
        return DistributedDiscreteGaussianEncoding(
            gamma=plan.gamma, l2_sensitivity=plan.l2_sensitivity, share_sigma=plan.share_sigma,
            bits=plan.bits, noise_stddev=plan.model_unit_noise_std, wrap_probability=plan.wrap_probability)

    def summary(self) -> dict[str, Any]:
        out = self._summary_common()
        plan = self.ddg_plan
        out.update(
            accountant={
                "symmetric": "Poisson subsampling by the clients' own coins (every member's share is in every sum: "
                             "a pure shift): the smaller of the subsampled continuous Gaussian's PLD that "
                             "dominates the shares (docs/privacy.md, 'The dominating Gaussian') and the RDP of "
                             "the distributed discrete Gaussian (Kairouz–Liu–Steinke 2021), symmetric bound (§4.4)",
                "general": "RDP of the distributed discrete Gaussian (Kairouz–Liu–Steinke 2021), Poisson "
                           "subsampling via Zhu–Wang's general upper bound (amplified: not charged for the number "
                           "of noise shares in each sum, docs/privacy.md, 'The share count'; not a proven bound)",
                "revealed": "participation revealed (zero-out), no amplification: proven for every observer; the "
                            "smaller of the exact profile of the continuous Gaussian that dominates the shares, "
                            "averaged over participation patterns (docs/privacy.md, 'The dominating Gaussian'), "
                            "and the RDP of the distributed discrete Gaussian (Kairouz–Liu–Steinke 2021)",
            }[self._subsampling],
            private_sampling=self.private_sampling,
            min_survivors=self._min_survivors, max_clients=self.max_clients,
            gamma=plan.gamma, share_sigma=plan.share_sigma,
            **self._released_shares_summary(),
            noise_std_model_units=plan.model_unit_noise_std,
            wrap_probability_per_round=plan.wrap_probability,
        )
        return self._finish_summary(out)
