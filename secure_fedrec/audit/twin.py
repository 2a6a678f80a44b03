"""The no-DP twin of an audited run: the same mechanism with its noise taken out.

The control of every canary audit (``canary_audit.control`` in audit.json) retrains the
run without noise and audits the same canaries; these helpers take the noise out of a
freshly built :class:`~secure_fedrec.engines.inprocess.FederatedTrainer` while keeping
everything else the guarantee's mechanism does (clipping, the mean's denominator, the
record-level step's per-example rounding and ring), so the control isolates what the
noise hides.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..aggregation import (
    AggregationPipeline,
    Clip,
    FloatEncoding,
    Mean,
    SubsetShareEncoding,
)
from ..aggregation.ddg import (
    DiscreteGaussianShareEncoding,
    DistributedDiscreteGaussianEncoding,
)
from ..engines.inprocess import FederatedTrainer

__all__ = ["clip_without_noise", "plan_without_noise_share", "shares_without_noise"]


def clip_without_noise(twin: FederatedTrainer, clip_norm: float) -> None:
    """Give a no-DP twin the user-level mechanism without its noise: updates still clipped to
    ``clip_norm``, the mean still over E[clients], the plaintext float sum; so the control
    isolates what the noise hides (not what clipping does)."""
    pipeline = AggregationPipeline(layers=(Mean(denominator="expected"), Clip(clip_norm=clip_norm)),
                                   encoding=FloatEncoding())
    server = twin.server
    server.privacy.pipeline = pipeline
    server.privacy.layer_states = pipeline.initial_states()
    server.client_plan = dataclasses.replace(server.client_plan, pipeline=pipeline)


@dataclasses.dataclass(frozen=True)
class _SharesWithoutNoise(DiscreteGaussianShareEncoding):
    """The no-noise twin's encoding: the same lattice check and ring as the run's, no noise share."""

    def noise_share(self, size: int) -> np.ndarray:
        return np.zeros(size, dtype=np.int64)


@dataclasses.dataclass(frozen=True, kw_only=True)
class _SubsetSharesWithoutNoise(SubsetShareEncoding):
    """The same, for the compact (public subset) upload."""

    def noise_share(self, size: int) -> np.ndarray:
        return np.zeros(size, dtype=np.int64)


@dataclasses.dataclass(frozen=True)
class _DdgWithoutNoise(DistributedDiscreteGaussianEncoding):
    """A user-level distributed-noise client half that rounds like every client, without a share."""

    def noise_share(self, size: int) -> np.ndarray:
        return np.zeros(size, dtype=np.int64)


def plan_without_noise_share(plan):
    """``plan`` (a :class:`~secure_fedrec.rounds.client.ClientPlan`) whose distributed-noise
    encoding adds no noise share: how an auditor's own sybil clients may behave. The
    distributed mechanism is accounted for its honest clients' shares alone (the planned
    minimum of survivors), so clients that withhold theirs must not weaken the guarantee."""
    encoding = plan.pipeline.encoding
    if not isinstance(encoding, DistributedDiscreteGaussianEncoding):
        return plan
    fields = {f.name: getattr(encoding, f.name) for f in dataclasses.fields(encoding)}
    return dataclasses.replace(plan, pipeline=dataclasses.replace(plan.pipeline, encoding=_DdgWithoutNoise(**fields)))


def shares_without_noise(twin: FederatedTrainer) -> None:
    """Give a record-level twin the same DP-SGD step (per-example clipping, the lattice rounding,
    the expected-batch mean, the ring) without its noise: no discrete Gaussian share and
    (almost) none on the private rows. The control then isolates what the noise hides, as the
    user-level twin does."""
    server = twin.server
    old = server.privacy.pipeline
    fields = {f.name: getattr(old.encoding, f.name) for f in dataclasses.fields(old.encoding)}
    without = _SubsetSharesWithoutNoise if isinstance(old.encoding, SubsetShareEncoding) else _SharesWithoutNoise
    pipeline = dataclasses.replace(old, encoding=without(**{**fields, "noise_stddev": 0.0}))
    server.privacy.pipeline = pipeline
    server.privacy.layer_states = pipeline.initial_states()
    server.client_plan = dataclasses.replace(server.client_plan, pipeline=pipeline, training=dataclasses.replace(
        server.client_plan.training, noise_stddev=1e-12))
