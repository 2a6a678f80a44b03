"""Masking-based secure aggregation: SecAgg (Bonawitz et al. 2017) and SecAgg+ (Bell et al. 2020).

Sans-IO parties (:class:`MaskingClient`, :class:`MaskingServer`), their wire
messages, the parameter helper, and an in-process driver behind the
:class:`protocols.api.SecureSum` interface (:class:`SecAgg`, :class:`SecAggPlus`).
See docs/protocols/masking.md for the threat model and the danger box.
"""

from .client import MaskingClient, UnmaskRequestRefused
from .driver import (
    Interceptor,
    SecAgg,
    SecAggPlus,
    SessionTrace,
    run_session,
    stages_for,
)
from .messages import Limits, decode, encode
from .params import (
    GraphParameters,
    MaskingParams,
    SessionConfig,
    choose_parameters,
    params_for,
)
from .server import MaskingServer, Outgoing, ServerResult
from .states import STAGE_NAMES, ClientState, ServerStage

__all__ = [
    "STAGE_NAMES",
    "ClientState",
    "GraphParameters",
    "Interceptor",
    "Limits",
    "MaskingClient",
    "MaskingParams",
    "MaskingServer",
    "Outgoing",
    "SecAgg",
    "SecAggPlus",
    "ServerResult",
    "ServerStage",
    "SessionConfig",
    "SessionTrace",
    "UnmaskRequestRefused",
    "choose_parameters",
    "decode",
    "encode",
    "params_for",
    "run_session",
    "stages_for",
]
