"""Neighbour graphs for SecAgg+ and the helper that picks the degree and threshold.

SecAgg+ (Bell et al., CCS 2020) replaces SecAgg's complete graph by a sparse
k-regular graph: a client exchanges keys, shares and pairwise masks only with
its k neighbours, so its cost grows with log n instead of n. We use the
Harary graph H_{k,n} (k even): the clients are placed on a ring in a
pseudo-random order and each is joined to the k/2 nearest on either side.
``k = n - 1`` is the complete graph, i.e. classic SecAgg.

The ring order sorts the participants by 64-bit keys read from the AES-256-CTR
keystream of a 32-byte public ``graph_seed`` chosen by the server (from
:mod:`secrets`), so every client recomputes the same graph from the session
announcement instead of trusting a neighbour list from the server. Sorting by
random keys (rather than a Fisher-Yates shuffle) lets a client find its own
neighbours in O(n) vectorized work, which matters at n = 10,000. Pick the seed *after* the
participant list is fixed; a server that grinds seeds to place corrupt
clients next to a victim is outside the honest-but-curious model (see
docs/protocols/masking.md).

A neighbourhood N(i) below always *includes* i itself: a client holds a share
of its own secrets, and the threshold t counts the k + 1 members of N(i).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .prg import keystream_words

__all__ = [
    "GraphParameters",
    "choose_parameters",
    "closed_neighbourhood",
    "harary_neighbourhoods",
    "harary_rows",
    "ring_order",
]


def _ring_keys(graph_seed: bytes, n: int) -> np.ndarray:
    """One distinct 64-bit sort key per participant (indexed by sorted position).

    The high bits are AES-256-CTR keystream under ``graph_seed``; the low
    ``ceil(log2 n)`` bits are the position itself, so keys never tie and the
    ring order (participants sorted by key) is a permutation fixed by the seed.
    It is uniform up to the event that two participants draw the same high
    bits, in which case the one listed first comes first: probability below
    n^2 / 2^(65 - log2 n) — 4e-8 at n = 10^4 — and the order stays public and
    seed-determined either way.
    """
    low = max(1, (n - 1).bit_length())
    keys = keystream_words(graph_seed, n, np.dtype("<u8"))
    np.right_shift(keys, np.uint64(low), out=keys)
    np.left_shift(keys, np.uint64(low), out=keys)
    np.bitwise_or(keys, np.arange(n, dtype=np.uint64), out=keys)
    return keys


def _sorted_ids(participants: Sequence[int] | np.ndarray) -> np.ndarray:
    ids = np.sort(np.asarray(participants, dtype=np.int64))
    if ids.size and not (np.diff(ids) > 0).all():
        raise ValueError("participants must be distinct")
    return ids


def ring_order(participants: Sequence[int] | np.ndarray, graph_seed: bytes) -> list[int]:
    """The participants in the pseudo-random ring order fixed by ``graph_seed``."""
    ids = _sorted_ids(participants)
    if ids.size < 2:
        return ids.tolist()
    return ids[np.argsort(_ring_keys(graph_seed, ids.size))].tolist()


def harary_neighbourhoods(
    participants: Sequence[int] | np.ndarray, degree: int, graph_seed: bytes
) -> dict[int, frozenset[int]]:
    """Map each participant to its closed neighbourhood (itself + ``degree`` neighbours)."""
    ids = _sorted_ids(participants)
    n = int(ids.size)
    if not (isinstance(degree, int) and 1 <= degree <= n - 1):
        raise ValueError(f"degree must be in [1, n-1] = [1, {n - 1}], got {degree!r}")
    if degree == n - 1:
        everyone = frozenset(ids.tolist())
        return {cid: everyone for cid in everyone}
    if degree % 2:
        raise ValueError("a Harary graph with degree < n-1 needs an even degree")
    order = ids[np.argsort(_ring_keys(graph_seed, n))]
    half = degree // 2
    # Row r: the ids at ring positions r - half .. r + half.
    window = (np.arange(n)[:, None] + np.arange(-half, half + 1)[None, :]) % n
    rows = order[window].tolist()
    return {row[half]: frozenset(row) for row in rows}


def harary_rows(
    participants: Sequence[int] | np.ndarray, degree: int, graph_seed: bytes
) -> np.ndarray:
    """The graph as one int array: row ``s`` lists the closed neighbourhood of the
    ``s``-th smallest participant as positions in the sorted participant list, ascending.

    The same graph as :func:`harary_neighbourhoods`, for a server that keeps its
    per-client state in columns indexed by that position: ``(n, degree + 1)``
    int32, with no per-client Python object (at n = 10,000, k = 42 those are
    10,000 frozensets of 43 ints that every stage intersects). The complete graph
    is a read-only broadcast view of one row.
    """
    ids = _sorted_ids(participants)
    n = int(ids.size)
    if not (isinstance(degree, int) and 1 <= degree <= n - 1):
        raise ValueError(f"degree must be in [1, n-1] = [1, {n - 1}], got {degree!r}")
    if degree == n - 1:
        return np.broadcast_to(np.arange(n, dtype=np.int32), (n, n))
    if degree % 2:
        raise ValueError("a Harary graph with degree < n-1 needs an even degree")
    ring = np.argsort(_ring_keys(graph_seed, n)).astype(np.int32)  # ring position -> position
    half = degree // 2
    window = (np.arange(n)[:, None] + np.arange(-half, half + 1)[None, :]) % n
    rows = np.empty((n, degree + 1), dtype=np.int32)
    rows[ring] = ring[window]  # row of the client at ring position r: positions r +- half
    rows.sort(axis=1)
    return rows


def closed_neighbourhood(
    participants: Sequence[int] | np.ndarray, degree: int, graph_seed: bytes, client_id: int
) -> frozenset[int]:
    """The closed neighbourhood of one client (what a client computes for itself).

    O(n) vectorized work and no sort: the ``degree / 2`` successors of the
    client on the ring are the participants whose keys follow its own most
    closely (key differences taken modulo 2^64), the predecessors likewise.
    Pass the participants as a sorted array (``SessionConfig.ids``) to skip
    the conversion of a long tuple.
    """
    ids = participants if _is_sorted_array(participants) else _sorted_ids(participants)
    n = int(ids.size)
    if not (isinstance(degree, int) and 1 <= degree <= n - 1):
        raise ValueError(f"degree must be in [1, n-1] = [1, {n - 1}], got {degree!r}")
    pos = int(np.searchsorted(ids, client_id))
    if pos == n or int(ids[pos]) != client_id:
        raise ValueError("client is not a participant")
    if degree == n - 1:
        return frozenset(ids.tolist())
    if degree % 2:
        raise ValueError("a Harary graph with degree < n-1 needs an even degree")
    keys = _ring_keys(graph_seed, n)
    half = degree // 2
    ahead = keys - keys[pos]  # wraps modulo 2^64: the ring distance going forward
    if n > _CANDIDATE_MIN_RATIO * (half + 1):
        # The keys are uniform, so the half + 1 nearest on each side lie, with
        # overwhelming probability, within ±span of the client's own key (span holds
        # ~4x that many keys per side). Select exactly among those candidates when each
        # side has enough of them: the half + 1 smallest distances of a side are then
        # all below span, hence all candidates. Else (never seen) select among all.
        # One pass over n instead of two subtractions and two partitions of n.
        span = np.uint64(min(1 << 62, (_CANDIDATE_FACTOR * (half + 1) << 64) // n))
        candidates = np.flatnonzero(ahead + span < span + span)  # within ±span, wrapping
        forward = ahead[candidates]
        backward = np.uint64(0) - forward  # wraps: the ring distance going backward
        if np.count_nonzero(forward < span) > half and np.count_nonzero(backward < span) > half:
            near = candidates[np.concatenate([np.argpartition(forward, half)[:half + 1],
                                              np.argpartition(backward, half)[:half + 1]])]
            return frozenset(ids[near].tolist())
    behind = keys[pos] - keys
    near = np.concatenate([np.argpartition(ahead, half)[:half + 1],
                           np.argpartition(behind, half)[:half + 1]])
    return frozenset(ids[near].tolist())


#: Expected candidates per side of :func:`closed_neighbourhood`, in multiples of half + 1.
_CANDIDATE_FACTOR = 4
#: Below n = this * (half + 1) the candidate pass costs more (five more numpy calls) than
#: it saves (measured: slower at n = 100 and 1,000, 64 -> 44 µs per client at n = 10,000).
_CANDIDATE_MIN_RATIO = 64


def _is_sorted_array(participants: object) -> bool:
    return (isinstance(participants, np.ndarray) and participants.ndim == 1
            and participants.dtype.kind in "iu"
            and bool((participants[1:] > participants[:-1]).all()))


def _binomial_tail(trials: int, p: float, at_least: int) -> float:
    """P[Bin(trials, p) >= at_least], summed in log space (exact enough far into the tail)."""
    if at_least > trials or p <= 0.0:
        return 0.0 if at_least > 0 else 1.0
    if at_least <= 0:
        return 1.0
    if p >= 1.0:
        return 1.0
    log_p, log_q = math.log(p), math.log1p(-p)
    total = 0.0
    for c in range(at_least, trials + 1):
        log_term = (
            math.lgamma(trials + 1) - math.lgamma(c + 1) - math.lgamma(trials - c + 1)
            + c * log_p + (trials - c) * log_q
        )
        total += math.exp(log_term)
    return min(1.0, total)


@dataclass(frozen=True)
class GraphParameters:
    """Degree ``k`` and threshold ``t`` for ``n`` clients, and the bounds they meet."""

    n: int
    degree: int
    threshold: int
    security_failure: float  # upper bound, see choose_parameters
    correctness_failure: float

    @property
    def is_complete(self) -> bool:
        return self.degree == self.n - 1


def choose_parameters(
    n: int,
    *,
    dropout_rate: float,
    corrupt_fraction: float,
    security_bits: int = 40,
    correctness_bits: int = 20,
) -> GraphParameters:
    """Pick the smallest even degree ``k`` and a threshold ``t`` for ``n`` clients.

    Model: each client independently drops out with probability
    ``dropout_rate`` (δ) and is corrupt — colluding with the server — with
    probability ``corrupt_fraction`` (γ). Targets: the protocol leaks more
    than the sum of all honest survivors' inputs with probability at most
    ``2^-security_bits`` (default 2^-40), and fails to produce the sum
    (below-threshold abort) with probability at most ``2^-correctness_bits``
    (default 2^-20). The union bound over the ``n`` clients is applied to
    each condition below.

    1. Shares (security): corrupt members of N(i) must not pool ``t`` shares
       of one of i's secrets — ``n · P[Bin(k, γ) ≥ t] ≤ 2^-σ`` — and
       ``2t > k + 1``, so that the honest majority of a neighbourhood decides
       which of a client's two secrets is revealed.
    2. Graph (security): after removing corrupt and dropped clients, the
       honest survivors must stay connected, or the server learns the sum of
       an isolated group. A ring Harary graph is cut only by k/2 consecutive
       removed clients, so we require ``n · (γ + δ)^{k/2} ≤ 2^-σ``.
    3. Correctness: every neighbourhood keeps ``t`` survivors —
       ``n · P[Bin(k, δ) ≥ k + 1 − t] ≤ 2^-η`` (the k
       others of a dropped client must still hold t shares).

    When no ``k < n − 1`` meets all three, the complete graph ``k = n − 1``
    (classic SecAgg) is returned if it does; otherwise :class:`ValueError`.
    The bounds are for the honest-but-curious server; the active mode also
    needs ``3t > 2(k + 1)``, which this helper enforces when ``active=True``
    is requested through :class:`protocols.masking.MaskingParams`.
    """
    if not (isinstance(n, int) and n >= 2):
        raise ValueError("need at least 2 clients")
    if not (0.0 <= dropout_rate < 1.0 and 0.0 <= corrupt_fraction < 1.0):
        raise ValueError("rates must be in [0, 1)")
    if dropout_rate + corrupt_fraction >= 1.0:
        raise ValueError("dropout_rate + corrupt_fraction must be below 1")
    sec_target = 2.0 ** -security_bits
    cor_target = 2.0 ** -correctness_bits

    def evaluate(k: int) -> GraphParameters | None:
        size = k + 1
        t_min = size // 2 + 1
        for t in range(t_min, size + 1):
            share_leak = n * _binomial_tail(k, corrupt_fraction, t)
            if share_leak <= sec_target:
                break
        else:
            return None
        if k == n - 1:
            graph_leak = 0.0  # the complete graph stays connected
        else:
            graph_leak = n * (corrupt_fraction + dropout_rate) ** (k // 2)
        security = share_leak + graph_leak
        # A dropped client's neighbourhood has only k others left to help: the worse case.
        correctness = n * _binomial_tail(k, dropout_rate, size - t)
        if security <= sec_target and correctness <= cor_target:
            return GraphParameters(n, k, t, security, correctness)
        return None

    for k in range(2, n - 1, 2):
        found = evaluate(k)
        if found is not None:
            return found
    found = evaluate(n - 1)
    if found is None:
        raise ValueError(
            f"no degree/threshold meets 2^-{security_bits} security and 2^-{correctness_bits} "
            f"correctness for n={n}, dropout_rate={dropout_rate}, "
            f"corrupt_fraction={corrupt_fraction}"
        )
    return found
