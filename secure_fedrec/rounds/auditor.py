"""An auditor inside a simulated run: canary clients in, the server's view out (issue 21).

A privacy audit (``secure-fedrec audit``, :mod:`secure_fedrec.audit`) needs two
things from an engine, and nothing else::

    plan_round                       -> add_canaries: extra clients with crafted updates
    broadcast (range counts them)
    client_step for each trainer
    encode_canaries                  -> the same client halves (clip, noise share, encoding)
    the sum                          -> check_release: the auditor may refuse a release only its
                                        canaries made possible (the round then releases nothing)
    finish_round
    observe_release                  -> RoundServer.last_aggregate: what the server released

A canary client is a client like any: it is in the round's plan (so the fixed-point
encoder leaves room for it on both sides), its update goes through
:func:`~.client.encode_update` with the round's broadcast, and its payload is summed
with the others'. Only its update is chosen by the auditor instead of by training.

The in-process engine calls all three. A Flower coordinator can call
:func:`add_canaries` and :func:`observe_release` as they are (it holds a
:class:`~.server.RoundServer`); what it lacks is a party to run each canary's side of
the secure-sum protocol, so audits run in process.

Record-level DP-SGD under secure aggregation has no canary *clients*: its canaries are
crafted examples inside real clients' steps, handed to every :func:`~.client.client_step`
by the engine (``FederatedTrainer.canary_gradients``, :mod:`secure_fedrec.training.canaries`);
the same auditor then only observes (``canary_updates`` returns nothing).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from ..aggregation import Aggregate, ClientUpdate
from .client import ClientReport, RoundBroadcast, encode_update
from .server import RoundPlan, RoundServer

__all__ = ["RoundAuditor", "add_canaries", "check_release", "encode_canaries", "observe_release"]


class RoundAuditor(Protocol):
    """What an engine calls each round when a run is audited."""

    def canary_updates(self, server: RoundServer, plan: RoundPlan) -> Sequence[tuple[int, ClientUpdate]]:
        """``(client id, update)`` of the canary clients taking part in ``plan``'s round; ids must
        differ from every real client's."""
        ...

    def observe(self, server: RoundServer, plan: RoundPlan, released: Aggregate,
                uploads: Mapping[int, ClientUpdate]) -> None:
        """After a round released an aggregate: ``released`` is :attr:`RoundServer.last_aggregate`,
        ``uploads`` every client's upload when the protocol is plaintext (the server sees them
        then), else empty."""
        ...


def add_canaries(auditor: RoundAuditor | None, server: RoundServer,
                 plan: RoundPlan) -> list[tuple[int, ClientUpdate]]:
    """Ask the auditor for this round's canaries and enter them in ``plan`` (before the broadcast)."""
    if auditor is None:
        return []
    canaries = list(auditor.canary_updates(server, plan))
    ids = [client for client, _ in canaries]
    real = {client for client, _ in plan.trainers}
    if len(set(ids)) != len(ids) or real.intersection(ids):
        raise ValueError("canary client ids must be distinct and differ from the round's clients")
    plan.canaries = tuple(ids)
    return canaries


def encode_canaries(canaries: Sequence[tuple[int, ClientUpdate]], server: RoundServer,
                    broadcast: RoundBroadcast, auditor: RoundAuditor | None = None) -> list[ClientReport]:
    """Each canary's update through the run's client halves, like a client that trained (or
    through the auditor's ``canary_client_plan(server)`` when it has one: sybils that deviate)."""
    custom = getattr(auditor, "canary_client_plan", None)
    plan = custom(server) if custom is not None else server.client_plan
    return [encode_update(client, update, plan, broadcast) for client, update in canaries]


def check_release(auditor: RoundAuditor | None, server: RoundServer, plan: RoundPlan, outcome: object) -> None:
    """Let the auditor refuse a release that only its canaries made possible: its optional
    ``check_release(server, plan, outcome)`` raises :class:`protocols.BelowThreshold`, and the
    round then releases nothing, as it would have without the audit."""
    check = getattr(auditor, "check_release", None)
    if check is not None:
        check(server, plan, outcome)


def observe_release(auditor: RoundAuditor | None, server: RoundServer, plan: RoundPlan,
                    uploads: Mapping[int, ClientUpdate]) -> None:
    """Show the auditor what the round released (nothing when it released nothing)."""
    if auditor is not None and server.last_aggregate is not None:
        auditor.observe(server, plan, server.last_aggregate, uploads)
