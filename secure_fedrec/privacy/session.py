"""A run's privacy: calibration, the accountant(s), the budget guard and the report.

One object per run, owned by the trainer; it decides the aggregation pipeline
for the chosen unit and noise placement, says before each round whether the
budget allows it (stopping *before* ε would be exceeded), and steps the
accountants after it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..config import RunConfig
from .accounting import ClientAccountants, create_accountant
from .calibration import calibrate_noise_multiplier, default_delta
from .ddg_accounting import DistributedDiscreteGaussianAccountant
from .distributed_dp import DdgPlan, plan_distributed_discrete_gaussian
from .dpsgd import DpSgdStep, client_sample_rate, planned_steps

__all__ = ["PrivacySession"]

_TOLERANCE = 1e-9  # relative slack so a calibrated ε equal to the target is not refused


@dataclass
class PrivacySession:
    config: RunConfig
    n_users: int
    expected_clients: float
    dim: int
    min_client_examples: int = 1
    delta: float = field(init=False)
    noise_multiplier: float | None = field(init=False, default=None)
    ddg_plan: DdgPlan | None = field(init=False, default=None)
    min_survivors: int = field(init=False, default=1)
    stopped_reason: str | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        p, t = self.config.privacy, self.config.training
        self.unit, self.noise = p.unit, p.noise
        self.delta = p.delta if p.delta is not None else default_delta(self.n_users)
        self.sample_rate = min(1.0, self.expected_clients / max(1, self.n_users))
        self.accountant = None
        self.client_accountants: ClientAccountants | None = None
        if self.unit == "user" and self.noise == "central":
            self.noise_multiplier = (
                calibrate_noise_multiplier(p.target_epsilon, self.delta, sample_rate=self.sample_rate,
                                           steps=t.rounds, accountant=p.accountant)
                if p.target_epsilon is not None else p.noise_multiplier
            )
            self.accountant = create_accountant(p.accountant)
        elif self.unit == "user":
            self.min_survivors = max(2, math.floor(self.config.aggregation.threshold_fraction * self.expected_clients))
            self.max_clients = max(self.min_survivors, math.ceil(self.expected_clients + 6 * math.sqrt(self.expected_clients)))
            self.ddg_plan = plan_distributed_discrete_gaussian(
                target_epsilon=p.target_epsilon, delta=self.delta, l2_clip=p.clip_norm, dim=self.dim,
                bits=self.config.aggregation.bits, min_survivors=self.min_survivors,
                max_clients=self.max_clients, sample_rate=self.sample_rate, rounds=t.rounds,
            )
            self.accountant = DistributedDiscreteGaussianAccountant()
        elif self.unit == "record":
            # Calibrate for the worst client: the one with the fewest examples has the highest
            # sampling rate, and a client may be sampled in every round.
            q = client_sample_rate(self.min_client_examples, p.record_batch_size)
            steps = t.rounds * planned_steps(self.min_client_examples, p.record_batch_size, t.local_epochs)
            self.noise_multiplier = (
                calibrate_noise_multiplier(p.target_epsilon, self.delta, sample_rate=q, steps=steps,
                                           accountant="rdp")
                if p.target_epsilon is not None else p.noise_multiplier
            )
            self.client_accountants = ClientAccountants(mechanism="rdp")

    @property
    def enabled(self) -> bool:
        return self.unit != "none"

    # -- user level ---------------------------------------------------------------------------
    def _user_step(self) -> dict[str, Any]:
        if self.ddg_plan is not None:
            plan = self.ddg_plan
            return {"sigma": plan.share_sigma, "l2_sensitivity": plan.l2_sensitivity,
                    "num_shares": self.min_survivors, "dim": self.dim,
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
        out: dict[str, Any] = {"unit": self.unit, "noise": self.noise, "delta": self.delta,
                               "target_epsilon": p.target_epsilon, "clip_norm": p.clip_norm}
        if self.unit == "user":
            eps = self.accountant.get_epsilon(self.delta) if self.accountant.history else 0.0
            out.update(epsilon=eps, sample_rate=self.sample_rate)
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
        unit = {"user": "one user's entire rating history", "record": "any single rating"}[self.unit]
        where = ("noise added by the clients before secure aggregation (the server never sees an "
                 "un-noised sum)" if self.noise == "distributed" and self.unit == "user"
                 else "noise added by the server after aggregation (trusts the server)"
                 if self.unit == "user" else "noise added by each client's DP-SGD")
        return (f"({epsilon:.3g}, {self.delta:.2g})-DP for {unit}: {where}")

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"unit": self.unit, "noise": self.noise, "delta": self.delta}
        if self.accountant is not None:
            state["accountant"] = self.accountant.state_dict()
        if self.client_accountants is not None:
            state["client_accountants"] = self.client_accountants.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("unit") != self.unit or state.get("noise") != self.noise:
            raise ValueError("the checkpoint's privacy unit or noise placement differs from this run's")
        if self.accountant is not None:
            self.accountant.load_state_dict(state["accountant"])
        if self.client_accountants is not None:
            self.client_accountants.load_state_dict(state["client_accountants"])
