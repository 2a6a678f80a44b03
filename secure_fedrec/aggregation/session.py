"""Build the aggregation pipeline a run's configuration (and privacy plan) asks for."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from protocols import BelowThreshold, SecureSum, SecureSumResult

from ..config import RunConfig
from .aggregators import (
    AdaptiveClip,
    CentralGaussianNoise,
    Clip,
    FloatSum,
    Mean,
    QuantizedSecureSum,
    SumLayer,
)

__all__ = ["build_pipeline", "secure_sum_protocol", "ThresholdPolicy"]


@dataclass
class ThresholdPolicy:
    """Sets a masking protocol's survivor threshold for each session from the round's size.

    Classic SecAgg takes one global threshold t: here ``max(⌊n/2⌋+1,
    ⌈fraction·n⌉, min_survivors)``, so a distributed-DP round with fewer survivors than its
    noise was sized for aborts inside the protocol. SecAgg+ chooses its
    neighbourhood threshold from its graph; the global minimum is checked on
    the result before it is returned (see docs/privacy.md for what that
    means for an honest-but-curious server).
    """

    protocol: SecureSum
    fraction: float
    min_survivors: int = 1

    @property
    def name(self) -> str:
        return self.protocol.name

    @property
    def stages(self) -> tuple[str, ...]:
        return self.protocol.stages

    def run_round(self, inputs: Mapping[int, np.ndarray], *, bits: int, round_index: int = 0,
                  dropouts=None) -> SecureSumResult:
        n = len(inputs)
        if n < self.min_survivors:
            raise BelowThreshold(n, self.min_survivors, "sampling")
        if self.protocol.name == "secagg" and not getattr(self.protocol, "active", False):
            # SecAgg's security argument needs a strict majority of the session's clients.
            self.protocol.threshold = min(n, max(n // 2 + 1, math.ceil(self.fraction * n),
                                                 self.min_survivors))
        result = self.protocol.run_round(inputs, bits=bits, round_index=round_index, dropouts=dropouts)
        if len(result.contributors) < self.min_survivors:
            raise BelowThreshold(len(result.contributors), self.min_survivors, "unmasking")
        return result


def secure_sum_protocol(config: RunConfig, expected_clients: float, *, min_survivors: int = 1) -> SecureSum:
    """The :class:`protocols.SecureSum` behind ``aggregation.protocol`` (not 'plaintext')."""
    agg = config.aggregation
    if agg.protocol == "secagg":
        from protocols.masking import SecAgg

        return ThresholdPolicy(SecAgg(), agg.threshold_fraction, min_survivors)
    if agg.protocol == "secagg+":
        from protocols.masking import SecAggPlus

        return ThresholdPolicy(SecAggPlus(dropout_rate=max(0.05, config.training.dropout_rate)),
                               agg.threshold_fraction, min_survivors)
    if agg.protocol == "paillier":
        from protocols.paillier import PaillierSecureSum

        return PaillierSecureSum(
            key_bits=agg.paillier_key_bits,
            min_clients=max(2, min_survivors, math.floor(agg.threshold_fraction * expected_clients)),
        )
    raise ValueError(f"no secure-sum protocol named {agg.protocol!r}")


def build_pipeline(config: RunConfig, expected_clients: float, privacy=None) -> Mean:
    """plaintext/secure sum, wrapped by the privacy unit's layers (inside-out)."""
    agg, p = config.aggregation, config.privacy
    if privacy is not None and privacy.unit == "user" and privacy.adaptive_clip is not None:
        return _adaptive_user_pipeline(config, expected_clients, privacy)
    if privacy is not None and privacy.unit == "user":
        if privacy.ddg_plan is not None:
            from .ddg import DistributedDiscreteGaussianSum

            protocol = secure_sum_protocol(config, expected_clients, min_survivors=privacy.min_survivors)
            inner: SumLayer = DistributedDiscreteGaussianSum(protocol=protocol, plan=privacy.ddg_plan)
        else:
            base = (FloatSum() if agg.protocol == "plaintext" else QuantizedSecureSum(
                protocol=secure_sum_protocol(config, expected_clients),
                coordinate_clip=p.clip_norm, bits=agg.bits))
            inner = CentralGaussianNoise(base, stddev=privacy.noise_multiplier * p.clip_norm)
        return Mean(Clip(inner, clip_norm=p.clip_norm), denominator="expected")
    if agg.protocol == "plaintext":
        return Mean(FloatSum(), denominator="weights")
    return Mean(QuantizedSecureSum(protocol=secure_sum_protocol(config, expected_clients),
                                   coordinate_clip=agg.coordinate_clip, bits=agg.bits),
                denominator="weights")


def _adaptive_user_pipeline(config: RunConfig, expected_clients: float, privacy) -> Mean:
    """User level with adaptive clipping: the inner layers see unit-scale vectors plus the bit."""
    agg = config.aggregation
    if privacy.ddg_plan is not None:
        from .ddg import DistributedDiscreteGaussianSum

        protocol = secure_sum_protocol(config, expected_clients, min_survivors=privacy.min_survivors)
        inner: SumLayer = DistributedDiscreteGaussianSum(protocol=protocol, plan=privacy.ddg_plan)
    else:
        # unit-scale rows have |x_j| <= 1 and the bit coordinate is ±bit_scale/2
        bound = max(1.0, privacy.bit_scale / 2)
        base = (FloatSum() if agg.protocol == "plaintext" else QuantizedSecureSum(
            protocol=secure_sum_protocol(config, expected_clients), coordinate_clip=bound, bits=agg.bits))
        inner = CentralGaussianNoise(base, stddev=privacy.update_noise_multiplier)
    return Mean(AdaptiveClip(inner, state=privacy.adaptive_clip, bit_scale=privacy.bit_scale),
                denominator="expected")
