"""Record-level DP: every client runs DP-SGD on its own ratings and is accounted on its own.

The server charges each client's steps to that client's accountant (the steps and
sampling rate are public numbers the client reports); the worst client's ε is the
run's. A client whose next round would exceed the target abstains.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ..aggregation import Encoding, Layer, Mean, Measurements, SubsetQuantizedEncoding
from ..privacy.accounting import ClientAccountants
from ..privacy.calibration import calibrate_record_noise_multiplier
from ..privacy.record_sampling import client_sample_rate, planned_steps
from ..training.methods import DpSgd, DpSgdStep, TrainingMethod
from .base import TOLERANCE, PrivacyPlan, local_training, ring_encoding

__all__ = ["RecordLocal"]


class RecordLocal(PrivacyPlan):
    """DP-SGD on each client (Opacus), with local noise; one RDP accountant per client."""

    unit = "record"

    def _calibrate(self) -> None:
        p, t = self.config.privacy, self.config.training
        # Calibrate for the worst client, which may be sampled in every round.
        self.noise_multiplier: float = (
            p.noise_multiplier if p.noise_multiplier is not None
            else calibrate_record_noise_multiplier(
                p.target_epsilon, self.delta, client_examples=self.population.client_examples,
                batch_size=p.record_batch_size, epochs=t.local_epochs, rounds=t.rounds))
        self.client_accountants = ClientAccountants(mechanism="rdp")

    def _training(self) -> TrainingMethod:
        p = self.config.privacy
        local = replace(local_training(self.config), optimizer=p.record_optimizer, lr=p.record_lr)
        return DpSgd(local=local, noise_multiplier=self.noise_multiplier, clip_norm=p.clip_norm,
                     batch_size=p.record_batch_size, grad_sample_mode=p.grad_sample_mode)

    def _layers(self) -> tuple[Layer, ...]:
        agg = self.config.aggregation
        return (Mean(denominator="weights", weighting=agg.weighting, weight_cap=agg.weight_cap),)

    def _encoding(self) -> Encoding:
        agg = self.config.aggregation
        if agg.encoding == "compact":  # post-processing of each client's private DP-SGD output
            return SubsetQuantizedEncoding(coordinate_clip=agg.coordinate_clip, bits=agg.bits,
                                           keep_fraction=agg.compact_keep, salt=int(self.config.seed) % 2**63,
                                           dense_length=self.population.dim)
        return ring_encoding(self.config, agg.coordinate_clip)

    def client_may_train(self, client: int, num_examples: int) -> bool:
        target = self.config.privacy.target_epsilon
        if target is None:
            return True
        p, t = self.config.privacy, self.config.training
        eps = self.client_accountants.register(client).epsilon_after(
            noise_multiplier=self.noise_multiplier,
            sample_rate=client_sample_rate(num_examples, p.record_batch_size),
            steps=planned_steps(num_examples, p.record_batch_size, t.local_epochs), delta=self.delta)
        return eps <= target * (1 + TOLERANCE)

    def charge_client(self, client: int, spent: DpSgdStep) -> None:
        self.client_accountants.register(client).step(
            noise_multiplier=spent.noise_multiplier, sample_rate=spent.sample_rate, steps=spent.steps)

    def after_round(self) -> Measurements:
        if len(self.client_accountants):
            return {"epsilon": self.client_accountants.worst_epsilon(self.delta)}
        return {}

    def summary(self) -> dict[str, Any]:
        p = self.config.privacy
        dist = (self.client_accountants.epsilon_distribution(self.delta)
                if len(self.client_accountants) else None)
        out: dict[str, Any] = {"unit": self.unit, "noise": "client DP-SGD", "delta": self.delta,
                               "target_epsilon": p.target_epsilon, "clip_norm": p.clip_norm}
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
        if self.config.aggregation.encoding == "compact":
            out.update(encoding="compact", compact_keep=self.config.aggregation.compact_keep,
                       compact_note="a public random subset of the coordinates each round, fixed point in the "
                                    "ring; post-processing of each client's DP-SGD output")
        out["statement"] = self.statement(out["epsilon"])
        return out

    def statement(self, epsilon: float) -> str:
        """One line: the unit, (ε, δ) spent, where the noise is added."""
        target = self.config.privacy.target_epsilon
        budget = f" of target ε={target:g}" if target is not None else ""
        return (f"record-level DP (any single training example, worst client; on implicit feedback an interaction with its negatives is 1 + negatives examples): ε={epsilon:.3g}{budget}, "
                f"δ={self.delta:.2g}; DP-SGD noise added by each client (Opacus)")

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "client_accountants": self.client_accountants.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.client_accountants.load_state_dict(state["client_accountants"])
