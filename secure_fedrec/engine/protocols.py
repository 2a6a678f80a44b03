"""Build the aggregation pipeline a run's configuration asks for."""

from __future__ import annotations

import math

from ..config import RunConfig
from .aggregators import FloatSum, Mean, QuantizedSecureSum, SumLayer

__all__ = ["build_sum_layer", "build_pipeline", "secure_sum_protocol"]


def secure_sum_protocol(config: RunConfig, expected_clients: float):
    """The :class:`protocols.SecureSum` behind ``aggregation.protocol`` (not 'plaintext')."""
    agg = config.aggregation
    if agg.protocol in ("secagg", "secagg+"):
        from protocols.masking import MaskingSecureSum

        return MaskingSecureSum(
            variant=agg.protocol, threshold_fraction=agg.threshold_fraction,
        )
    if agg.protocol == "paillier":
        from protocols.paillier import PaillierSecureSum

        return PaillierSecureSum(key_bits=agg.paillier_key_bits, min_clients=max(2, math.ceil(agg.threshold_fraction * expected_clients)))
    raise ValueError(f"no secure-sum protocol named {agg.protocol!r}")


def build_sum_layer(config: RunConfig, expected_clients: float) -> SumLayer:
    agg = config.aggregation
    if agg.protocol == "plaintext":
        return FloatSum()
    return QuantizedSecureSum(
        protocol=secure_sum_protocol(config, expected_clients),
        coordinate_clip=agg.coordinate_clip,
        bits=agg.bits,
    )


def build_pipeline(config: RunConfig, expected_clients: float) -> Mean:
    inner = build_sum_layer(config, expected_clients)
    return Mean(inner, denominator="weights")
