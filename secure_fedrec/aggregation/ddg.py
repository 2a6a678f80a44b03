"""The distributed discrete Gaussian sum layer (Kairouz, Liu, Steinke 2021).

Each client scales its clipped update by 1/γ, rounds it conditionally (the
rounded vector's L2 norm stays within the planned sensitivity), adds its own
discrete Gaussian share in the integer domain and only then hands the vector
to the secure-sum protocol. The server therefore never sees an un-noised sum;
the shares are sized so that the *minimum* number of survivors the protocol
guarantees already carries the full noise, and the protocol's threshold is
raised to that minimum, so a round with fewer survivors aborts instead of
releasing an under-noised sum.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from protocols import SecureSum

from ..privacy.discrete_gaussian import sample_discrete_gaussian
from ..privacy.distributed_dp import DdgPlan, conditional_randomized_round
from .aggregators import SumLayer
from .updates import ClientUpdates, RoundContext, SumOutput

__all__ = ["DistributedDiscreteGaussianSum"]


@dataclass
class DistributedDiscreteGaussianSum(SumLayer):
    protocol: SecureSum
    plan: DdgPlan

    def sum(self, updates: ClientUpdates, ctx: RoundContext) -> SumOutput:
        plan = self.plan
        modulus_mask = np.uint64((1 << plan.bits) - 1)
        inputs: dict[int, np.ndarray] = {}
        started = time.process_time()
        for j, cid in enumerate(updates.client_ids):
            scaled = updates.dense_row(j) / plan.gamma
            levels = conditional_randomized_round(scaled, plan.l2_sensitivity)
            levels = levels + sample_discrete_gaussian(plan.share_sigma, levels.size)
            inputs[int(cid)] = levels.astype(np.uint64) & modulus_mask
        encode_seconds = time.process_time() - started
        result = self.protocol.run_round(inputs, bits=plan.bits, round_index=ctx.round_index,
                                         dropouts=ctx.dropouts)
        total = result.total.astype(np.uint64) & modulus_mask
        signed = total.astype(np.int64)
        signed[total >= np.uint64(1 << (plan.bits - 1))] -= np.int64(1 << plan.bits)
        sent = np.array([result.bytes_sent.get(c, 0) for c in result.contributors], dtype=float)
        return SumOutput(
            total=signed.astype(np.float64) * plan.gamma,
            weight_total=float(len(result.contributors)),
            contributors=tuple(result.contributors),
            measurements={
                "bytes_sent_per_client": float(sent.mean()) if len(sent) else 0.0,
                "protocol_client_seconds": result.client_seconds + encode_seconds,
                "protocol_server_seconds": result.server_seconds,
                "protocol_dropped": float(len(result.dropped)),
                "ddg_gamma": plan.gamma,
                "ddg_share_sigma": plan.share_sigma,
                "ddg_wrap_probability": plan.wrap_probability,
                "noise_stddev": plan.model_unit_noise_std,
            },
        )
