"""Steps the single-round and the multi-round masking parties take alike.

Each is written once so that both protocols enforce the same rules the same
way: the survivor rules of a stage, the checks on advertised keys and key
directories, the checked streaming sum of masked uploads, the masking itself,
and Shamir reconstruction with the threshold and cached Lagrange coefficients.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence

import numpy as np

from .. import keys as kx
from .. import prg, shamir
from ..errors import BelowThreshold, MalformedMessage, RemoteProtocolError
from . import messages as m
from .params import MaskingParams

__all__ = [
    "SecretRecovery",
    "add_upload",
    "agree_with_neighbours",
    "check_advertised_keys",
    "check_key_directory",
    "gather_shares",
    "mask_input",
    "require_neighbours",
    "require_survivors",
]


# ------------------------------------------------------------------------------ server
def require_neighbours(neighbourhoods: Mapping[int, frozenset[int]], alive: frozenset[int],
                       threshold: int, stage: str) -> None:
    """Every live client must keep ``threshold`` live members in its closed neighbourhood."""
    if not alive:
        raise BelowThreshold(0, threshold, stage)
    fewest = min(len(neighbourhoods[i] & alive) for i in alive)
    if fewest < threshold:
        raise BelowThreshold(fewest, threshold, stage)


def require_survivors(alive: Collection[int], floor: int, stage: str) -> None:
    """The session-wide floor: at least ``floor`` clients may still contribute."""
    if len(alive) < floor:
        raise BelowThreshold(len(alive), floor, stage)


def check_advertised_keys(msg: m.AdvertiseKeys, taken: set[bytes]) -> None:
    """Refuse small-order keys and keys already advertised in the session.

    Refused at advertise time, before anyone agrees with it: a small-order key
    would make every neighbour's key agreement fail and abort the session.
    """
    kx.check_public_key(msg.c_public)
    kx.check_public_key(msg.s_public)
    if msg.c_public == msg.s_public or {msg.c_public, msg.s_public} & taken:
        raise RemoteProtocolError("advertised keys repeat keys already advertised")


def add_upload(total: np.ndarray | None, words: np.ndarray, params: MaskingParams,
               dtype: np.dtype) -> np.ndarray:
    """Check a masked upload and add it to the running sum (created on the first one).

    The sum is the only vector the server keeps: O(m) memory however many
    clients upload. ``words`` may view the frame's bytes; nothing keeps it.
    """
    if words.dtype != prg.wire_dtype(params.bits) or words.size != params.vector_length:
        raise MalformedMessage("masked input has the wrong word size or length")
    if params.bits < 8 * words.itemsize and words.size and int(words.max()) >> params.bits:
        raise MalformedMessage("masked input out of range")
    if total is None:
        return words.astype(dtype, copy=True)
    np.add(total, words, out=total)  # narrower wire words widen exactly
    return total


def gather_shares(answers: Mapping[int, tuple[Sequence[int], Sequence[bytes]]],
                  ) -> dict[int, list[tuple[int, bytes]]]:
    """``holder -> (owners, shares)`` into ``owner -> [(x = holder + 1, share), ...]``."""
    out: dict[int, list[tuple[int, bytes]]] = {}
    for holder in sorted(answers):
        owners, shares = answers[holder]
        for owner, share in zip(owners, shares):
            out.setdefault(owner, []).append((holder + 1, share))
    return out


class SecretRecovery:
    """Reconstructs 32-byte secrets from ``threshold`` shares, or stops below threshold.

    Lagrange coefficients are cached per holder set: the server reconstructs
    many secrets from the same holders.
    """

    def __init__(self, threshold: int, stage: str) -> None:
        self.threshold = threshold
        self.stage = stage
        self._coefficients: dict[tuple[int, ...], list[int]] = {}

    def __call__(self, shares: Sequence[tuple[int, bytes]] | None) -> bytes:
        have = len(shares or ())
        if have < self.threshold:
            raise BelowThreshold(have, self.threshold, self.stage)
        chosen = list(shares)[:self.threshold]  # type: ignore[arg-type]
        xs = tuple(x for x, _ in chosen)
        lambdas = self._coefficients.get(xs)
        if lambdas is None:
            lambdas = self._coefficients[xs] = shamir.lagrange_coefficients_at_zero(xs)
        return shamir.reconstruct(((x, shamir.decode_share(y)) for x, y in chosen),
                                  coefficients=lambdas)


# ------------------------------------------------------------------------------ client
def check_key_directory(entries: Mapping[int, m.KeyEntry], neighbourhood: frozenset[int],
                        client_id: int, own_keys: tuple[bytes, bytes], threshold: int) -> None:
    """What an honest client requires of the directory the server sends it."""
    if not set(entries) <= neighbourhood:
        raise RemoteProtocolError("key directory lists clients outside the neighbourhood")
    own = entries.get(client_id)
    if own is None or (own.c_public, own.s_public) != own_keys:
        raise RemoteProtocolError("key directory misrepresents this client's keys")
    if len(entries) < threshold:
        raise BelowThreshold(len(entries), threshold, "advertise_keys")
    all_keys = [e.c_public for e in entries.values()] + [e.s_public for e in entries.values()]
    if len(set(all_keys)) != len(all_keys):
        raise RemoteProtocolError("key directory repeats a public key")


def agree_with_neighbours(entries: Mapping[int, m.KeyEntry], client_id: int,
                          c_keys: kx.KeyPair, s_keys: kx.KeyPair,
                          ) -> tuple[dict[int, bytes], dict[int, bytes]]:
    """Both X25519 agreements with every neighbour; each refuses a small-order key.

    Done as soon as the directory arrives, so that a bad key is refused before
    any share leaves the client.
    """
    c_shared, s_shared = {}, {}
    for peer, entry in entries.items():
        if peer != client_id:
            c_shared[peer] = kx.agree(c_keys.private, entry.c_public)
            s_shared[peer] = kx.agree(s_keys.private, entry.s_public)
    return c_shared, s_shared


def mask_input(vector: np.ndarray, params: MaskingParams, self_seed: bytes,
               pairwise: Iterable[tuple[int, bytes]], client_id: int) -> np.ndarray:
    """``x + PRG(b) + Σ ±PRG(s_ij)`` modulo 2^bits: the lower id adds, the higher subtracts.

    The result is the one fresh array, in the session's wire words (``prg.wire_dtype``);
    masks are expanded into a reused work buffer and added in place, modulo the word
    size (2^bits divides it).
    """
    dtype = prg.word_dtype(params.bits)
    masked = np.empty(params.vector_length, dtype=dtype)
    if vector.dtype == dtype and vector.ndim == 1:  # the encoder's own words: copy and mask at once
        prg.add_mask(masked, self_seed, source=vector)
    else:
        np.copyto(masked, vector, casting="unsafe")  # entries < 2^bits: exact
        prg.add_mask(masked, self_seed)
    for peer, seed in pairwise:
        prg.add_mask(masked, seed, subtract=client_id > peer)
    if params.bits < 8 * dtype.itemsize:
        np.bitwise_and(masked, dtype.type((1 << params.bits) - 1), out=masked)
    wire = prg.wire_dtype(params.bits)  # 8- and 16-bit rings travel in 1- and 2-byte words
    return masked if wire == dtype else masked.astype(wire)
