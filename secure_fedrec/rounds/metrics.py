"""One round's metrics, as every engine reports them (``metrics.json``'s ``rounds``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["RoundMetrics", "clipping_summary", "transfer_summary"]


@dataclass
class RoundMetrics:
    round: int
    sampled: int
    contributors: int
    train_loss: float
    seconds: float
    measurements: dict[str, float] = field(default_factory=dict)
    evaluation: dict[str, float | str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "round": self.round, "sampled": self.sampled, "contributors": self.contributors,
            # null when no client reported one (private runs; rounds without contributors)
            "train_loss": self.train_loss if math.isfinite(self.train_loss) else None, "seconds": self.seconds,
            **self.measurements, **self.evaluation,
        }


def transfer_summary(history: list[RoundMetrics]) -> dict[str, Any]:
    """metrics.json's bytes per client per round, both ways, and their means (every engine).

    Up: every protocol frame a client sent. Down: the model sent to it (float64) plus the
    protocol's frames to it (``RoundServer.transfer_totals``).
    """
    up = [m.measurements.get("bytes_sent_per_client", 0.0) for m in history]
    down = [m.measurements.get("bytes_down_per_client", 0.0) for m in history]
    return {
        "bytes_sent_per_client_per_round": up,
        "bytes_sent_per_client_mean": float(np.mean(up)) if up else 0.0,
        "bytes_down_per_client_per_round": down,
        "bytes_down_per_client_mean": float(np.mean(down)) if down else 0.0,
    }


def clipping_summary(history: list[RoundMetrics]) -> dict[str, Any]:
    """metrics.json's count of coordinates the fixed-point encoding clipped to
    ``±aggregation.coordinate_clip`` (summed over clients and rounds).

    Not zero only without an L2 clip in front (a non-private run under masking or Paillier):
    the secure sum is then not the plaintext sum, and the run trains a different model.
    """
    clipped = [m.measurements.get("coordinates_clipped", 0.0) for m in history]
    return {"coordinates_clipped_total": float(np.sum(clipped)) if clipped else 0.0,
            "rounds_with_clipped_coordinates": int(np.count_nonzero(clipped))}
