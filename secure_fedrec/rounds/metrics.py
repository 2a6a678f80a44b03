"""One round's metrics, as every engine reports them (``metrics.json``'s ``rounds``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

__all__ = ["RoundMetrics"]


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
