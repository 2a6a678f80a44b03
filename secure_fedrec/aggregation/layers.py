"""Aggregation as a pipeline of small layers (in the spirit of TFF's aggregator factories).

Built inside-out, one concern per layer::

    Mean(Clip(CentralNoise(QuantizedSecureSum(protocol))))

A *sum layer* turns :class:`ClientUpdates` into a :class:`SumOutput`; wrappers
transform the updates on the way in (clipping, weighting) or the sum on the
way out (noise). :class:`Mean` is the outermost layer and turns the sum into
the update the server optimizer applies. Every layer adds its measurements
(fraction clipped, bytes sent, protocol time, ...) to the round's metrics.

A protocol (:class:`protocols.SecureSum`) is one swappable sum layer.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from protocols import FixedPointEncoder, SecureSum

from ..privacy.clipping import AdaptiveClipNorm
from ..privacy.noise import csprng_normal
from .updates import ClientUpdates, RoundContext, SumOutput

__all__ = [
    "SumLayer",
    "FloatSum",
    "QuantizedSecureSum",
    "Clip",
    "AdaptiveClip",
    "CentralGaussianNoise",
    "Mean",
    "MeanOutput",
]


class SumLayer(ABC):
    """Anything that sums client updates."""

    @abstractmethod
    def sum(self, updates: ClientUpdates, ctx: RoundContext) -> SumOutput: ...


class FloatSum(SumLayer):
    """Exact float sum with no protocol at all: the server sees every update (no privacy).

    Bytes are counted as a sparse float32 upload (4-byte index + 4-byte value per non-zero).
    """

    name = "plaintext"

    def sum(self, updates: ClientUpdates, ctx: RoundContext) -> SumOutput:
        keep = np.array([int(c) not in ctx.dropouts for c in updates.client_ids], dtype=bool)
        matrix = updates.matrix[keep] if not keep.all() else updates.matrix
        total = np.asarray(matrix.sum(axis=0), dtype=np.float64).reshape(-1)
        nnz = updates.nnz_per_row()[keep]
        return SumOutput(
            total=total,
            weight_total=float(updates.weights[keep].sum()),
            contributors=tuple(int(c) for c in updates.client_ids[keep]),
            measurements={
                "bytes_sent_per_client": float(np.mean(nnz * 8 + 4)) if keep.any() else 0.0,
                "bytes_sent_per_client_max": float(np.max(nnz * 8 + 4)) if keep.any() else 0.0,
            },
        )


#: (client id, integer levels) -> integer noise of the same shape, added before masking
IntegerNoise = Callable[[int, np.ndarray], np.ndarray]


@dataclass
class QuantizedSecureSum(SumLayer):
    """Encode each update in Z_{2^bits}, sum with a secure protocol, decode.

    Each client's dense vector is ``[update..., weight]``: the weight travels as
    one more masked coordinate, so the server learns only the sum of weights.
    ``coordinate_clip`` bounds every coordinate (values beyond it are clipped and
    counted); a preceding :class:`Clip` at L2 norm C guarantees |x_j| <= C.
    """

    protocol: SecureSum
    coordinate_clip: float
    bits: int = 32
    integer_noise: IntegerNoise | None = None
    noise_headroom_levels: int = 0  # extra per-client range the integer noise may take

    def encoder_for(self, n_clients: int) -> FixedPointEncoder:
        clip = max(self.coordinate_clip, 1.0)  # the weight coordinate lies in [0, 1]
        return FixedPointEncoder.for_sum(clip=clip, max_summands=max(1, n_clients), bits=self.bits)

    def sum(self, updates: ClientUpdates, ctx: RoundContext) -> SumOutput:
        encoder = self.encoder_for(len(updates))
        inputs: dict[int, np.ndarray] = {}
        clipped_coords = 0
        started = time.process_time()
        for j, cid in enumerate(updates.client_ids):
            vector = np.append(updates.dense_row(j), updates.weights[j])
            clipped_coords += int(np.count_nonzero(np.abs(vector[:-1]) > self.coordinate_clip))
            vector[:-1] = np.clip(vector[:-1], -self.coordinate_clip, self.coordinate_clip)
            levels = encoder.quantize(vector)
            if self.integer_noise is not None:
                levels = levels + self.integer_noise(int(cid), levels)
            inputs[int(cid)] = encoder.to_ring(levels)
        encode_seconds = time.process_time() - started
        result = self.protocol.run_round(
            inputs, bits=self.bits, round_index=ctx.round_index, dropouts=ctx.dropouts
        )
        decoded = encoder.decode(result.total)
        sent = np.array([result.bytes_sent.get(c, 0) for c in result.contributors], dtype=float)
        plain_bytes = (updates.dim + 1) * self.bits / 8
        measurements = {
            "bytes_sent_per_client": float(sent.mean()) if len(sent) else 0.0,
            "bytes_sent_per_client_max": float(sent.max()) if len(sent) else 0.0,
            "bytes_received_per_client": float(np.mean(list(result.bytes_received.values())))
            if result.bytes_received else 0.0,
            "communication_expansion": float(sent.mean() / plain_bytes) if len(sent) else 0.0,
            "protocol_client_seconds": result.client_seconds + encode_seconds,
            "protocol_server_seconds": result.server_seconds,
            "protocol_dropped": float(len(result.dropped)),
            "coordinates_clipped": float(clipped_coords),
            "quantization_step": 1.0 / encoder.scale,
        }
        measurements.update({f"protocol_{k}": float(v) for k, v in result.measurements.items()})
        return SumOutput(
            total=decoded[:-1],
            weight_total=float(decoded[-1]),
            contributors=tuple(result.contributors),
            measurements=measurements,
        )


@dataclass
class Clip(SumLayer):
    """Clip each client's update to L2 norm ``clip_norm`` (user-level sensitivity)."""

    inner: SumLayer
    clip_norm: float

    def sum(self, updates: ClientUpdates, ctx: RoundContext) -> SumOutput:
        norms = updates.row_norms()
        factors = np.minimum(1.0, self.clip_norm / np.maximum(norms, 1e-300))
        out = self.inner.sum(updates.scale_rows(factors), ctx)
        out.measurements["fraction_clipped"] = float(np.mean(norms > self.clip_norm)) if len(norms) else 0.0
        out.measurements["update_norm_median"] = float(np.median(norms)) if len(norms) else 0.0
        out.measurements["clip_norm"] = float(self.clip_norm)
        return out


@dataclass
class AdaptiveClip(SumLayer):
    """Clip to the current ``C`` and move ``C`` toward a quantile of the update norms.

    Andrew et al. 2021 (see :mod:`secure_fedrec.privacy.adaptive_clipping`).
    Each row is divided by ``C`` and clipped to norm 1, and the centred bit
    ``bit_scale·(1[||Δ|| <= C] - 1/2)`` is appended as one more coordinate, so
    the inner layers (noise, secure sum) see unit-scale vectors of norm at most
    ``sqrt(1 + bit_scale²/4)`` and no one sees a single client's bit. The
    noisy bit sum then moves ``C`` (its last coordinate, divided by
    ``bit_scale``); the update part is scaled back by ``C``.
    """

    inner: SumLayer
    state: AdaptiveClipNorm
    bit_scale: float

    def sum(self, updates: ClientUpdates, ctx: RoundContext) -> SumOutput:
        clip = self.state.clip_norm
        norms = updates.row_norms()
        unclipped = norms <= clip
        # unit scale; clipped rows shrink by a relative 1e-12 more so rounding never leaves them above 1
        factors = np.minimum(1.0 / clip, (1.0 - 1e-12) / np.maximum(norms, 1e-300))
        augmented = updates.scale_rows(factors).append_column(self.bit_scale * (unclipped - 0.5))
        out = self.inner.sum(augmented, ctx)
        # Centred bits: Σ(b_i - 1/2) + noise; adding m/2 (not the contributor count, which
        # depends on who took part) gives the noisy unclipped count the paper uses.
        noisy_count = float(out.total[-1]) / self.bit_scale + ctx.expected_clients / 2
        estimate = noisy_count / ctx.expected_clients
        out.total = out.total[:-1] * clip
        if "noise_stddev" in out.measurements:  # the inner layers noised unit-scale vectors
            out.measurements["noise_stddev"] *= clip
        out.measurements["clip_norm"] = float(clip)
        out.measurements["unclipped_fraction_estimate"] = estimate
        out.measurements["clip_norm_next"] = self.state.update(
            noisy_count, ctx.expected_clients, already_noised=True)
        # Simulation diagnostics from the individual norms (a deployment's server never has them).
        out.measurements["fraction_clipped"] = float(np.mean(~unclipped)) if len(norms) else 0.0
        out.measurements["update_norm_median"] = float(np.median(norms)) if len(norms) else 0.0
        return out


@dataclass
class CentralGaussianNoise(SumLayer):
    """Add N(0, stddev²) to every coordinate of the sum, on the server, after the inner sum.

    With a secure protocol inside, the server still sees the clean sum before
    it adds the noise: this is *central* DP, which trusts the server.
    """

    inner: SumLayer
    stddev: float

    def sum(self, updates: ClientUpdates, ctx: RoundContext) -> SumOutput:
        out = self.inner.sum(updates, ctx)
        out.total = out.total + self.stddev * csprng_normal(out.total.size)
        out.measurements["noise_stddev"] = float(self.stddev)
        return out


@dataclass
class MeanOutput:
    update: np.ndarray
    contributors: tuple[int, ...]
    measurements: dict[str, float] = field(default_factory=dict)


@dataclass
class Mean:
    """Turn the inner sum into a mean.

    ``denominator="weights"`` divides by the (securely summed) total weight;
    ``denominator="expected"`` divides by the expected number of clients, the
    fixed denominator user-level DP needs (McMahan et al. 2018), because the
    actual count would add sensitivity.
    """

    inner: SumLayer
    denominator: str = "weights"

    def __post_init__(self) -> None:
        if self.denominator not in ("weights", "expected"):
            raise ValueError("denominator must be 'weights' or 'expected'")

    def aggregate(self, updates: ClientUpdates, ctx: RoundContext) -> MeanOutput:
        out = self.inner.sum(updates, ctx)
        if self.denominator == "weights":
            denom = out.weight_total
        else:
            denom = ctx.expected_clients
        update = out.total / denom if denom > 0 else np.zeros_like(out.total)
        out.measurements["contributors"] = float(len(out.contributors))
        out.measurements["weight_total"] = float(out.weight_total)
        return MeanOutput(update=update, contributors=out.contributors, measurements=out.measurements)
