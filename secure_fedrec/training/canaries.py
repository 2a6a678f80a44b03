"""Gradient canaries: crafted examples an audit slips into a client's DP-SGD step.

A canary is a per-example gradient with a fixed, known direction over the shared
parameters. The record-level DP-SGD step under secure aggregation
(:mod:`.dpsgd_shares`) treats it exactly like one of the client's own examples: it is
Poisson-sampled at the same rate ``q`` (with the same CSPRNG coins), clipped to ``C``,
rounded on its own and added to the client's sum *before* the noise share. An auditor
that knows the direction then tests, from the released sums, whether each canary was
in (Steinke, Nasr, Jagielski 2023, "Privacy auditing with one training run"); the
scores live with the attacks (``secure_fedrec/audit``), this module is only the
engine-side hook.

Only a simulation sets a hook (the in-process engine's ``FederatedTrainer.canary_gradients``);
a deployed client never has one. The hook is asked once per client and step::

    class Mine(CanaryGradients):
        def for_step(self, client, round_index, step):
            return [CanaryGradient(indices=..., values=...)]     # the canaries of this step
        def included(self, client, round_index, step, sampled):
            ...                                                  # which of them the step sampled
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["CanaryGradient", "CanaryGradients", "StepCanaries"]


@dataclass(frozen=True)
class CanaryGradient:
    """One canary's gradient: ``values`` at the distinct flat shared coordinates ``indices``.

    Its norm may exceed the clip norm (it is clipped like any example); it may touch at
    most as many coordinates as one real example can (:func:`.dpsgd_shares.example_dim`),
    so that its rounded vector stays within the sensitivity the accountant charges.
    """

    indices: np.ndarray
    values: np.ndarray

    def __post_init__(self) -> None:
        indices = np.asarray(self.indices)
        values = np.asarray(self.values, dtype=np.float64)
        if indices.ndim != 1 or indices.shape != values.shape or indices.size == 0:
            raise ValueError("a canary needs one value per coordinate, at least one")
        if len(np.unique(indices)) != indices.size or not np.all(np.isfinite(values)):
            raise ValueError("a canary's coordinates must be distinct and its values finite")


class CanaryGradients:
    """The hook: which canaries a client's step carries, and which of them it sampled."""

    def for_step(self, client: int, round_index: int, step: int) -> Sequence[CanaryGradient]:
        return ()

    def included(self, client: int, round_index: int, step: int, sampled: np.ndarray) -> None:
        """Told which of :meth:`for_step`'s canaries the step sampled (a bool per canary)."""


@dataclass(frozen=True)
class StepCanaries:
    """What a client step hands its DP-SGD step: the hook and the step it answers for."""

    hook: CanaryGradients
    client: int
    round_index: int
    step: int = 0

    def gradients(self) -> Sequence[CanaryGradient]:
        return tuple(self.hook.for_step(self.client, self.round_index, self.step))

    def report(self, sampled: np.ndarray) -> None:
        self.hook.included(self.client, self.round_index, self.step, sampled)
