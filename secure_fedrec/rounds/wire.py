"""The client plan and the round broadcast as JSON, for engines whose clients are across a network.

Every value here is a frozen dataclass of plain numbers and strings, so its JSON form
is ``{"kind": <name>, <field>: <value>, ...}`` and decoding rebuilds the same dataclass
(Python's float repr round-trips exactly, so a node computes with the server's very
numbers). Nothing is unpickled; an unknown kind or field is a :class:`ValueError`.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from ..aggregation import (
    AdaptiveClip,
    AdaptiveClipState,
    AggregationPipeline,
    CentralGaussianNoise,
    Clip,
    CompactRotatedEncoding,
    DiscreteGaussianShareEncoding,
    DistributedDiscreteGaussianEncoding,
    ExpectedBatchMean,
    FloatEncoding,
    Mean,
    QuantizedEncoding,
    SubsetQuantizedEncoding,
    SubsetShareEncoding,
)
from ..aggregation.values import check_number
from ..training.local import LocalTraining
from ..training.methods import DistributedDpSgd, DpSgd, LocalEpochs
from .client import ClientPlan, RoundBroadcast

__all__ = ["broadcast_from_json", "broadcast_to_json", "plan_from_json", "plan_to_json"]

_KINDS: dict[str, type] = {cls.kind: cls for cls in (  # type: ignore[attr-defined]
    Mean, ExpectedBatchMean, Clip, AdaptiveClip, CentralGaussianNoise, FloatEncoding, QuantizedEncoding,
    DistributedDiscreteGaussianEncoding, DiscreteGaussianShareEncoding, CompactRotatedEncoding, SubsetShareEncoding,
    SubsetQuantizedEncoding, LocalEpochs, DpSgd, DistributedDpSgd)}
_STATES: dict[str, type] = {"adaptive_clip": AdaptiveClipState}


def _value(obj: Any) -> dict[str, Any]:
    fields = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    if "local" in fields:
        fields["local"] = dataclasses.asdict(fields["local"])
    return {"kind": type(obj).kind, **fields}


def _build(raw: Any, kinds: dict[str, type]) -> Any:
    """The dataclass ``raw`` describes; each one checks its own fields' ranges on construction."""
    if not isinstance(raw, dict) or raw.get("kind") not in kinds:
        raise ValueError(f"not a known value: {str(raw)[:80]!r}")
    cls = kinds[raw["kind"]]
    fields = {k: v for k, v in raw.items() if k != "kind"}
    if set(fields) != {f.name for f in dataclasses.fields(cls)}:
        raise ValueError(f"{raw['kind']}: fields {sorted(fields)} do not match {cls.__name__}")
    if "local" in fields:
        local = fields["local"]
        if not isinstance(local, dict) or set(local) != {f.name for f in dataclasses.fields(LocalTraining)}:
            raise ValueError(f"{raw['kind']}.local does not describe the local training")
        fields["local"] = LocalTraining(**local)
    for name, value in fields.items():
        if name != "local" and not isinstance(value, (int, float, str, bool, type(None))):
            raise ValueError(f"{raw['kind']}.{name} must be a number or a string")
    return cls(**fields)


def _parse(text: str) -> dict[str, Any]:
    try:
        raw = json.loads(text)
    except (TypeError, ValueError, RecursionError) as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ValueError("expected a JSON object")  # noqa: TRY004 -- a malformed message, not a caller bug
    return raw


def plan_to_json(plan: ClientPlan) -> str:
    return json.dumps({"training": _value(plan.training),
                       "layers": [_value(layer) for layer in plan.pipeline.layers],
                       "encoding": _value(plan.pipeline.encoding), "report_loss": plan.report_loss,
                       "private_sampling_rate": plan.private_sampling_rate})


def plan_from_json(text: str) -> ClientPlan:
    """The client plan a server sent; ``ValueError`` for anything else."""
    raw = _parse(text)
    try:
        layers = tuple(_build(layer, _KINDS) for layer in raw["layers"])
        pipeline = AggregationPipeline(layers=layers, encoding=_build(raw["encoding"], _KINDS))
        rate = raw.get("private_sampling_rate")
        if rate is not None:
            check_number("private_sampling_rate", rate, high=1.0)
            rate = float(rate)
        return ClientPlan(training=_build(raw["training"], _KINDS), pipeline=pipeline,
                          report_loss=bool(raw["report_loss"]), private_sampling_rate=rate)
    except (KeyError, TypeError) as exc:
        raise ValueError(f"malformed client plan: {exc!r}") from None


def broadcast_to_json(broadcast: RoundBroadcast) -> str:
    states = [None if state is None else {"kind": "adaptive_clip", "clip_norm": state.clip_norm}
              for state in broadcast.layer_states]
    return json.dumps({"round_index": broadcast.round_index, "n_clients": broadcast.n_clients,
                       "expected_clients": broadcast.expected_clients, "layer_states": states})


def broadcast_from_json(text: str) -> RoundBroadcast:
    """The round's broadcast a server sent; ``ValueError`` for anything else."""
    raw = _parse(text)
    try:
        states = tuple(None if state is None else _build(state, _STATES) for state in raw["layer_states"])
        round_index, n_clients, expected = raw["round_index"], raw["n_clients"], raw["expected_clients"]
    except (KeyError, TypeError) as exc:
        raise ValueError(f"malformed broadcast: {exc!r}") from None
    for name, value in (("round_index", round_index), ("n_clients", n_clients)):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**32:
            raise ValueError(f"{name} must be an integer in [0, 2^32), got {value!r}")
    if isinstance(expected, bool) or not isinstance(expected, (int, float)) or not 0 < expected < 2**32:
        raise ValueError(f"expected_clients must be a positive number, got {expected!r}")
    return RoundBroadcast(round_index=round_index, n_clients=n_clients, expected_clients=float(expected),
                          layer_states=states)
