"""The parameters of each secure-sum session, computed from the round's size by one pure function.

A run fixes a :class:`SessionPolicy` (its protocol, the survivor fraction it asks
for, the dropout rate SecAgg+'s graph is chosen for, and the privacy plan's minimum
of survivors); :func:`session_parameters` turns it into the parameters of one
session of ``n`` clients. Both engines call it: the in-process engine builds its
:class:`protocols.SecureSum` from the result, the Flower engine its
:class:`protocols.masking.MaskingServer` or Paillier aggregator. No protocol object
is ever changed after it is built.

The rules (unchanged from the first engine, see docs/protocols/masking.md):

* classic SecAgg needs a strict majority: ``t = min(n, max(⌊n/2⌋+1, ⌈fraction·n⌉,
  min_survivors))`` on the complete graph;
* SecAgg+ takes the degree and neighbourhood threshold of
  :func:`protocols.masking.choose_parameters` for the expected dropout rate
  (complete graph and majority when no sparse graph meets the targets);
* Paillier's floor ``min_clients`` is fixed for the run by the plan;
* every secure protocol needs at least two clients and at least ``min_survivors``
  (the noise of the distributed discrete Gaussian is sized for that many shares):
  a smaller round is a :class:`protocols.BelowThreshold` that releases nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from protocols import BelowThreshold

__all__ = ["SessionParameters", "SessionPolicy", "protocol_stages", "session_parameters"]

ProtocolName = Literal["plaintext", "secagg", "secagg+", "paillier"]

#: SecAgg+ graph targets (protocols.masking.choose_parameters' own defaults, fixed here so both
#: engines use the same ones)
_CORRUPT_FRACTION, _SECURITY_BITS, _CORRECTNESS_BITS = 0.05, 40, 20
#: SecAgg+ never plans its graph for fewer dropouts than this
_MIN_PLANNED_DROPOUT = 0.05


@dataclass(frozen=True)
class SessionPolicy:
    """How a run sizes every session (fixed for the run)."""

    protocol: ProtocolName
    threshold_fraction: float = 0.5
    dropout_rate: float = 0.0
    #: the fewest contributors whose sum may be released (the plan's guaranteed noise shares)
    min_survivors: int = 1
    #: Paillier: clients, aggregator and key holders refuse a sum of fewer
    paillier_min_clients: int = 2


@dataclass(frozen=True)
class SessionParameters:
    """Everything the parties of one session must agree on."""

    protocol: ProtocolName
    clients: int
    bits: int | None  # None: the plaintext float sum
    vector_length: int
    min_survivors: int
    threshold: int | None = None  # masking: Shamir threshold per closed neighbourhood
    degree: int | None = None  # masking: graph degree (clients - 1 is classic SecAgg)

    def masking_params(self):
        """The :class:`protocols.masking.MaskingParams` of a SecAgg / SecAgg+ session.

        ``min_survivors`` goes into the protocol (issue 19, item 4): its server refuses
        to start the unmasking with fewer live clients (``BelowThreshold``, the stage
        named) and honest clients refuse to reveal shares, so a round below the privacy
        plan's floor releases nothing, not even to the server.
        """
        from protocols.masking import MaskingParams

        if self.threshold is None or self.degree is None or self.bits is None:
            raise ValueError(f"a {self.protocol} session has no masking parameters")
        return MaskingParams(threshold=self.threshold, degree=self.degree, bits=self.bits,
                             vector_length=self.vector_length, min_survivors=self.min_survivors)


def protocol_stages(protocol: ProtocolName, *, key_rounds: int = 1) -> tuple[str, ...]:
    """The stage names a client can drop out before (the dropout schedule's vocabulary).

    With ``key_rounds > 1`` a masking round of a multi-round session has only the
    masked upload and the unmasking (the key setup is the session's, not the round's).
    """
    if protocol in ("secagg", "secagg+"):
        if key_rounds > 1:
            from protocols.masking.multiround import ROUND_STAGES

            return ROUND_STAGES
        from protocols.masking import stages_for

        return stages_for(False)
    if protocol == "paillier":
        return ("announce", "upload")
    return ("upload",)  # the plaintext float sum: a client can only fail to upload


def session_parameters(policy: SessionPolicy, clients: int, *, bits: int | None,
                       vector_length: int) -> SessionParameters:
    """The parameters of a session of ``clients`` clients; raises :class:`BelowThreshold`
    (stage ``"sampling"``) when the round is too small to release anything."""
    protocol = policy.protocol
    if protocol == "plaintext":
        needed = policy.min_survivors
    elif protocol == "paillier":
        needed = max(2, policy.min_survivors, policy.paillier_min_clients)
    else:
        needed = max(2, policy.min_survivors)
    if clients < needed:
        raise BelowThreshold(clients, needed, "sampling")
    common = {"protocol": protocol, "clients": clients, "bits": bits, "vector_length": vector_length,
              "min_survivors": needed if protocol == "paillier" else policy.min_survivors}
    if protocol == "secagg":
        threshold = min(clients, max(clients // 2 + 1, math.ceil(policy.threshold_fraction * clients),
                                     policy.min_survivors))
        return SessionParameters(**common, threshold=threshold, degree=clients - 1)
    if protocol == "secagg+":
        degree, threshold = _secaggplus_graph(clients, max(_MIN_PLANNED_DROPOUT, policy.dropout_rate))
        return SessionParameters(**common, threshold=threshold, degree=degree)
    return SessionParameters(**common)


def _secaggplus_graph(clients: int, dropout_rate: float) -> tuple[int, int]:
    """SecAgg+'s (degree, threshold) for ``clients``: the sparse Harary graph the parameter
    helper finds, else the complete graph with a majority."""
    from protocols.masking import choose_parameters

    try:
        chosen = choose_parameters(clients, dropout_rate=dropout_rate, corrupt_fraction=_CORRUPT_FRACTION,
                                   security_bits=_SECURITY_BITS, correctness_bits=_CORRECTNESS_BITS)
    except ValueError:  # no sparse graph meets the targets at this size
        return clients - 1, clients // 2 + 1
    return chosen.degree, chosen.threshold
