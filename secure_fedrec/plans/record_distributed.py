"""Record-level DP with distributed noise: a round is one DP-SGD step of the whole population.

Every client takes part in every round. Each Poisson-samples its own ratings at the
public rate ``q``, clips each sampled example's joint gradient (shared and private
parameters) to ``C``, rounds each example's shared part on its own, and hands the sum
to the secure sum with its share of discrete Gaussian noise; the shares of the
guaranteed minimum of survivors carry the noise of one central DP-SGD step
(Kairouz, Liu, Steinke 2021; Truex et al. 2019 for the hybrid idea). The private rows
take the same step with their own full noise, on the client. The server divides the
released sum by the public expected batch ``q·N`` and applies the step's optimizer.

Accounting (docs/privacy.md §4.4): one population accountant, the distributed discrete
Gaussian's RDP (KLS 2021, Prop. 14) under Poisson sampling of records with rate ``q``
via the symmetric binomial bound, one step per round; no amplification from client
sampling is claimed (there is none: every client takes part, and the server knows it).
"""

from __future__ import annotations

import math
from typing import Any

from ..aggregation import (
    DiscreteGaussianShareEncoding,
    Encoding,
    ExpectedBatchMean,
    Layer,
    Measurements,
    SubsetShareEncoding,
    compact_length,
)
from ..config import ConfigError
from ..privacy.ddg_accounting import DistributedDiscreteGaussianAccountant
from ..privacy.distributed_dp import RecordDdgPlan, plan_record_discrete_gaussian
from ..training.methods import DistributedDpSgd, TrainingMethod
from .base import PROTOCOL_NAMES, TOLERANCE, PrivacyPlan

__all__ = ["RecordDistributed"]


class RecordDistributed(PrivacyPlan):
    """DP-SGD of the whole population per round, its noise shared among the clients."""

    unit = "record"

    def _calibrate(self) -> None:
        p, t, agg = self.config.privacy, self.config.training, self.config.aggregation
        pop = self.population
        if pop.example_dim is None:
            raise ValueError("record-level distributed noise needs the model's per-example dimension")
        self.clients = pop.n_users
        self._min_survivors = max(2, math.floor(agg.threshold_fraction * self.clients))
        if self._min_survivors > self.clients:
            raise ConfigError(f"record-level distributed noise needs at least 2 clients; the data has {self.clients}")
        self.examples = int(sum(int(n) for n in pop.client_examples))
        self.sample_rate = float(p.record_sample_rate)
        self.expected_batch = self.sample_rate * self.examples
        # the compact upload keeps a public subset of the coordinates: the noise covers those only
        self.noised_dim = (compact_length(pop.dim, agg.compact_keep) if agg.encoding == "compact" else pop.dim)
        if p.record_optimizer != "adam" and t.reg > 0:
            raise ConfigError("training.reg (weight decay) is applied by the 'adam' step only; set "
                              "training.reg = 0 with privacy.record_optimizer = 'sgd'")
        try:
            self.ddg: RecordDdgPlan = plan_record_discrete_gaussian(
                target_epsilon=None if p.noise_multiplier is not None else p.target_epsilon, delta=self.delta,
                clip_norm=p.clip_norm, dim=self.noised_dim, example_dim=pop.example_dim, bits=agg.bits,
                min_survivors=self._min_survivors, max_clients=self.clients, max_examples=self.examples,
                sample_rate=self.sample_rate, steps=t.rounds, noise_multiplier=p.noise_multiplier)
        except ValueError as exc:
            raise ConfigError(f"record-level distributed noise: {exc}") from None
        self.accountant = DistributedDiscreteGaussianAccountant(
            l2_sensitivity=self.ddg.l2_sensitivity, num_shares=self._min_survivors, dim=self.noised_dim,
            subsampling="symmetric")

    def _training(self) -> TrainingMethod:
        p, t = self.config.privacy, self.config.training
        return DistributedDpSgd(
            sample_rate=self.sample_rate, clip_norm=p.clip_norm, gamma=self.ddg.gamma,
            rounding_beta=self.ddg.beta, example_dim=self.ddg.example_dim,
            noise_stddev=self.ddg.model_unit_noise_std, denominator=self.expected_batch,
            optimizer=p.record_optimizer, lr=p.record_lr, weight_decay=t.reg, negatives=t.negatives)

    def _layers(self) -> tuple[Layer, ...]:
        return (ExpectedBatchMean(expected_batch=self.expected_batch),)

    def _encoding(self) -> Encoding:
        plan = self.ddg
        biggest = max(int(n) for n in self.population.client_examples)
        fields = {"gamma": plan.gamma, "share_sigma": plan.share_sigma, "bits": plan.bits,
                  "max_level": biggest * plan.max_level, "noise_stddev": plan.model_unit_noise_std,
                  "wrap_probability": plan.wrap_probability}
        agg = self.config.aggregation
        if agg.encoding == "compact":
            return SubsetShareEncoding(**fields, keep_fraction=agg.compact_keep,
                                       salt=int(self.config.seed) % 2**63, dense_length=self.population.dim)
        return DiscreteGaussianShareEncoding(**fields)

    # -- what the server does differently ------------------------------------------------------
    @property
    def noise(self) -> str:
        return "distributed"

    @property
    def expected_clients(self) -> float:
        return float(self.clients)

    @property
    def min_survivors(self) -> int:
        return self._min_survivors

    @property
    def every_client(self) -> bool:
        return True

    def server_optimizer_spec(self) -> tuple[str, float, float]:
        p = self.config.privacy
        return p.record_optimizer, p.record_lr, self.config.training.reg

    # -- accounting ----------------------------------------------------------------------------
    def can_run_round(self) -> bool:
        target = self.config.privacy.target_epsilon
        if target is None:
            return True
        eps = self.accountant.epsilon_after(noise_multiplier=self.ddg.noise_multiplier,
                                            sample_rate=self.sample_rate, delta=self.delta)
        if eps > target * (1 + TOLERANCE):
            self.stopped_reason = f"stopped before the next round: it would spend ε={eps:.3f} > target {target}"
            return False
        return True

    def after_round(self) -> Measurements:
        """Every round counts, whatever it released: each client's private rows took the step."""
        self.accountant.step(noise_multiplier=self.ddg.noise_multiplier, sample_rate=self.sample_rate)
        return {"epsilon": self.accountant.get_epsilon(self.delta)}

    def gaussian_pld_epsilon(self) -> float:
        """What the PLD accountant of a *continuous* Gaussian says for the same steps: the cross-check.
        The certified figure is the smaller of the RDP bound and the PLD of the continuous Gaussian
        that dominates the shares (variance ``nσ² - 8``, privacy/ddg_dominance.py), so it sits at or
        just above this one."""
        from ..privacy.accounting import create_accountant

        pld = create_accountant("pld")
        pld.extend(self.accountant.history)
        return pld.get_epsilon(self.delta) if pld.history else 0.0

    # -- reporting -----------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        p, plan = self.config.privacy, self.ddg
        eps = self.accountant.get_epsilon(self.delta) if self.accountant.history else 0.0
        out: dict[str, Any] = {
            "unit": self.unit, "noise": self.noise, "delta": self.delta, "target_epsilon": p.target_epsilon,
            "epsilon": eps, "epsilon_gaussian_pld": self.gaussian_pld_epsilon(),
            "clip_norm": p.clip_norm, "sample_rate": self.sample_rate, "steps": len(self.accountant),
            "expected_batch": self.expected_batch, "training_examples": self.examples,
            "clients_per_round": self.clients, "min_survivors": self._min_survivors,
            "noise_multiplier": plan.noise_multiplier,
            "noise_std_model_units": plan.model_unit_noise_std,
            "noise_multiplier_over_clip": plan.model_unit_noise_std / p.clip_norm,
            "gamma": plan.gamma, "share_sigma": plan.share_sigma, "l2_sensitivity_integer": plan.l2_sensitivity,
            "rounding_inflation": plan.gamma * plan.l2_sensitivity / p.clip_norm,
            "wrap_probability_per_round": plan.wrap_probability,
            "noised_dim": self.noised_dim,
            "accountant": "the smaller of the PLD of the Poisson-subsampled continuous Gaussian that dominates "
                          "the shares (docs/privacy.md, 'The dominating Gaussian') and the RDP of the distributed "
                          "discrete Gaussian (Kairouz-Liu-Steinke 2021, Prop. 14), Poisson sampling of records "
                          "via the symmetric binomial bound (docs/privacy.md §4.4)",
            "assumptions": (
                f"every client takes part in every round ({self.clients}; training.clients_per_round does "
                "not apply); each example (rating) Poisson-sampled with the public rate "
                f"{self.sample_rate:g} within its client; neighbouring datasets differ in one example; "
                "the clients' example counts are public; the noise of the sum is carried by the shares "
                f"of at least {self._min_survivors} survivors, which the protocol guarantees"),
        }
        if self.config.aggregation.encoding == "compact":
            out.update(encoding="compact", compact_keep=self.config.aggregation.compact_keep,
                       compact_note="a public random subset of the coordinates each round (no rotation: each "
                                    "example is rounded on its own), in the plan's ring; the accountant's "
                                    "dimension is the subset's")
        out["statement"] = self.statement(eps)
        return out

    def statement(self, epsilon: float) -> str:
        protocol = PROTOCOL_NAMES.get(self.config.aggregation.protocol, self.config.aggregation.protocol)
        target = self.config.privacy.target_epsilon
        budget = f" of target ε={target:g}" if target is not None else ""
        where = (f"one DP-SGD step of all clients per round, its discrete Gaussian noise shared by the "
                 f"clients before {protocol}")
        if self.config.aggregation.protocol == "plaintext":
            where += " — a SIMULATION of the secure sum (the server here sees each client's noise share)"
        else:
            where += " (the server never sees an un-noised sum)"
        return f"record-level DP (any single training example; on implicit feedback an interaction with its negatives is 1 + negatives examples): ε={epsilon:.3g}{budget}, δ={self.delta:.2g}; {where}"

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "accountant": self.accountant.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.accountant.load_state_dict(state["accountant"])
