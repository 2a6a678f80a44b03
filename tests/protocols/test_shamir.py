"""Shamir sharing over GF(2^256 + 297)."""

from __future__ import annotations

import itertools
import json
import pathlib
import random
import secrets

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import shamir
from protocols.errors import InvalidShare

VECTORS = pathlib.Path(__file__).resolve().parents[1] / "vectors" / "shamir_gf_p256.json"


def _miller_rabin(n: int, rounds: int = 40) -> bool:
    if n % 2 == 0:
        return False
    d, s = n - 1, 0
    while d % 2 == 0:
        d, s = d // 2, s + 1
    rng = random.Random(1)  # bases for a primality test, not a secret
    for _ in range(rounds):
        x = pow(rng.randrange(2, n - 2), d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


def test_field_is_prime_and_holds_every_32_byte_secret():
    assert _miller_rabin(shamir.PRIME)
    assert shamir.PRIME > 1 << 256
    assert not any(_miller_rabin((1 << 256) + c) for c in range(1, 297, 2))


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 12), st.integers(0, 8), st.data())
def test_any_threshold_subset_reconstructs(threshold, extra, data):
    holders = sorted(data.draw(st.sets(st.integers(1, 5000), min_size=threshold + extra,
                                       max_size=threshold + extra)))
    secret = secrets.token_bytes(32)
    ys = shamir.split(secret, threshold, holders)
    subset = data.draw(st.permutations(list(zip(holders, ys))))[:threshold]
    assert shamir.reconstruct(subset) == secret


def test_fewer_shares_do_not_reconstruct():
    secret = secrets.token_bytes(32)
    ys = shamir.split(secret, 4, [1, 2, 3, 4, 5])
    with pytest.raises(InvalidShare):
        # Three points of a degree-3 polynomial interpolate to a random field
        # element, which is >= 2^256 with probability ~297/p... so retry until
        # we see a wrong-but-valid value or the error; both mean "not the secret".
        for combo in itertools.combinations(zip([1, 2, 3, 4, 5], ys), 3):
            if shamir.reconstruct(list(combo)) != secret:
                raise InvalidShare("wrong secret, as expected")
    assert shamir.reconstruct(list(zip([1, 2, 3, 4, 5], ys))[:4]) == secret


def test_split_many_shares_independently():
    a, b = secrets.token_bytes(32), secrets.token_bytes(32)
    xs = [3, 9, 27, 81]
    sa, sb = shamir.split_many([a, b], 3, xs)
    assert shamir.reconstruct(list(zip(xs, sa))[:3]) == a
    assert shamir.reconstruct(list(zip(xs, sb))[1:]) == b


def test_lagrange_coefficients_match_naive_formula():
    xs = [2, 5, 11, 17, 23]
    p = shamir.PRIME
    naive = []
    for j, xj in enumerate(xs):
        num = den = 1
        for k, xk in enumerate(xs):
            if k != j:
                num = num * xk % p
                den = den * (xk - xj) % p
        naive.append(num * pow(den, -1, p) % p)
    assert shamir.lagrange_coefficients_at_zero(xs) == naive


def test_fixed_vectors():
    data = json.loads(VECTORS.read_text())
    assert int(data["prime"], 16) == shamir.PRIME
    for vec in data["vectors"]:
        shares = [(s["x"], shamir.decode_share(bytes.fromhex(s["y"]))) for s in vec["shares"]]
        t = vec["threshold"]
        assert shamir.reconstruct(shares[:t]).hex() == vec["secret"]
        assert shamir.reconstruct(shares[-t:]).hex() == vec["secret"]


def test_bad_inputs():
    with pytest.raises(ValueError):
        shamir.split(bytes(31), 2, [1, 2])
    with pytest.raises(ValueError):
        shamir.split(bytes(32), 3, [1, 2])
    with pytest.raises(ValueError):
        shamir.split(bytes(32), 2, [1, 1])
    with pytest.raises(ValueError):
        shamir.split(bytes(32), 1, [0])
    with pytest.raises(InvalidShare):
        shamir.decode_share(b"\xff" * shamir.SHARE_SIZE)
    with pytest.raises(InvalidShare):
        shamir.decode_share(b"\x00" * 5)
