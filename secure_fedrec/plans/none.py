"""No differential privacy: clients train freely, the server takes the weighted mean of their updates."""

from __future__ import annotations

import math
from typing import Any

from ..aggregation import Encoding, Layer, Mean
from .base import PrivacyPlan, ring_encoding

__all__ = ["NoPrivacy"]


class NoPrivacy(PrivacyPlan):
    unit = "none"

    @property
    def enabled(self) -> bool:
        return False

    def _layers(self) -> tuple[Layer, ...]:
        agg = self.config.aggregation
        return (Mean(denominator="weights", weighting=agg.weighting, weight_cap=agg.weight_cap),)

    def _encoding(self) -> Encoding:
        return ring_encoding(self.config, self.config.aggregation.coordinate_clip)

    def summary(self) -> dict[str, Any]:
        return {"unit": "none", "epsilon": math.inf, "statement": "no differential privacy"}
