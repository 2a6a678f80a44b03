"""The fast paths of issue 22 keep their contracts: same distributions, same bytes, bounded memory.

* the encoder's stochastic rounding, now one vectorized pass fed by an AES-CTR
  stream per vector: unbiased, rounding error of mean 0 and variance f(1-f);
* mask expansion into reused buffers: the same keystream as before;
* the vectorized ring order and neighbourhoods: the same graph from a tuple
  or an array, a permutation, uniform positions;
* the client masks without a temporary per neighbour, the server sums
  uploads in O(m) memory, one announcement body serves every receiver.
"""

from __future__ import annotations

import copyreg
import io
import pickle
import secrets
import tracemalloc

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from scipy import stats

from protocols import FixedPointEncoder, graph, prg
from protocols.encoding import csprng_uniform
from protocols.graph import (
    closed_neighbourhood,
    harary_neighbourhoods,
    harary_rows,
    ring_order,
)
from protocols.masking import MaskingClient, MaskingParams, MaskingServer, decode
from protocols.masking import messages as m
from protocols.masking.params import SessionConfig
from protocols.masking.server import Broadcast


# ------------------------------------------------------------------------------- encoder
def test_uniform_draws_have_53_bit_resolution_and_the_right_moments():
    u = csprng_uniform(400_000)
    assert u.dtype == np.float64 and 0.0 <= u.min() and u.max() < 1.0
    assert np.all(u * 2.0**53 == np.floor(u * 2.0**53))  # multiples of 2^-53
    assert abs(u.mean() - 0.5) < 5 * np.sqrt(1 / 12 / u.size)
    assert abs(u.var() - 1 / 12) < 0.002
    assert stats.kstest(u[:50_000], "uniform").pvalue > 1e-4
    assert not np.array_equal(csprng_uniform(8), csprng_uniform(8))  # a fresh key per call


@pytest.mark.parametrize("fraction", [0.0, 0.03, 0.25, 0.5, 0.9])
def test_rounding_error_has_mean_zero_and_variance_f_times_one_minus_f(fraction):
    enc = FixedPointEncoder(clip=100.0, scale=1.0, bits=32, max_summands=1)
    n = 200_000
    x = np.full(n, 7.0 + fraction)
    levels = enc.quantize(x)
    error = levels - x  # -f (rounded down) or 1 - f (rounded up)
    assert set(np.unique(levels)) <= {7, 8}
    up = int((levels == 8).sum())
    # Bernoulli(f): an exact binomial test, then the moments of the error.
    assert stats.binomtest(up, n, fraction).pvalue > 1e-4 if 0 < fraction else up == 0
    var = fraction * (1 - fraction)
    assert abs(error.mean()) < 5 * np.sqrt(var / n) + 1e-12
    # The sample variance's standard error uses the Bernoulli's own fourth central moment
    # f(1-f)(1-3f+3f^2); the Gaussian sqrt(2/n)*var is ~3x too small at f = 0.03 (flaky).
    fourth = var * (1 - 3 * fraction + 3 * fraction**2)
    # ... plus the squared deviation of the sample mean (all there is at f = 1/2).
    tolerance = 5 * np.sqrt(max(fourth - var**2, 0.0) / n) + 25 * var / n
    assert abs(error.var() - var) < tolerance + 1e-12


def test_stochastic_encoding_is_unbiased_at_every_scale():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=1000)
    enc = FixedPointEncoder.for_sum(clip=1.0, max_summands=1000, bits=20)  # coarse: ~524 levels
    draws = np.stack([enc.decode(enc.encode(x)) for _ in range(400)])
    step = 1.0 / enc.scale
    # per coordinate: mean of 400 draws within 5 standard errors (error std <= step / 2)
    assert np.all(np.abs(draws.mean(axis=0) - x) < 5 * (step / 2) / np.sqrt(400))
    assert np.all(np.abs(draws - x) <= step + 1e-12)


def test_weight_coordinate_and_word_types_agree():
    enc = FixedPointEncoder.for_sum(clip=2.0, max_summands=50, bits=32)
    x = np.linspace(-3, 3, 13)  # beyond the clip on both ends
    wide = enc.encode(x, stochastic=False, weight=0.75)
    narrow = enc.encode(x, stochastic=False, weight=0.75, dtype=np.uint32)
    assert wide.dtype == np.uint64 and narrow.dtype == np.uint32 and wide.shape == (14,)
    np.testing.assert_array_equal(wide, narrow.astype(np.uint64))
    np.testing.assert_array_equal(wide[:-1], enc.encode(x, stochastic=False))
    np.testing.assert_allclose(enc.decode(wide), np.append(np.clip(x, -2, 2), 0.75),
                               atol=0.5 / enc.scale)
    np.testing.assert_array_equal(enc.quantize(x, stochastic=False, weight=0.75),
                                  enc.from_ring(wide))
    with pytest.raises(ValueError):
        FixedPointEncoder.for_sum(clip=1.0, max_summands=2, bits=40).encode(x, dtype=np.uint32)
    with pytest.raises(ValueError):
        enc.encode(x, dtype=np.int64)
    with pytest.raises(Exception, match="weight"):
        enc.encode(x, weight=float("nan"))


def test_encoding_keeps_the_input_shape_and_leaves_it_untouched():
    enc = FixedPointEncoder.for_sum(clip=1.0, max_summands=4, bits=16)
    x = np.array([[0.25, -0.5], [2.0, -2.0]])
    before = x.copy()
    assert enc.encode(x).shape == (2, 2) and enc.quantize(x).shape == (2, 2)
    np.testing.assert_array_equal(x, before)
    first = enc.encode(x)
    enc.encode(-x)  # the reused work arrays must not alias a returned result
    np.testing.assert_array_equal(enc.decode(first).round(2), np.clip(x, -1, 1).round(2))


# -------------------------------------------------------------------------------- PRG
def test_keystream_into_matches_keystream_words_and_add_mask_is_modular():
    seed = secrets.token_bytes(32)
    for dtype in (np.dtype("<u4"), np.dtype("<u8")):
        want = prg.keystream_words(seed, 1001, dtype)
        got = prg.keystream_into(seed, np.empty(1001, dtype=dtype))
        np.testing.assert_array_equal(got, want)
        target = np.arange(1001, dtype=dtype)
        prg.add_mask(target, seed)
        prg.add_mask(target, seed, subtract=True)
        np.testing.assert_array_equal(target, np.arange(1001, dtype=dtype))
    with pytest.raises(ValueError):
        prg.keystream_into(seed, np.empty(4, dtype=np.uint32)[::2])
    with pytest.raises(ValueError):
        prg.keystream_into(b"short", np.empty(4, dtype=np.uint32))


# ------------------------------------------------------------------------------- graph
def test_neighbourhoods_are_the_same_from_tuples_and_arrays():
    ids = [5 * i + 2 for i in range(300)]
    seed = secrets.token_bytes(32)
    hood = harary_neighbourhoods(ids, 12, seed)
    arr = np.asarray(ids, dtype=np.uint32)
    for cid in ids[:40]:
        assert closed_neighbourhood(arr, 12, seed, cid) == hood[cid]
        assert closed_neighbourhood(tuple(ids), 12, seed, cid) == hood[cid]
    assert ring_order(arr, seed) == ring_order(ids[::-1], seed)
    with pytest.raises(ValueError):
        closed_neighbourhood(arr, 12, seed, 3)  # not a participant


@pytest.mark.parametrize(("n", "degree"), [(300, 12), (7, 2), (50, 49), (2000, 42)])
def test_harary_rows_are_the_graph_of_harary_neighbourhoods(n, degree):
    """Issue 22: the server keeps the graph as rows of sorted positions; row s must be the
    closed neighbourhood of the s-th smallest id, ascending, for sparse and complete graphs."""
    ids = [7 * i + 3 for i in range(n)]
    seed = secrets.token_bytes(32)
    hood = harary_neighbourhoods(ids[::-1], degree, seed)
    rows = harary_rows(ids, degree, seed)
    assert rows.shape == (n, degree + 1)
    assert (np.diff(rows, axis=1) > 0).all()
    for s, cid in enumerate(ids):
        assert frozenset(np.asarray(ids)[rows[s]].tolist()) == hood[cid]
    with pytest.raises(ValueError):
        harary_rows(ids, 3, seed)  # odd degree below n - 1


def test_server_neighbourhoods_follow_its_rows():
    params = MaskingParams(threshold=4, degree=6, bits=16, vector_length=3)
    ids = list(range(10, 40))
    server = MaskingServer(params, ids, graph_seed=bytes(range(32)))
    assert server.neighbourhoods == harary_neighbourhoods(ids, 6, bytes(range(32)))


@pytest.mark.parametrize("factor", [1, 4])
def test_closed_neighbourhood_candidates_give_the_exact_neighbourhood(monkeypatch, factor):
    """Issue 22: a client selects its neighbours among the keys near its own; with a
    candidate span of ~1 neighbourhood per side both that path and the fall-back (too few
    candidates) run, and every neighbourhood is exactly the graph's."""
    monkeypatch.setattr(graph, "_CANDIDATE_FACTOR", factor)
    monkeypatch.setattr(graph, "_CANDIDATE_MIN_RATIO", 8)
    ids = np.arange(0, 3 * 2000, 3, dtype=np.uint32)
    for degree in (2, 10, 42):
        seed = secrets.token_bytes(32)
        hood = harary_neighbourhoods(ids, degree, seed)
        for cid in ids[::37].tolist():
            assert closed_neighbourhood(ids, degree, seed, cid) == hood[cid]


def test_ring_positions_are_uniform():
    # Where does participant 0 land on the ring over many seeds? Uniform over n slots.
    n, trials = 10, 3000
    counts = np.zeros(n, dtype=int)
    for _ in range(trials):
        counts[ring_order(list(range(n)), secrets.token_bytes(32)).index(0)] += 1
    assert stats.chisquare(counts).pvalue > 1e-4


# ------------------------------------------------------------------------ session config
@pytest.mark.parametrize("ids", [np.array([3, 1, 2], dtype=">u4"), (1, 1, 2),
                                 (1, 2, 0xFFFFFFFF), (-1, 2, 3), (1, 2, 1 << 32)])
def test_session_config_refuses_bad_ids_from_any_dtype(ids):
    """Session 5: the ids are checked on one native copy (sortedness, range), whatever the
    input's dtype — a big-endian wire array, Python ints, negatives, 2^32."""
    params = MaskingParams(threshold=2, degree=2, bits=8, vector_length=1)
    with pytest.raises(ValueError):
        SessionConfig(params, ids, bytes(32))


def test_session_config_holds_one_read_only_id_array():
    params = MaskingParams(threshold=3, degree=3, bits=8, vector_length=1)
    a = SessionConfig(params, (1, 4, 9, 12), bytes(32))
    b = SessionConfig(params, np.array([1, 4, 9, 12], dtype=">u4"), bytes(32))
    assert a == b and hash(a) == hash(b) and a.participants == (1, 4, 9, 12)
    assert a.ids is b.ids and not a.ids.flags.writeable  # one shared copy
    assert a.includes(9) and not a.includes(10) and a.includes_all([1, 12])
    assert not a.includes_all([1, 13]) and len(a) == 4
    with pytest.raises(AttributeError):
        a.graph_seed = bytes(32)
    again = pickle.loads(pickle.dumps(a))  # an engine keeps node state this way
    assert again == a and again.ids is a.ids
    for bad in ((4, 1, 9, 12), (1, 1, 9, 12), (1, 4, 9, 2**32), (1.0, 4.0, 9.0, 12.0), (1,)):
        with pytest.raises(ValueError):
            SessionConfig(params, bad, bytes(32))


# --------------------------------------------------------------------- streaming memory
def _session_until_masked(n: int, length: int, degree: int, threshold: int):
    params = MaskingParams(threshold=threshold, degree=degree, bits=32, vector_length=length)
    server = MaskingServer(params, range(n))
    clients = {cid: MaskingClient(cid) for cid in range(n)}
    rng = np.random.default_rng(1)
    inputs = {cid: rng.integers(0, 1 << 32, size=length, dtype=np.uint64) for cid in range(n)}
    for cid, client in clients.items():
        client.set_input(inputs[cid])
    outgoing = server.start()
    for _ in range(2):
        for cid, frame in outgoing:
            for reply in clients[cid].receive(frame):
                server.receive(reply)
        outgoing = server.advance()
    return server, clients, dict(outgoing), inputs


def test_a_client_masks_without_a_temporary_per_neighbour():
    length = 200_000  # 800 KB per vector
    _, clients, bundles, _ = _session_until_masked(22, length, 20, 11)
    clients[0].receive(bundles[0])  # warm the reused buffers
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        clients[1].receive(bundles[1])  # 21 masks
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    # the masked vector and its frame (2 vectors), not a mask per neighbour (21), and the
    # frame built with one copy (before: ~6 vectors)
    assert peak < 2.5 * 4 * length, f"{peak / (4 * length):.1f} vectors allocated"


def test_the_server_sums_uploads_in_memory_independent_of_their_number():
    length = 100_000
    server, clients, bundles, inputs = _session_until_masked(30, length, 29, 16)
    uploads = [clients[cid].receive(frame)[0] for cid, frame in bundles.items()]
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        for frame in uploads:
            server.receive(frame)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert peak < 1.5 * 4 * length  # the running sum (+ small objects), for 30 uploads
    for cid, frame in server.advance():
        for reply in clients[cid].receive(frame):
            server.receive(reply)
    server.advance()
    want = sum(inputs.values()) & np.uint64(0xFFFFFFFF)
    np.testing.assert_array_equal(server.result.total, want)


class _KeyPickler(pickle.Pickler):
    """As the Flower engine's node-state pickler: X25519 keys by their raw bytes."""

    dispatch_table = copyreg.dispatch_table.copy()
    dispatch_table[type(X25519PrivateKey.generate())] = lambda key: (
        X25519PrivateKey.from_private_bytes, (key.private_bytes_raw(),))


def _roundtrip(obj):
    buffer = io.BytesIO()
    _KeyPickler(buffer).dump(obj)
    return pickle.loads(buffer.getvalue())


def test_a_client_pickled_mid_session_finishes_it():
    """The Flower engine keeps a node's clients between messages by pickling them."""
    params = MaskingParams(threshold=3, degree=3, bits=16, vector_length=3)
    server = MaskingServer(params, range(4))
    clients = {cid: MaskingClient(cid) for cid in range(4)}
    inputs = {cid: np.arange(3, dtype=np.uint64) * cid for cid in range(4)}
    for cid, client in clients.items():
        client.set_input(inputs[cid])
    outgoing = server.start()
    for _ in range(4):
        clients = {cid: _roundtrip(c) for cid, c in clients.items()}
        for cid, frame in outgoing:
            for reply in clients[cid].receive(frame):
                server.receive(reply)
        outgoing = server.advance()
    np.testing.assert_array_equal(server.result.total, sum(inputs.values()))


def test_one_announcement_body_serves_every_receiver():
    params = MaskingParams(threshold=3, degree=4, bits=16, vector_length=2)
    server = MaskingServer(params, range(7))
    frames = server.start()
    assert isinstance(frames, Broadcast) and len(frames) == 7
    assert [cid for cid, _ in frames] == list(range(7)) and frames[2][0] == 2
    assert [cid for cid, _ in frames[1:3]] == [1, 2]
    for cid, frame in frames:
        env = decode(frame)
        assert env.header.receiver == cid and isinstance(env.message, m.SessionStart)
        assert frame == m.encode(env.message, session_id=server.session_id, round_index=0,
                                 sender=0xFFFFFFFF, receiver=cid)
