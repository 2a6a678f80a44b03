"""Multi-round masking sessions: one key setup, then two exchanges per round.

Pairwise X25519 secrets are agreed once per session of R rounds; each round's
pairwise masks come from them through HKDF bound to the session and the round;
self-masks are fresh every round; a client that vanishes in a round is
unmasked with that round's recovery key only, never with its long-term keys.
See docs/protocols/masking.md § Multi-round sessions for the protocol, the
security argument and how a driver runs R rounds.
"""

from .client import MultiRoundClient
from .driver import MultiRoundSecAgg
from .messages import (
    Arming,
    RoundStart,
    RoundUnmaskRequest,
    RoundUnmaskShares,
    RoundUpload,
    SessionAnnouncement,
    decode,
    encode,
)
from .server import MultiRoundServer, RoundResult
from .states import ROUND_STAGES, SETUP_STAGES, ClientState, ServerStage

__all__ = [
    "ROUND_STAGES",
    "SETUP_STAGES",
    "Arming",
    "ClientState",
    "MultiRoundClient",
    "MultiRoundSecAgg",
    "MultiRoundServer",
    "RoundResult",
    "RoundStart",
    "RoundUnmaskRequest",
    "RoundUnmaskShares",
    "RoundUpload",
    "ServerStage",
    "SessionAnnouncement",
    "decode",
    "encode",
]
