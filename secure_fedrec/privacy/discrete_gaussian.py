"""Discrete Gaussian noise ``N_Z(0, sigma^2)`` from a CSPRNG, and its sizing for distributed DP.

``N_Z(0, sigma^2)`` puts mass proportional to ``exp(-x^2 / (2 sigma^2))`` on
every integer ``x``. Two samplers:

* :func:`sample_discrete_gaussian_exact` — the exact rejection sampler of
  Canonne, Kamath and Steinke 2020 ("The Discrete Gaussian for Differential
  Privacy", NeurIPS, Algorithms 1-3), in exact rational arithmetic
  (``fractions.Fraction``) with randomness from :mod:`secrets`. Hand-written
  because no maintained Python library ships an exact, CSPRNG-driven
  discrete Gaussian sampler (diffprivlib's and TFF's use floating point and
  non-cryptographic generators). ~tens of µs per sample: the reference.
* :class:`DiscreteGaussianTable` — a vectorized inverse-CDF sampler for bulk
  noise (10^5-10^6 samples per client per round). See its docstring for the
  statistical-distance bound (below 2^-90 per sample for the supported sigmas).

DP noise is a secret: all randomness here comes from :mod:`secrets`, directly or as the
key of an AES-256-CTR keystream used once (:func:`protocols.prg.keystream_words`), never
from ``numpy.random`` or :mod:`random`.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Iterator
from decimal import Decimal, localcontext
from fractions import Fraction
from functools import lru_cache

import numpy as np

from protocols.prg import SEED_SIZE, keystream_words

__all__ = [
    "DiscreteGaussianTable",
    "discrete_gaussian_pmf",
    "discrete_gaussian_variance",
    "distributed_noise_share_sigma",
    "rotated_wrap_probability",
    "sample_discrete_gaussian",
    "sample_discrete_gaussian_exact",
    "wrap_probability",
]


# ----------------------------------------------------------------------------------------
# Exact sampler (Canonne, Kamath, Steinke 2020)
# ----------------------------------------------------------------------------------------
def _bernoulli(p: Fraction) -> bool:
    """Bernoulli(p) for rational ``p`` in [0, 1], exactly."""
    return secrets.randbelow(p.denominator) < p.numerator


def _bernoulli_exp_neg(gamma: Fraction) -> bool:
    """Bernoulli(exp(-gamma)) for rational ``gamma >= 0`` (CKS 2020, Algorithm 1)."""
    while gamma > 1:
        # exp(-gamma) = exp(-1)^floor(gamma) * exp(-(gamma - floor(gamma)))
        if not _bernoulli_exp_neg_unit(Fraction(1)):
            return False
        gamma -= 1
    return _bernoulli_exp_neg_unit(gamma)


def _bernoulli_exp_neg_unit(gamma: Fraction) -> bool:
    """Bernoulli(exp(-gamma)) for ``gamma`` in [0, 1]: the first K with A_K = 0 is odd w.p. exp(-gamma)."""
    k = 1
    while _bernoulli(gamma / k):
        k += 1
    return k % 2 == 1


def _discrete_laplace(scale: int) -> int:
    """Discrete Laplace with mass proportional to ``exp(-|x| / scale)`` (CKS 2020, Algorithm 2, s = 1)."""
    while True:
        u = secrets.randbelow(scale)
        if not _bernoulli_exp_neg(Fraction(u, scale)):
            continue
        v = 0
        while _bernoulli_exp_neg(Fraction(1)):
            v += 1
        magnitude = u + scale * v
        negative = secrets.randbits(1) == 1
        if negative and magnitude == 0:
            continue
        return -magnitude if negative else magnitude


def _exact_one(sigma2: Fraction) -> int:
    """CKS 2020, Algorithm 3: rejection from a discrete Laplace of scale floor(sigma)+1."""
    t = math.isqrt(math.floor(sigma2)) + 1  # floor(sigma) + 1, computed on integers
    while True:
        y = _discrete_laplace(t)
        gap = abs(y) - sigma2 / t
        if _bernoulli_exp_neg(gap * gap / (2 * sigma2)):
            return y


def sample_discrete_gaussian_exact(sigma2: Fraction | float | str, size: int) -> np.ndarray:
    """``size`` exact samples of ``N_Z(0, sigma2)`` as int64 (``sigma2`` is the scale parameter squared).

    ``sigma2`` is converted to a :class:`fractions.Fraction` exactly (a float is
    taken at its exact binary value). Slow: use :class:`DiscreteGaussianTable`
    for bulk noise.
    """
    sigma2 = Fraction(sigma2)
    if sigma2 <= 0:
        raise ValueError(f"sigma2 must be positive, got {sigma2}")
    if size < 0:
        raise ValueError("size must be non-negative")
    return np.array([_exact_one(sigma2) for _ in range(size)], dtype=np.int64)


# ----------------------------------------------------------------------------------------
# Fast table sampler
# ----------------------------------------------------------------------------------------
_FIXED_BITS = 256  # fixed-point precision of the unnormalized weights
_CDF_BITS = 128  # resolution of the sampling thresholds
_TAIL_BITS = 100  # tail mass cut off at most 2^-100
_MAX_TABLE = 1 << 22  # ~4M entries (sigma up to ~3e5): ~64 MiB of thresholds


class DiscreteGaussianTable:
    """Inverse-CDF sampler of ``N_Z(0, sigma^2)`` driven by 128-bit uniforms from a CSPRNG.

    Construction. The magnitude ``|X|`` takes values ``0..K`` with
    ``K = ceil(sigma * sqrt(2 ln(2^100 * (sigma sqrt(2 pi) + 1))))``. The weights
    ``w_x = exp(-x^2 / (2 sigma^2))`` are computed in 256-bit fixed point by the
    recurrence ``w_{x+1} = w_x * a * b^x`` with ``a = exp(-1/(2 sigma^2))``,
    ``b = exp(-1/sigma^2)`` evaluated by :mod:`decimal` at 80 digits; the
    cumulative masses of ``|X|`` (``w_0`` once, ``2 w_x`` for ``x > 0``) are
    turned into integer thresholds ``T_x = floor(2^128 * CDF(x))``. A sample is
    the number of thresholds not exceeding a uniform 128-bit integer, and the
    sign is a separate uniform bit (0 gets weight ``w_0`` once, so the sign
    bit does not change its mass).

    Statistical distance to ``N_Z(0, sigma^2)`` (per sample), stated as
    :attr:`statistical_distance_bound`::

        TV <= tail + (K + 1) * 2^-128 + 2 (K + 1)^2 * 2^-256

    where ``tail = P(|X| > K) <= sigma sqrt(2 pi) exp(-K^2 / (2 sigma^2)) <= 2^-100``
    (Gaussian-integral bound on the sum, and the normalizer is at least 1),
    ``2^-128`` per threshold is the floor to 128 bits, and the last term covers
    the fixed-point and decimal rounding: ``a`` and ``b`` carry a relative
    error below 2^-256, ``w_x`` is a product of fewer than ``K^2`` such
    factors plus ``2K`` truncations, so its relative error is below
    ``2 (K+1)^2 2^-256``. For sigma <= 3e5
    this is below 2^-90; with ``m`` samples the mechanism is within
    ``m * TV`` of the exact one in total variation, i.e. at most that much
    is added to δ. It is far below any δ used in practice.
    """

    def __init__(self, sigma: float) -> None:
        if not (math.isfinite(sigma) and sigma > 0):
            raise ValueError(f"sigma must be positive and finite, got {sigma!r}")
        self.sigma = float(sigma)
        self.support = _tail_cut(self.sigma)
        if self.support + 1 > _MAX_TABLE:
            raise ValueError(
                f"sigma={sigma} needs a table of {self.support + 1} entries (limit {_MAX_TABLE}); "
                "lower the integer-domain noise (coarser quantization) or use the exact sampler"
            )
        self._hi, self._lo = _thresholds(self.sigma, self.support)
        self._guide_bits, self._guide_count, self._guide_unsure = _guide(self._hi)
        tail = self.sigma * math.sqrt(2 * math.pi) * math.exp(-(self.support**2) / (2 * self.sigma**2))
        self.statistical_distance_bound: float = (
            tail + (self.support + 1) * 2.0**-128 + 2 * (self.support + 1) ** 2 * 2.0**-256
        )

    def sample(self, size: int) -> np.ndarray:
        """``size`` samples as int64.

        Each sample compares a uniform 128-bit integer ``U`` with the thresholds, but only
        the top word is drawn for every sample: ``U``'s low word matters only when the top
        word equals a threshold's (probability about ``(K+1)·2^-64``), and is then drawn
        for that sample alone, which gives the same distribution as drawing both words
        up front. The count of thresholds ``<= U`` is read from a guide table indexed by
        the top word's leading bits wherever no threshold starts inside the bucket (all
        but a few per cent of the draws), and by a binary search otherwise. The words
        come from AES-256-CTR keyed with 32 fresh bytes of :func:`secrets.token_bytes`
        (:func:`protocols.prg.keystream_words`), a CSPRNG several times faster than
        ``os.urandom`` for bulk draws (``benchmarks/record_level.py`` measures both).
        """
        if size < 0:
            raise ValueError("size must be non-negative")
        if size == 0:
            return np.zeros(0, np.int64)
        words = keystream_words(secrets.token_bytes(SEED_SIZE), size + (size + 63) // 64, np.dtype("<u8"))
        high, sign_words = words[:size], words[size:]
        prefix = high >> np.uint64(64 - self._guide_bits)
        magnitude = self._guide_count[prefix].astype(np.int64)
        unsure = np.flatnonzero(self._guide_unsure[prefix])
        if unsure.size:
            magnitude[unsure] = self._count(high[unsure])
        signs = np.unpackbits(sign_words.view(np.uint8), count=size, bitorder="little").astype(np.int64)
        return (magnitude ^ -signs) + signs  # two's complement: -m where the sign bit is 1, m where 0

    def _count(self, high: np.ndarray) -> np.ndarray:
        """The number of 128-bit thresholds ``<= U`` for uniform ``U`` with top words ``high``."""
        right = np.searchsorted(self._hi, high, side="right")
        count = right.astype(np.int64)
        # A threshold whose top word equals the draw's needs the draw's low word (drawn now).
        tied = right > 0
        tied[tied] = self._hi[right[tied] - 1] == high[tied]
        for index in np.flatnonzero(tied):
            low = int.from_bytes(secrets.token_bytes(8), "little")
            first = int(np.searchsorted(self._hi, high[index], side="left"))
            count[index] = first + sum(1 for x in range(first, int(right[index])) if int(self._lo[x]) <= low)
        return count

    def pmf(self, values: np.ndarray) -> np.ndarray:
        """The exact probabilities this sampler implements (for tests)."""
        values = np.abs(np.asarray(values, dtype=np.int64))
        thresholds = [(int(hi) << 64) | int(lo) for hi, lo in zip(self._hi, self._lo)]
        edges = [0, *thresholds, 1 << _CDF_BITS]
        out = np.zeros(values.shape, dtype=np.float64)
        for index, value in np.ndenumerate(values):
            if value <= self.support:
                mass = Fraction(edges[value + 1] - edges[value], 1 << _CDF_BITS)
                out[index] = float(mass if value == 0 else mass / 2)
        return out


def _guide(hi: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """A guide table over the top ``g`` bits of a 64-bit word: per bucket, the number of
    thresholds whose top word lies below it, and whether one starts inside it (then the
    bucket's count depends on the rest of the word). ``g`` grows with the table so that
    about one bucket in 64 or fewer is unsure; at most 2^18 buckets (1.3 MiB: a bigger table
    gathers from outside the cache)."""
    bits = min(18, max(12, len(hi).bit_length() + 6))
    starts = np.arange(1 << bits, dtype=np.uint64) << np.uint64(64 - bits)
    below = np.searchsorted(hi, starts, side="left")
    ends = np.append(below[1:], len(hi))
    return bits, below.astype(np.int32), ends > below


def _tail_cut(sigma: float) -> int:
    return math.ceil(
        sigma * math.sqrt(2 * (_TAIL_BITS * math.log(2) + math.log(sigma * math.sqrt(2 * math.pi) + 1)))
    )


@lru_cache(maxsize=16)
def _thresholds(sigma: float, support: int) -> tuple[np.ndarray, np.ndarray]:
    one = 1 << _FIXED_BITS
    with localcontext() as ctx:
        ctx.prec = 80
        s2 = Decimal(sigma) * Decimal(sigma)
        a = int((-(1 / (2 * s2))).exp() * one)
        b = int((-(1 / s2)).exp() * one)
    # Two passes over the weights (normalizer, then thresholds) instead of
    # storing millions of 256-bit integers.
    total = one + 2 * sum(_weights(a, b, support))  # w_0 = 1 once, w_x twice (for +-x)
    cumulative = one
    mask = (1 << 64) - 1
    hi = np.empty(support, dtype=np.uint64)
    lo = np.empty(support, dtype=np.uint64)
    for index, w in enumerate(_weights(a, b, support)):
        # T_x = floor(2^128 * P(|X| <= x - 1)) for x = 1..K; the count of T <= U is |X|.
        threshold = (cumulative << _CDF_BITS) // total
        hi[index], lo[index] = threshold >> 64, threshold & mask
        cumulative += 2 * w
    return hi, lo


def _weights(a: int, b: int, support: int) -> Iterator[int]:
    """Fixed-point weights ``w_1..w_K`` by ``w_{x+1} = w_x * a * b^x`` (``w_0 = 1``), truncated to 256 bits."""
    factor, weight = a, 1 << _FIXED_BITS
    for _ in range(support):
        weight = (weight * factor) >> _FIXED_BITS
        factor = (factor * b) >> _FIXED_BITS
        yield weight


@lru_cache(maxsize=16)
def _table(sigma: float) -> DiscreteGaussianTable:
    return DiscreteGaussianTable(sigma)


def sample_discrete_gaussian(sigma: float, size: int) -> np.ndarray:
    """Bulk samples of ``N_Z(0, sigma^2)`` from a cached :class:`DiscreteGaussianTable`."""
    return _table(float(sigma)).sample(size)


# ----------------------------------------------------------------------------------------
# Moments, sizing and wrap-around
# ----------------------------------------------------------------------------------------
def discrete_gaussian_pmf(sigma: float, values: np.ndarray) -> np.ndarray:
    """``P(X = x)`` for ``X ~ N_Z(0, sigma^2)`` in float64 (normalizer summed over the bulk)."""
    support = _tail_cut(sigma)
    grid = np.arange(-support, support + 1, dtype=np.float64)
    normalizer = math.fsum(np.exp(-(grid**2) / (2 * sigma**2)))
    values = np.asarray(values, dtype=np.float64)
    return np.exp(-(values**2) / (2 * sigma**2)) / normalizer


def discrete_gaussian_variance(sigma: float) -> float:
    """``Var[N_Z(0, sigma^2)]``, slightly below ``sigma^2``.

    By Poisson summation, with ``s = sigma^2``:
    ``Var = s - 4 pi^2 s^2 * sum_k k^2 e^{-2 pi^2 s k^2} / sum_k e^{-2 pi^2 s k^2}``
    (sums over all integers k); the correction is below ``1e-7 * s`` for ``sigma >= 1``.
    """
    if not (math.isfinite(sigma) and sigma > 0):
        raise ValueError("sigma must be positive")
    s = sigma * sigma
    if s < 0.25:
        # The dual series converges slowly here; sum the pmf directly instead.
        grid = np.arange(-64, 65, dtype=np.float64)
        weights = np.exp(-(grid**2) / (2 * s))
        return float(np.sum(grid**2 * weights) / np.sum(weights))
    k = np.arange(1, 64, dtype=np.float64)
    dual = np.exp(-2 * math.pi**2 * s * k**2)
    numerator = 2 * np.sum(k**2 * dual)
    denominator = 1 + 2 * np.sum(dual)
    return float(s - 4 * math.pi**2 * s * s * numerator / denominator)


def distributed_noise_share_sigma(total_sigma: float, min_survivors: int) -> float:
    """Per-client scale ``sigma_share`` so that any ``n >= min_survivors`` shares carry enough noise.

    Guarantees both ``min_survivors * sigma_share^2 >= total_sigma^2`` (the
    scale the accountant uses) and ``min_survivors * Var[N_Z(0, sigma_share^2)]
    >= total_sigma^2`` (the actual variance). With more survivors the sum only
    gets noisier, so dropouts down to ``min_survivors`` never leave it
    under-noised. ``min_survivors`` must be the protocol's guaranteed minimum
    (its reconstruction threshold), not the expected count.
    """
    if not (math.isfinite(total_sigma) and total_sigma > 0):
        raise ValueError("total_sigma must be positive and finite")
    if isinstance(min_survivors, bool) or not isinstance(min_survivors, int) or min_survivors < 1:
        raise ValueError("min_survivors must be a positive integer")
    target_variance = total_sigma**2 / min_survivors
    low = total_sigma / math.sqrt(min_survivors)
    if discrete_gaussian_variance(low) >= target_variance:
        return low
    # The variance increases with sigma and is within a factor 2 of sigma^2 for
    # sigma >= 0.5, so [low, 2 low + 1] brackets the answer; bisect to the safe end.
    high = 2 * low + 1
    for _ in range(200):
        middle = (low + high) / 2
        if middle in (low, high):
            break
        if discrete_gaussian_variance(middle) >= target_variance:
            high = middle
        else:
            low = middle
    return high


def wrap_probability(
    *, bits: int, dim: int, signal_bound: float, share_sigma: float, max_shares: int
) -> float:
    """Upper bound on the probability that any coordinate of the noisy sum wraps modulo ``2^bits``.

    The sum is decoded as a signed integer in ``[-2^(bits-1), 2^(bits-1) - 1]``;
    it wraps if a coordinate leaves that range. Each coordinate is ``s + N``
    with ``|s| <= signal_bound`` (e.g. ``clients * per-coordinate level bound``,
    or the L2 bound of the sum) and ``N`` the sum of ``n <= max_shares``
    independent ``N_Z(0, share_sigma^2)``. A discrete Gaussian is
    ``sigma^2``-sub-Gaussian (CKS 2020, Cor. 9: ``E e^{tX} <= e^{t^2 sigma^2/2}``),
    so ``N`` is ``n sigma^2``-sub-Gaussian and, with ``t = 2^(bits-1) - 1 - signal_bound``
    and a union bound over the ``dim`` coordinates::

        P(wrap) <= dim * 2 * exp(-t^2 / (2 * max_shares * share_sigma^2))

    Returns 1.0 when ``t <= 0``. Use ``max_shares`` = the most clients that can
    contribute (more shares, more noise, larger tails).
    """
    if not (isinstance(bits, int) and 2 <= bits <= 64):
        raise ValueError("bits must be an integer in [2, 64]")
    if dim < 1 or max_shares < 1:
        raise ValueError("dim and max_shares must be positive")
    if signal_bound < 0 or share_sigma < 0:
        raise ValueError("signal_bound and share_sigma must be non-negative")
    headroom = (1 << (bits - 1)) - 1 - signal_bound
    if headroom <= 0:
        return 1.0
    if share_sigma == 0:
        return 0.0
    log_bound = math.log(2 * dim) - headroom**2 / (2 * max_shares * share_sigma**2)
    return min(1.0, math.exp(log_bound)) if log_bound < 0 else 1.0


def rotated_wrap_probability(
    *, bits: int, dim: int, sum_l2_bound: float, share_sigma: float, max_shares: int, beta: float = 0.0
) -> float:
    """Bound on the probability that a coordinate of a *rotated* noisy sum wraps modulo ``2^bits``.

    After random signs and an orthonormal DCT (entries at most ``sqrt(2/dim)`` in
    magnitude), coordinate ``k`` of the rotated signal ``sum_j c_kj s_j X_j`` is
    sub-Gaussian with variance proxy ``(2/dim) ||X||^2 <= 2 sum_l2_bound^2 / dim``
    (Hoeffding over the signs); the ``n <= max_shares`` rounding errors, each in
    ``(-1, 1)`` with mean zero, add ``n/4`` (one per client, Hoeffding), and the
    noise shares ``n share_sigma^2``. Conditional rounding conditions each client's
    rounding on an event of probability ``>= 1 - beta``, which multiplies a tail by
    at most ``1/(1-beta)``. With ``t = 2^(bits-1) - 1`` and a union bound::

        P(wrap) <= dim * 2 * exp(-t^2 / (2 v)) / (1 - beta),
        v = 2 sum_l2_bound^2 / dim + max_shares / 4 + max_shares share_sigma^2

    A wrap is modular clipping: it costs accuracy, never privacy (the modular sum is
    a function of the integer sum the accountant covers).
    """
    if not (isinstance(bits, int) and 2 <= bits <= 64):
        raise ValueError("bits must be an integer in [2, 64]")
    if dim < 1 or max_shares < 1:
        raise ValueError("dim and max_shares must be positive")
    if sum_l2_bound < 0 or share_sigma < 0 or not 0 <= beta < 1:
        raise ValueError("sum_l2_bound and share_sigma must be non-negative, beta in [0, 1)")
    headroom = float((1 << (bits - 1)) - 1)
    proxy = 2 * sum_l2_bound**2 / dim + max_shares / 4 + max_shares * share_sigma**2
    log_bound = math.log(2 * dim / (1 - beta)) - headroom**2 / (2 * proxy)
    return min(1.0, math.exp(log_bound)) if log_bound < 0 else 1.0
