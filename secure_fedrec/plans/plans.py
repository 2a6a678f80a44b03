"""A run's privacy: calibration, the accountant(s), the budget guard and the report.

One object per run, owned by the trainer; it decides the aggregation pipeline
for the chosen unit and noise placement, says before each round whether the
budget allows it (stopping *before* ε would be exceeded), and steps the
accountants after it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..config import ConfigError, RunConfig
from .accounting import ClientAccountants, create_accountant
from .adaptive_clipping import (
    InvalidBitNoiseError,
    augmented_l2_bound,
    bit_scale_for_l2_bound,
    default_bit_noise_std,
)
from .clipping import AdaptiveClipNorm, effective_update_noise_multiplier
from .calibration import calibrate_noise_multiplier, calibrate_record_noise_multiplier, default_delta
from .ddg_accounting import DistributedDiscreteGaussianAccountant
from .distributed_dp import DdgPlan, plan_distributed_discrete_gaussian
from .dpsgd import DpSgdStep
from .record_sampling import client_sample_rate, planned_steps

__all__ = ["PrivacySession"]

_PROTOCOL_NAMES = {"secagg+": "SecAgg+ masking", "secagg": "SecAgg masking",
                   "paillier": "threshold-Paillier encryption", "plaintext": "plaintext (non-secure) aggregation"}

_TOLERANCE = 1e-9  # relative slack so a calibrated ε equal to the target is not refused


@dataclass
class PrivacySession:
    config: RunConfig
    n_users: int
    expected_clients: float
    dim: int
    #: record level: each client's number of DP-SGD examples (its sampling rate and steps)
    client_examples: Sequence[int] = (1,)
    #: record level: ratings in the training data, the N of the default δ = 1/N^1.1
    n_records: int | None = None
    delta: float = field(init=False)
    noise_multiplier: float | None = field(init=False, default=None)
    ddg_plan: DdgPlan | None = field(init=False, default=None)
    min_survivors: int = field(init=False, default=1)
    stopped_reason: str | None = field(init=False, default=None)
    #: adaptive clipping (user level): the clip state, the bit coordinate's scale, and the
    #: multiplier z_Δ of the update noise (the accountant is charged noise_multiplier z)
    adaptive_clip: AdaptiveClipNorm | None = field(init=False, default=None)
    bit_scale: float | None = field(init=False, default=None)
    update_noise_multiplier: float | None = field(init=False, default=None)
    bit_noise_std: float | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        p, t = self.config.privacy, self.config.training
        self.unit, self.noise = p.unit, p.noise
        # δ = 1/N^1.1 for N privacy units: users at user level, ratings at record level
        units = self.n_records if self.unit == "record" and self.n_records else self.n_users
        self.delta = p.delta if p.delta is not None else default_delta(units)
        self.sample_rate = min(1.0, self.expected_clients / max(1, self.n_users))
        self.accountant = None
        self.client_accountants: ClientAccountants | None = None
        if self.unit == "user" and self.noise == "central":
            self.noise_multiplier = (
                p.noise_multiplier if p.noise_multiplier is not None
                else calibrate_noise_multiplier(p.target_epsilon, self.delta, sample_rate=self.sample_rate,
                                                steps=t.rounds, accountant=p.accountant)
            )
            self.accountant = create_accountant(p.accountant)
            if p.clipping == "adaptive":
                self._plan_adaptive_central()
        elif self.unit == "user":
            self.min_survivors = max(2, math.floor(self.config.aggregation.threshold_fraction * self.expected_clients))
            self.max_clients = max(self.min_survivors, math.ceil(self.expected_clients + 6 * math.sqrt(self.expected_clients)))
            if p.clipping == "adaptive":
                self._plan_adaptive_distributed()
            else:
                self.ddg_plan = self._plan_ddg(l2_clip=p.clip_norm, dim=self.dim)
            self.accountant = DistributedDiscreteGaussianAccountant()
        elif self.unit == "record":
            # Calibrate for the worst client, which may be sampled in every round.
            self.noise_multiplier = (
                p.noise_multiplier if p.noise_multiplier is not None
                else calibrate_record_noise_multiplier(
                    p.target_epsilon, self.delta, client_examples=self.client_examples,
                    batch_size=p.record_batch_size, epochs=t.local_epochs, rounds=t.rounds)
            )
            self.client_accountants = ClientAccountants(mechanism="rdp")

    def _plan_ddg(self, *, l2_clip: float, dim: int) -> DdgPlan:
        p = self.config.privacy
        return plan_distributed_discrete_gaussian(
            target_epsilon=p.target_epsilon, delta=self.delta, l2_clip=l2_clip, dim=dim,
            bits=self.config.aggregation.bits, min_survivors=self.min_survivors,
            max_clients=self.max_clients, sample_rate=self.sample_rate, rounds=self.config.training.rounds,
        )

    # -- adaptive clipping (Andrew et al. 2021; see adaptive_clipping.py) -----------------------
    def _adaptive_state(self) -> AdaptiveClipNorm:
        p = self.config.privacy
        self.bit_noise_std = (p.clip_count_stddev if p.clip_count_stddev is not None
                              else default_bit_noise_std(self.expected_clients))
        # the count arrives noised through the aggregation pipeline (AdaptiveClip)
        return AdaptiveClipNorm(clip_norm=p.clip_norm, target_quantile=p.target_quantile,
                                learning_rate=p.clip_learning_rate,
                                count_noise_multiplier=self.bit_noise_std)

    def _plan_adaptive_central(self) -> None:
        self.adaptive_clip = self._adaptive_state()
        try:
            self.update_noise_multiplier = effective_update_noise_multiplier(
                self.noise_multiplier, self.bit_noise_std)
        except ValueError:
            raise ConfigError(
                f"privacy.clip_count_stddev (σ_b={self.bit_noise_std:g}) must exceed z/2 = "
                f"{self.noise_multiplier / 2:g}: otherwise the clipped-count estimate alone spends the "
                "whole privacy budget") from None
        self.bit_scale = self.update_noise_multiplier / self.bit_noise_std

    def _plan_adaptive_distributed(self) -> None:
        """The augmented vector (update / C, plus the bit) under the distributed discrete Gaussian.

        The DDG plan is calibrated for an L2 bound ``L`` of the augmented vector:
        first at ``L = 1`` to learn the effective multiplier ``z`` the target ε
        allows, then at ``L = sqrt(1 / (1 - (z / 2σ_b)²))``, with the bit scale
        chosen so the vector's norm is at most ``L`` exactly. The accountant
        sees that plan, so ε is exact whatever the realized bit noise; the bit
        noise is σ_b up to the recalibration (reported as ``bit_noise_std``).
        """
        self.adaptive_clip = self._adaptive_state()
        dim = self.dim + 1
        unit_plan = self._plan_ddg(l2_clip=1.0, dim=dim)
        effective = unit_plan.model_unit_noise_std / (unit_plan.gamma * unit_plan.l2_sensitivity)
        try:
            bound = augmented_l2_bound(effective, self.bit_noise_std)
        except InvalidBitNoiseError as exc:
            raise ConfigError(str(exc)) from None
        self.ddg_plan = self._plan_ddg(l2_clip=bound, dim=dim)
        self.bit_scale = bit_scale_for_l2_bound(bound)
        self.bit_noise_std = self.ddg_plan.model_unit_noise_std / self.bit_scale
        self.adaptive_clip.count_noise_multiplier = self.bit_noise_std  # informational: already noised
        self.update_noise_multiplier = self.ddg_plan.model_unit_noise_std

    @property
    def mechanism_dim(self) -> int:
        """Coordinates the user-level mechanism noises (the update, plus the bit when adaptive)."""
        return self.dim + (1 if self.adaptive_clip is not None else 0)

    @property
    def enabled(self) -> bool:
        return self.unit != "none"

    # -- user level ---------------------------------------------------------------------------
    def _user_step(self) -> dict[str, Any]:
        if self.ddg_plan is not None:
            plan = self.ddg_plan
            return {"sigma": plan.share_sigma, "l2_sensitivity": plan.l2_sensitivity,
                    "num_shares": self.min_survivors, "dim": self.mechanism_dim,
                    "sample_rate": self.sample_rate}
        return {"noise_multiplier": self.noise_multiplier, "sample_rate": self.sample_rate}

    def can_run_round(self) -> bool:
        """Whether one more round keeps ε within the target (user level; always true otherwise)."""
        target = self.config.privacy.target_epsilon
        if self.unit != "user" or target is None:
            return True
        eps = self.accountant.epsilon_after(delta=self.delta, **self._user_step())
        if eps > target * (1 + _TOLERANCE):
            self.stopped_reason = (f"stopped before the next round: it would spend ε={eps:.3f} "
                                   f"> target {target}")
            return False
        return True

    def after_round(self) -> dict[str, float]:
        """Charge one round (user level: every round counts under Poisson sampling)."""
        if self.unit == "user":
            self.accountant.step(**self._user_step())
            return {"epsilon": self.accountant.get_epsilon(self.delta)}
        if self.unit == "record" and self.client_accountants is not None and len(self.client_accountants):
            return {"epsilon": self.client_accountants.worst_epsilon(self.delta)}
        return {}

    # -- record level -------------------------------------------------------------------------
    def client_can_train(self, client: int, num_examples: int) -> bool:
        """Record level: a client abstains once another round would exceed its own budget."""
        target = self.config.privacy.target_epsilon
        if self.unit != "record" or target is None:
            return True
        p, t = self.config.privacy, self.config.training
        acc = self.client_accountants.register(client)
        eps = acc.epsilon_after(
            noise_multiplier=self.noise_multiplier,
            sample_rate=client_sample_rate(num_examples, p.record_batch_size),
            steps=planned_steps(num_examples, p.record_batch_size, t.local_epochs), delta=self.delta,
        )
        return eps <= target * (1 + _TOLERANCE)

    def record_client_step(self, client: int, step: DpSgdStep) -> None:
        self.client_accountants.register(client).step(
            noise_multiplier=step.noise_multiplier, sample_rate=step.sample_rate, steps=step.steps
        )

    # -- reporting ------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        p = self.config.privacy
        if not self.enabled:
            return {"unit": "none", "epsilon": math.inf, "statement": "no differential privacy"}
        noise = self.noise if self.unit == "user" else "client DP-SGD"
        out: dict[str, Any] = {"unit": self.unit, "noise": noise, "delta": self.delta,
                               "target_epsilon": p.target_epsilon, "clip_norm": p.clip_norm}
        if self.unit == "user":
            eps = self.accountant.get_epsilon(self.delta) if self.accountant.history else 0.0
            out.update(epsilon=eps, sample_rate=self.sample_rate, clipping=p.clipping)
            if self.adaptive_clip is not None:
                out.update(
                    clip_norm_initial=p.clip_norm, clip_norm_final=self.adaptive_clip.clip_norm,
                    target_quantile=p.target_quantile, clip_learning_rate=p.clip_learning_rate,
                    bit_noise_std=self.bit_noise_std, update_noise_multiplier=self.update_noise_multiplier,
                    adaptive_clipping="Andrew et al. 2021: the noisy count of unclipped updates is part of "
                                      "the accounted Gaussian mechanism",
                )
            if self.ddg_plan is not None:
                plan = self.ddg_plan
                out.update(
                    accountant="RDP of the distributed discrete Gaussian (Kairouz–Liu–Steinke 2021), "
                               "Poisson subsampling via Zhu–Wang's general upper bound",
                    min_survivors=self.min_survivors, max_clients=self.max_clients,
                    gamma=plan.gamma, share_sigma=plan.share_sigma,
                    noise_std_model_units=plan.model_unit_noise_std,
                    wrap_probability_per_round=plan.wrap_probability,
                )
            else:
                out.update(accountant=f"{p.accountant.upper()} (dp-accounting), Poisson-subsampled Gaussian",
                           noise_multiplier=self.noise_multiplier)
            out["assumptions"] = ("clients sampled by Poisson sampling with rate "
                                  f"{self.sample_rate:.4g}; neighbouring datasets differ in one user's data")
        else:
            dist = (self.client_accountants.epsilon_distribution(self.delta)
                    if self.client_accountants is not None and len(self.client_accountants) else None)
            out.update(
                epsilon=dist.worst_epsilon if dist else 0.0,
                epsilon_distribution={
                    "worst_client": dist.worst_client, "mean": dist.mean_epsilon,
                    **{f"p{k:g}": v for k, v in dist.percentiles.items()},
                } if dist else None,
                noise_multiplier=self.noise_multiplier,
                accountant="RDP per client (dp-accounting), Poisson-subsampled Gaussian, composed over "
                           "every round the client took part in",
                assumptions="Poisson sampling of each client's examples (Opacus); neighbouring datasets "
                            "differ in one rating; the private user embedding never leaves the client",
            )
        out["statement"] = self.statement(out.get("epsilon", math.inf))
        return out

    def statement(self, epsilon: float) -> str:
        """One line: the unit, (ε, δ) spent, where the noise is added and who is trusted."""
        protocol = _PROTOCOL_NAMES.get(self.config.aggregation.protocol, self.config.aggregation.protocol)
        target = self.config.privacy.target_epsilon
        budget = f" of target ε={target:g}" if target is not None else ""
        if self.unit == "user":
            subject = "user-level DP (one user's entire rating history)"
            if self.noise == "distributed":
                where = (f"distributed discrete Gaussian noise added by the clients before {protocol} "
                         "(the server never sees an un-noised sum)")
            else:
                where = f"Gaussian noise added by the server after {protocol} (trusts the server)"
        else:
            subject = "record-level DP (any single rating; worst client)"
            where = "DP-SGD noise added by each client (Opacus)"
        return f"{subject}: ε={epsilon:.3g}{budget}, δ={self.delta:.2g}; {where}"

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"unit": self.unit, "noise": self.noise, "delta": self.delta}
        if self.accountant is not None:
            state["accountant"] = self.accountant.state_dict()
        if self.client_accountants is not None:
            state["client_accountants"] = self.client_accountants.state_dict()
        if self.adaptive_clip is not None:
            state["adaptive_clip"] = {"clip_norm": self.adaptive_clip.clip_norm}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("unit") != self.unit or state.get("noise") != self.noise:
            raise ValueError("the checkpoint's privacy unit or noise placement differs from this run's")
        if self.accountant is not None:
            self.accountant.load_state_dict(state["accountant"])
        if self.client_accountants is not None:
            self.client_accountants.load_state_dict(state["client_accountants"])
        if self.adaptive_clip is not None:
            if "adaptive_clip" not in state:
                raise ValueError("the checkpoint has no adaptive clip norm")
            clip = float(state["adaptive_clip"]["clip_norm"])
            if not (math.isfinite(clip) and clip > 0):
                raise ValueError("the checkpoint's adaptive clip norm is not a positive number")
            self.adaptive_clip.clip_norm = clip
