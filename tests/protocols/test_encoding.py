import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import EncodingError, FixedPointEncoder


def test_round_trip_within_one_step():
    enc = FixedPointEncoder.for_sum(clip=2.0, max_summands=10, bits=32)
    x = np.linspace(-2, 2, 1001)
    back = enc.decode(enc.encode(x))
    assert np.max(np.abs(back - x)) <= 1.0 / enc.scale + 1e-12


def test_values_beyond_clip_are_clipped():
    enc = FixedPointEncoder.for_sum(clip=1.0, max_summands=4, bits=16)
    back = enc.decode(enc.encode(np.array([-5.0, 5.0]), stochastic=False))
    assert back.tolist() == [-1.0, 1.0]


def test_stochastic_rounding_is_unbiased():
    enc = FixedPointEncoder(clip=1.0, scale=4.0, bits=16, max_summands=1)
    x = np.full(200_000, 0.3)  # 1.2 levels: rounds to 1 or 2
    mean = enc.decode(enc.encode(x)).mean()
    # std of one draw is sqrt(0.2*0.8)/4 = 0.1; the mean's std is 0.1/sqrt(2e5) ≈ 2.2e-4
    assert abs(mean - 0.3) < 5 * 2.3e-4


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 50), m=st.integers(1, 40), bits=st.integers(16, 62),
    clip=st.floats(0.01, 100.0), seed=st.integers(0, 2**32 - 1),
)
def test_sum_of_max_summands_never_wraps(n, m, bits, clip, seed):
    try:
        enc = FixedPointEncoder.for_sum(clip=clip, max_summands=n, bits=bits)
    except EncodingError:
        return  # the parameters do not fit; refusing is the right answer
    rng = np.random.default_rng(seed)
    xs = rng.choice([-clip, clip], size=(n, m)) * rng.uniform(0.5, 1.0, size=(n, m))
    total = enc.ring_sum([enc.encode(x) for x in xs])
    assert np.allclose(enc.decode(total), xs.sum(axis=0), atol=n / enc.scale + 1e-9)


def test_too_many_summands_is_refused_with_advice():
    with pytest.raises(EncodingError, match="raise bits"):
        FixedPointEncoder.for_sum(clip=1.0, max_summands=1000, bits=8)
    enc = FixedPointEncoder.for_sum(clip=1.0, max_summands=3, bits=8)
    with pytest.raises(EncodingError, match="wrap"):
        enc.check_no_wrap(4)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_are_refused(bad):
    enc = FixedPointEncoder.for_sum(clip=1.0, max_summands=2)
    with pytest.raises(EncodingError):
        enc.encode(np.array([0.0, bad]))


def test_split_rounding_test_is_the_53_bit_comparison(monkeypatch):
    """Issue 22: the encoder draws 32 random bits per coordinate and 21 more only on a tie;
    the decision must equal ``k / 2^53 < fraction`` for ``k = hi * 2^21 + lo`` exactly,
    ties included (forced here on every coordinate)."""
    import protocols.encoding as enc

    rng = np.random.default_rng(7)
    fraction = np.concatenate([rng.random(4000), [0.0, 2.0**-53, 0.5, 1 - 2.0**-53, 2.0**-33,
                                                  2.0**-32, 3 * 2.0**-32 + 2.0**-50]])
    for forced_tie in (False, True):
        hi = (np.floor(fraction * 2.0**32).astype(np.uint32) if forced_tie
              else rng.integers(0, 2**32, fraction.size, dtype=np.uint64).astype(np.uint32))
        lo = rng.integers(0, 2**21, fraction.size)
        ties = iter(lo[hi == np.floor(fraction * 2.0**32).astype(np.uint32)].tolist())

        def fake_keystream(seed, out, hi=hi):
            out[...] = hi
            return out

        monkeypatch.setattr(enc.prg, "mask_keystream_into", fake_keystream)
        monkeypatch.setattr(enc.secrets, "randbits", lambda bits, ties=ties: next(ties))
        up = enc._round_up_into(fraction.copy(), np.empty(fraction.size, dtype=bool))
        k = hi.astype(np.uint64) * np.uint64(2**21) + lo.astype(np.uint64)
        want = k.astype(np.float64) * 2.0**-53 < fraction  # k < 2^53: exact in float64
        assert np.array_equal(up, want)
