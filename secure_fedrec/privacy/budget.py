"""A privacy-budget guard that stops training *before* the budget is exceeded.

The engine asks :meth:`PrivacyBudget.can_afford` with the next round's
parameters before running the round. The check composes the step on a copy of
the accountant, so nothing is recorded until the round really happens; when it
answers ``False`` the engine stops cleanly (saving the model) with ε still
within the target.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from .accounting import ClientAccountants, validate_delta

__all__ = ["BudgetExceededError", "BudgetStatus", "PrivacyBudget", "SupportsEpsilon"]


class SupportsEpsilon(Protocol):
    """Anything with ``get_epsilon(delta)`` and a non-mutating ``epsilon_after(..., delta=)``
    (every :class:`~secure_fedrec.privacy.accounting.Accountant`)."""

    def get_epsilon(self, delta: float) -> float: ...

    def epsilon_after(self, *, noise_multiplier: float, sample_rate: float, steps: int = 1,
                      delta: float) -> float: ...


class BudgetExceededError(RuntimeError):
    """Raised by :meth:`PrivacyBudget.require` when the next step would exceed the budget."""


@dataclass(frozen=True)
class BudgetStatus:
    target_epsilon: float
    delta: float
    spent_epsilon: float

    @property
    def remaining_epsilon(self) -> float:
        return max(0.0, self.target_epsilon - self.spent_epsilon)

    @property
    def exhausted(self) -> bool:
        return self.spent_epsilon >= self.target_epsilon


@dataclass(frozen=True)
class PrivacyBudget:
    """Target (ε, δ) for the whole run."""

    target_epsilon: float
    delta: float

    def __post_init__(self) -> None:
        if not (
            isinstance(self.target_epsilon, (int, float))
            and math.isfinite(self.target_epsilon)
            and self.target_epsilon > 0
        ):
            raise ValueError(f"target_epsilon must be positive and finite, got {self.target_epsilon!r}")
        validate_delta(self.delta)

    def status(self, accountant: SupportsEpsilon | ClientAccountants) -> BudgetStatus:
        spent = (
            accountant.worst_epsilon(self.delta)
            if isinstance(accountant, ClientAccountants)
            else accountant.get_epsilon(self.delta)
        )
        return BudgetStatus(float(self.target_epsilon), float(self.delta), float(spent))

    def epsilon_after(self, accountant: SupportsEpsilon, *, noise_multiplier: float, sample_rate: float,
                      steps: int = 1) -> float:
        """ε after one more ``accountant.step(...)`` with these arguments; the accountant is not changed."""
        return float(accountant.epsilon_after(noise_multiplier=noise_multiplier, sample_rate=sample_rate,
                                              steps=steps, delta=self.delta))

    def can_afford(self, accountant: SupportsEpsilon, *, noise_multiplier: float, sample_rate: float,
                   steps: int = 1) -> bool:
        """Whether one more step with these parameters keeps ε within the target."""
        return self.epsilon_after(accountant, noise_multiplier=noise_multiplier, sample_rate=sample_rate,
                                  steps=steps) <= self.target_epsilon

    def can_afford_clients(
        self, accountants: ClientAccountants, planned: Mapping[int, tuple[float, float, int]]
    ) -> bool:
        """Record level: whether every client in ``planned`` (``client_id -> (noise_multiplier,
        sample_rate, local_steps)``) stays within the target after the round."""
        return accountants.worst_epsilon_after(planned, self.delta) <= self.target_epsilon

    def require(self, accountant: SupportsEpsilon, *, noise_multiplier: float, sample_rate: float,
                steps: int = 1) -> None:
        """Raise :class:`BudgetExceededError` unless :meth:`can_afford`."""
        after = self.epsilon_after(accountant, noise_multiplier=noise_multiplier, sample_rate=sample_rate,
                                   steps=steps)
        if after > self.target_epsilon:
            raise BudgetExceededError(
                f"the next step would raise ε to {after:.4g} > target {self.target_epsilon:g} at δ={self.delta:g}"
            )
