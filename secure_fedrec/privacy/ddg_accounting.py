"""Accounting for the distributed discrete Gaussian (DDG) mechanism under secure aggregation.

Mechanism (Kairouz, Liu, Steinke 2021, "The Distributed Discrete Gaussian
Mechanism for Federated Learning with Secure Aggregation", ICML; arXiv
2102.06387): every participating client clips its update to L2 norm ``c``,
scales it by ``1/gamma``, rounds it to the integer lattice (conditional
randomized rounding), adds its own share of discrete Gaussian noise
``N_Z(0, sigma^2)`` per coordinate, and masks the result; the server learns
only the modular sum, which carries the noise of all ``n`` surviving shares.

Bound used (KLS 2021, Proposition 14 / Eq. 17, which refines their Theorem 1).
For ``n`` independent shares ``N_Z(0, sigma^2)^d`` and an integer shift ``Delta``
with ``||Delta||_2 <= D2`` and ``||Delta||_1 <= D1``, the sum satisfies, for all
``alpha > 1``::

    D_alpha(Z + Delta || Z) <= eps(alpha) = min(
        alpha/2 * D2^2 / (n sigma^2) + tau * d,
        alpha/2 * (D2^2 / (n sigma^2) + 2 * D1 * tau / (sqrt(n) sigma) + tau^2 * d),
        alpha/2 * (D2 / (sqrt(n) sigma) + tau * sqrt(d))^2,
    )
    tau = 10 * sum_{k=1}^{n-1} exp(-2 pi^2 sigma^2 * k / (k + 1))

(``sigma`` is the per-share scale parameter in integer units; ``tau`` measures
how far the sum of discrete Gaussians is from a discrete Gaussian.) With
``D1 = min(sqrt(d) * D2, D2^2)`` (the second holds for integer vectors).

Sensitivity after rounding (KLS 2021, conditional randomized rounding; the
``rounded_l2_norm_bound`` of their code): a vector of L2 norm ``<= c`` scaled to
``c/gamma`` and randomly rounded, re-drawn until its norm is at most the bound,
has integer-domain L2 norm at most::

    D2 = min( c/gamma + sqrt(d),
              sqrt((c/gamma)^2 + d/4 + sqrt(2 ln(1/beta)) * (c/gamma + sqrt(d)/2)) )

equivalently, in the original units, ``(gamma D2)^2 <= min(c^2 + gamma^2 d/4 +
sqrt(2 ln(1/beta)) gamma (c + gamma sqrt(d)/2), (c + gamma sqrt(d))^2)``. The
first term needs no retry; the second holds when rounding is retried (each
try succeeds with probability >= 1 - beta).

Subsampling. Amplification is applied with the *general* RDP upper bound for
Poisson subsampling of Zhu and Wang 2019 ("Poisson Subsampled Rényi
Differential Privacy", ICML; the "general upper bound", their Theorem 5
as cited by KLS's accounting code), valid for any mechanism with the
given RDP curve at integer orders ``alpha >= 2``::

    eps'(alpha) <= 1/(alpha-1) log( (1-q)^(alpha-1) (alpha q - q + 1)
                   + C(alpha,2) q^2 (1-q)^(alpha-2) e^{eps(2)}
                   + 3 sum_{l=3}^{alpha} C(alpha,l) (1-q)^(alpha-l) q^l e^{(l-1) eps(l)} )

and we take ``min(eps'(alpha), eps(alpha))``. This is a proven bound, not the
Gaussian-specific formula; it is looser than the tight subsampled-Gaussian RDP
(by tens of percent for small q), which is the honest price of the discrete
mechanism. The same approach is used by KLS's own accounting code.

Its factor 3 costs ``log(1 + 2 P[Bin(alpha, q) >= 3]) / (alpha - 1)`` per step even
without any privacy loss, which composed over the hundreds of steps of record-level
DP-SGD puts a floor under ε (≈ 1.1 for 1000 steps at q = 0.02, δ ≈ 1e-6, whatever the
noise). The distributed discrete Gaussian does not need it: its privacy loss is
*symmetric* (the noise is symmetric and the neighbour is a shift), and for every
mechanism with a symmetric privacy loss the "remove" direction of Poisson
subsampling is at most the "add" direction (docs/privacy.md §4.4 proves it), so the
binomial expansion of the "add" direction is a bound for both::

    eps'(alpha) <= 1/(alpha-1) log( sum_{k=0}^{alpha} C(alpha,k) (1-q)^(alpha-k) q^k e^{(k-1) eps(k)} )

(``eps(0)``, ``eps(1)`` taken as 0: ``E[L^0] = E[L^1] = 1``), with ``eps(k)`` any RDP
bound of the unsampled mechanism at order k. For the Gaussian this is the exact
formula of Mironov, Talwar and Zhang 2019 at integer orders; for the DDG with
``eps(k) = k D2^2 / (2 n sigma^2) + tau d`` it is that formula plus ``tau d``
(:func:`poisson_subsampled_rdp_symmetric`, ``subsampling="symmetric"``).

Exact profile where the two worlds differ by a shift. A round whose participation the observer
is told (``"revealed"``), one every user takes part in (``q = 1``, any mode), and a hidden
Poisson sample whose every share is in the sum whatever the coin (``"symmetric"``: private
sampling, record level) are shifts of a sum of discrete Gaussian shares; :mod:`.ddg_dominance`
shows that sum is, up to a factor ``exp(±η)`` with ``η`` ~1e-60 at this package's scales, a
post-processing of a continuous Gaussian with variance ``nσ² - 8``. Its (ε, δ) profile is then
exact: in closed form averaged over revealed participation patterns, or dp-accounting's PLD of
the Poisson-subsampled Gaussian for a hidden sample (the accountant of central DP-SGD).
:meth:`DistributedDiscreteGaussianAccountant.get_epsilon` and
:meth:`~DistributedDiscreteGaussianAccountant.delta_curve` take the smaller of that and the RDP
figure (both are upper bounds): 15–25 % less ε than RDP alone at the default's scales. Server
sampling's amplified figure (``"general"``, ``q < 1``) is no shift pair and stays with RDP.

Neighbouring relation and assumptions (see docs/privacy.md):

* the shift ``Delta`` is one participant's (rounded) update while every
  noise share stays in the sum ("zero-out"): the target's own share is in the
  sum in both neighbouring worlds. Under server sampling a sampled user adds a
  share an unsampled one does not, so the sums of the two worlds differ in the
  *number* of shares too; that is not a post-processing of the shift (an extra
  share on one side only), and in many coordinates the sum's norm reveals it.
  :func:`participation_revealed_rdp` is the bound that covers it (the observer is
  told who took part; zero-out); the amplified figure does not (docs/privacy.md,
  "The share count");
* ``num_shares`` must be the number of shares actually in the unmasked sum
  (honest survivors), not the number of clients invited;
* the bound is on the integer sum; the modular sum the server sees is a function of
  it, so a coordinate that wraps modulo ``2^bits`` costs accuracy, not privacy
  (post-processing; KLS 2021 §4's modular clipping). See
  :func:`secure_fedrec.privacy.discrete_gaussian.wrap_probability`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from dp_accounting.rdp import rdp_privacy_accountant
from scipy import special

from .accounting import Accountant
from .ddg_dominance import (
    MAX_TOTAL_SLACK,
    dominating_gaussian,
    shift_profile_delta,
    shift_profile_epsilon,
)

__all__ = [
    "DDG_ORDERS",
    "SUBSAMPLING_BOUNDS",
    "DistributedDiscreteGaussianAccountant",
    "conditional_rounding_l2_bound",
    "ddg_rdp",
    "ddg_tau",
    "participation_revealed_rdp",
    "poisson_subsampled_rdp_symmetric",
    "poisson_subsampled_rdp_upper_bound",
]

#: how a round's Poisson participation is charged: Zhu–Wang's general amplification bound, the
#: binomial expansion for symmetric losses, or no amplification with participation revealed
SUBSAMPLING_BOUNDS = ("general", "symmetric", "revealed")

DDG_ORDERS: tuple[int, ...] = tuple(range(2, 65)) + (80, 96, 128, 160, 192, 256)


def ddg_tau(sigma: float, num_shares: int) -> float:
    """KLS 2021's ``tau = 10 * sum_{k=1}^{n-1} exp(-2 pi^2 sigma^2 k/(k+1))``."""
    if not (sigma > 0 and math.isfinite(sigma)):
        raise ValueError(f"sigma must be positive, got {sigma!r}")
    if num_shares < 1:
        raise ValueError(f"num_shares must be >= 1, got {num_shares!r}")
    k = np.arange(1, num_shares, dtype=np.float64)
    return float(10.0 * np.sum(np.exp(-2.0 * math.pi**2 * sigma**2 * k / (k + 1.0))))


def conditional_rounding_l2_bound(
    l2_clip: float, gamma: float, dim: int, beta: float = math.exp(-0.5)
) -> float:
    """Integer-domain L2 bound of a clipped vector after scaling by ``1/gamma`` and rounding.

    ``beta = 0`` means unconditional randomized rounding (bound ``c/gamma + sqrt(d)``);
    ``beta in (0, 1)`` is conditional rounding, retried until the norm is within
    the returned bound. ``exp(-0.5)`` is KLS's default.
    """
    if not (l2_clip > 0 and gamma > 0 and math.isfinite(l2_clip) and math.isfinite(gamma)):
        raise ValueError("l2_clip and gamma must be positive and finite")
    if dim < 1:
        raise ValueError("dim must be >= 1")
    if not 0 <= beta < 1:
        raise ValueError("beta must be in [0, 1)")
    scaled = l2_clip / gamma
    unconditional = scaled + math.sqrt(dim)
    if beta == 0:
        return unconditional
    conditional_sq = (
        scaled**2 + dim / 4.0 + math.sqrt(2.0 * math.log(1.0 / beta)) * (scaled + math.sqrt(dim) / 2.0)
    )
    return min(unconditional, math.sqrt(conditional_sq))


def ddg_rdp(
    orders: Sequence[float] | np.ndarray,
    *,
    sigma: float,
    l2_sensitivity: float,
    num_shares: int,
    dim: int,
    l1_sensitivity: float | None = None,
) -> np.ndarray:
    """RDP curve of one unsampled DDG sum (KLS 2021 Prop. 14), in nats, per order."""
    alpha = np.asarray(orders, dtype=np.float64)
    if np.any(alpha <= 1):
        raise ValueError("orders must be > 1")
    if not (l2_sensitivity >= 0 and math.isfinite(l2_sensitivity)):
        raise ValueError("l2_sensitivity must be finite and >= 0")
    tau = ddg_tau(sigma, num_shares)
    if l1_sensitivity is None:
        l1_sensitivity = l2_sensitivity * min(math.sqrt(dim), l2_sensitivity)
    sd = math.sqrt(num_shares) * sigma
    l2_scale = l2_sensitivity / sd
    l1_scale = l1_sensitivity / sd
    term_1 = alpha / 2.0 * l2_scale**2 + tau * dim
    term_2 = alpha / 2.0 * (l2_scale**2 + 2.0 * l1_scale * tau + tau**2 * dim)
    term_3 = alpha / 2.0 * (l2_scale + math.sqrt(dim) * tau) ** 2
    return np.minimum(np.minimum(term_1, term_2), term_3)


def poisson_subsampled_rdp_upper_bound(
    orders: Sequence[int], sample_rate: float, rdp: Mapping[int, float] | np.ndarray
) -> np.ndarray:
    """Zhu-Wang 2019 general upper bound (optimal up to log(3)/(alpha-1)), at integer ``orders >= 2``.

    ``rdp[l]`` must hold the unsampled mechanism's RDP at every integer
    ``l`` in ``2..max(orders)`` (an array indexed by ``l`` or a mapping).
    """

    def log_sum(alpha: int, log_q: float, log_1mq: float) -> float:
        q = math.exp(log_q)
        ells = np.arange(3, alpha + 1)
        eps_l = np.array([float(rdp[int(ell)]) for ell in ells])
        log_terms = [
            (alpha - 1) * log_1mq + math.log(alpha * q - q + 1),
            _log_comb(alpha, 2) + 2 * log_q + (alpha - 2) * log_1mq + float(rdp[2]),
        ]
        weights = [1.0, 1.0]
        if len(ells):
            log_terms.extend(
                (ells - 1) * eps_l + _log_comb(alpha, ells) + (alpha - ells) * log_1mq + ells * log_q
            )
            weights.extend([3.0] * len(ells))
        return float(special.logsumexp(np.asarray(log_terms, dtype=np.float64), b=weights))

    return _per_order(orders, sample_rate, rdp, log_sum, "the Zhu-Wang bound")


def poisson_subsampled_rdp_symmetric(
    orders: Sequence[int], sample_rate: float, rdp: Mapping[int, float] | np.ndarray
) -> np.ndarray:
    """RDP of the Poisson-subsampled mechanism at integer ``orders >= 2``, for a mechanism whose
    privacy loss is symmetric (symmetric noise, the neighbour a shift of its mean).

    ``rdp[k]`` must hold an RDP bound of the unsampled mechanism at every integer ``k`` in
    ``2..max(orders)``. The "add" direction is ``E_Q[(1 - q + q L)^alpha]`` with ``L`` the
    likelihood ratio; expanded binomially it needs only ``E_Q[L^k] = exp((k-1) D_k) <=
    exp((k-1) rdp[k])``. The "remove" direction is at most the "add" one for symmetric
    privacy losses (docs/privacy.md §4.4), so this bounds both. With the Gaussian's
    ``rdp[k] = k / (2 z^2)`` it equals ``dp_accounting``'s subsampled-Gaussian RDP:

    >>> import numpy as np
    >>> from dp_accounting.rdp import rdp_privacy_accountant as lib
    >>> z, q, orders = 1.5, 0.05, [2, 8, 32]
    >>> ours = poisson_subsampled_rdp_symmetric(orders, q, np.arange(33) / (2 * z * z))
    >>> bool(np.allclose(ours, lib._compute_rdp_poisson_subsampled_gaussian(q, z, np.array(orders, float))))
    True
    """

    def log_sum(alpha: int, log_q: float, log_1mq: float) -> float:
        ks = np.arange(0, alpha + 1)
        moments = np.array([0.0, 0.0] + [(k - 1) * float(rdp[int(k)]) for k in ks[2:]])  # E[L^0] = E[L^1] = 1
        return float(special.logsumexp(_log_comb(alpha, ks) + (alpha - ks) * log_1mq + ks * log_q + moments))

    return _per_order(orders, sample_rate, rdp, log_sum, "the binomial expansion")


def participation_revealed_rdp(orders: Sequence[float] | np.ndarray, sample_rate: float,
                               rdp: Sequence[float] | np.ndarray) -> np.ndarray:
    """RDP of one round whose participation is random (rate ``q``) and *revealed* to the observer.

    The observer learns whether the user took part (a coin independent of the data, the same in
    both worlds: the zero-out relation, the user enrolled in both and its data replaced by none);
    when it did not, the round does not depend on its data; when it did, the round is the unsampled
    mechanism, whose RDP at ``orders`` is ``rdp``. For a pair whose revealed part has the same law
    in both worlds, ``exp((α-1) D_α)`` is the average of the conditional ones, so exactly::

        D_α = 1/(α-1) · log(1 - q + q · exp((α-1) · rdp(α)))

    No amplification by a hidden sample is assumed, so this holds against the server that draws
    the sample and against every statistic of the released sum, the number of shares in it
    included (docs/privacy.md, "The share count"). Any real orders ``α > 1``.
    """
    alpha = np.asarray(orders, dtype=np.float64)
    base = np.asarray(rdp, dtype=np.float64)
    if alpha.shape != base.shape or np.any(alpha <= 1):
        raise ValueError("orders must be > 1, one per RDP value")
    q = float(sample_rate)
    if not 0 <= q <= 1:
        raise ValueError("sample_rate must be in [0, 1]")
    if q == 0:
        return np.zeros_like(base)
    if q == 1:
        return base.copy()
    # log(1 - q + q e^x), without overflow at large orders
    return np.logaddexp(math.log1p(-q), math.log(q) + (alpha - 1) * base) / (alpha - 1)


def _per_order(orders: Sequence[int], sample_rate: float, rdp: Mapping[int, float] | np.ndarray,
               log_sum: Callable[[int, float, float], float], name: str) -> np.ndarray:
    """``log_sum(alpha, log q, log(1-q)) / (alpha - 1)`` per integer order, with the edge cases
    ``q = 0`` (no loss) and ``q = 1`` (the unsampled mechanism)."""
    q = float(sample_rate)
    if not 0 <= q <= 1:
        raise ValueError("sample_rate must be in [0, 1]")
    result = np.empty(len(orders), dtype=np.float64)
    for index, order in enumerate(orders):
        alpha = int(order)
        if alpha != order or alpha < 2:
            raise ValueError(f"{name} is stated for integer orders >= 2")
        if q == 0:
            result[index] = 0.0
        elif q == 1:
            result[index] = float(rdp[alpha])
        else:
            result[index] = log_sum(alpha, math.log(q), math.log1p(-q)) / (alpha - 1)
    return result


def _log_comb(n: int, k: Any) -> Any:
    return special.gammaln(n + 1) - special.gammaln(k + 1) - special.gammaln(n - k + 1)


class DistributedDiscreteGaussianAccountant(Accountant):
    """RDP accountant for the DDG mechanism, composed over rounds, with the Gaussian accountants' API.

    The mechanism's geometry is fixed for a run and given once: the integer-domain
    ``l2_sensitivity`` of one client's rounded update, the ``num_shares`` of noise the
    protocol guarantees are in every released sum (its minimum of survivors), and the
    ``dim`` of the noised vector. Each :meth:`step` then records, like every
    :class:`~secure_fedrec.privacy.accounting.Accountant`, a ``noise_multiplier`` and a
    ``sample_rate``: the multiplier is the *sum's* noise scale over the sensitivity,
    ``z = sqrt(num_shares) * share_sigma / l2_sensitivity`` (so each share has scale
    ``z * l2_sensitivity / sqrt(num_shares)``, see :meth:`share_sigma`).

    Charging every round at the guaranteed minimum of shares is the conservative
    choice: more survivors only add independent noise (post-processing). Keeping that
    minimum is the protocol's job (``min_survivors``); the accountant charges what the
    plan guarantees.

    ``subsampling`` picks the amplification bound: ``"general"`` is Zhu and Wang's bound
    for any mechanism (:func:`poisson_subsampled_rdp_upper_bound`); ``"symmetric"`` the
    binomial expansion valid for mechanisms with a symmetric privacy loss, which the DDG
    is (:func:`poisson_subsampled_rdp_symmetric`; docs/privacy.md §4.4); ``"revealed"``
    no amplification, participation told to the observer
    (:func:`participation_revealed_rdp`; docs/privacy.md, "The share count"). Record-level
    DP-SGD under secure aggregation uses the latter: over hundreds of steps the general
    bound's factor 3 alone would spend ε ≈ 1.
    """

    mechanism = "ddg-rdp"

    def __init__(
        self, *, l2_sensitivity: float, num_shares: int, dim: int, orders: Sequence[int] = DDG_ORDERS,
        subsampling: str = "general", use_shift_profile: bool = True,
    ) -> None:
        super().__init__()
        #: take the dominating Gaussian's exact profile where it applies (off: RDP alone, the fast
        #: bound a calibration's bisection steps with; not saved: it changes no recorded step)
        self.use_shift_profile = bool(use_shift_profile)
        if subsampling not in SUBSAMPLING_BOUNDS:
            raise ValueError(f"subsampling must be one of {SUBSAMPLING_BOUNDS}, got {subsampling!r}")
        self.subsampling = subsampling
        orders = tuple(int(order) for order in orders)
        if not orders or min(orders) < 2:
            raise ValueError("DDG orders must be integers >= 2")
        if not (isinstance(l2_sensitivity, (int, float)) and math.isfinite(l2_sensitivity)
                and l2_sensitivity > 0):
            raise ValueError(f"l2_sensitivity must be positive and finite, got {l2_sensitivity!r}")
        for name, value in (("num_shares", num_shares), ("dim", dim)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.orders: tuple[int, ...] = orders
        self.l2_sensitivity = float(l2_sensitivity)
        self.num_shares = int(num_shares)
        self.dim = int(dim)

    def share_sigma(self, noise_multiplier: float) -> float:
        """The integer-domain scale of one client's share for the sum's ``noise_multiplier``."""
        return noise_multiplier * self.l2_sensitivity / math.sqrt(self.num_shares)

    def step(self, *, noise_multiplier: float, sample_rate: float, steps: int = 1) -> None:
        if isinstance(noise_multiplier, (int, float)) and not isinstance(noise_multiplier, bool) \
                and noise_multiplier == 0:
            raise ValueError("the distributed discrete Gaussian needs noise_multiplier > 0")
        super().step(noise_multiplier=noise_multiplier, sample_rate=sample_rate, steps=steps)

    def rdp(self) -> np.ndarray:
        """The composed RDP curve at :attr:`orders`."""
        total = np.zeros(len(self.orders), dtype=np.float64)
        all_orders = np.arange(0, max(self.orders) + 1)
        for z, q, steps in self._grouped_history():
            if q == 0:
                continue
            base = np.full(len(all_orders), np.nan)
            base[2:] = ddg_rdp(all_orders[2:], sigma=self.share_sigma(z), l2_sensitivity=self.l2_sensitivity,
                               num_shares=self.num_shares, dim=self.dim)
            unsampled = base[list(self.orders)]
            if self.subsampling == "revealed":
                sampled = participation_revealed_rdp(self.orders, q, unsampled)
            else:
                amplify = (poisson_subsampled_rdp_symmetric if self.subsampling == "symmetric"
                           else poisson_subsampled_rdp_upper_bound)
                sampled = amplify(self.orders, q, base)
            total += steps * np.minimum(sampled, unsampled)
        return total

    def with_subsampling(self, subsampling: str) -> DistributedDiscreteGaussianAccountant:
        """The same geometry and history charged with another participation bound."""
        other = DistributedDiscreteGaussianAccountant(
            l2_sensitivity=self.l2_sensitivity, num_shares=self.num_shares, dim=self.dim, orders=self.orders,
            subsampling=subsampling, use_shift_profile=self.use_shift_profile)
        other.extend(self.history)
        return other

    def epsilon_participation_revealed(self, delta: float) -> float:
        """ε for an observer told who took part in every round (zero-out; no amplification by a
        hidden sample): the recorded rounds charged by :func:`participation_revealed_rdp`."""
        return self.with_subsampling("revealed").get_epsilon(delta)

    def _options(self) -> dict[str, Any]:
        options = {"orders": list(self.orders), "l2_sensitivity": self.l2_sensitivity,
                   "num_shares": self.num_shares, "dim": self.dim}
        if self.subsampling != "general":  # the user-level accountant's saved form is unchanged
            options["subsampling"] = self.subsampling
        return options

    def dominated_rounds(self) -> tuple[list[tuple[float, float, int]], float, bool] | None:
        """The history as rounds ``(z, q, steps)`` of the continuous Gaussian that dominates each
        DDG round (:mod:`.ddg_dominance`; ``z`` its noise multiplier), the total log-slack of that
        domination, and whether the sample is hidden (``"symmetric"`` with ``q < 1``: the
        subsampled Gaussian's PLD) rather than revealed or certain (the exact mixture).

        None when it does not apply: a hidden sample under ``"general"`` (server sampling, whose
        sampled users add their own share: no shift pair, docs/privacy.md "The share count"),
        shares too coarse for a negligible slack, or :attr:`use_shift_profile` off.
        """
        if not self.use_shift_profile:
            return None
        rounds: list[tuple[float, float, int]] = []
        slack = 0.0
        hidden = False
        for z, q, steps in self._grouped_history():
            if q == 0:
                continue
            if q < 1:
                if self.subsampling == "general":
                    return None
                hidden = hidden or self.subsampling == "symmetric"
            domination = dominating_gaussian(share_sigma=self.share_sigma(z), num_shares=self.num_shares,
                                             l2_sensitivity=self.l2_sensitivity, dim=self.dim)
            if domination is None:
                return None
            rounds.append((domination.noise_multiplier, q, steps))
            slack += steps * domination.log_slack
        return (rounds, slack, hidden) if slack <= MAX_TOTAL_SLACK else None

    def delta_curve(self, epsilons: Sequence[float] | np.ndarray) -> np.ndarray:
        """δ(ε) per ε: the smaller of the RDP conversion and, where it applies, the dominating
        Gaussian's exact profile (both are upper bounds on the mechanism's δ)."""
        orders = np.asarray(self.orders, dtype=np.float64)
        rdp = self.rdp()
        deltas = np.array([rdp_privacy_accountant.compute_delta(orders, rdp, float(e))[0] for e in epsilons])
        dominated = self.dominated_rounds()
        if dominated is not None:
            rounds, slack, hidden = dominated
            exact = shift_profile_delta(epsilons, rounds, hidden=hidden, total_slack=slack)
            if exact is not None:
                deltas = np.minimum(deltas, exact)
        return deltas

    def _compute_epsilon(self, grouped: Sequence[tuple[float, float, int]], delta: float) -> float:
        eps, _ = rdp_privacy_accountant.compute_epsilon(
            np.asarray(self.orders, dtype=np.float64), self.rdp(), delta
        )
        dominated = self.dominated_rounds()
        if dominated is not None:
            rounds, slack, hidden = dominated
            exact = shift_profile_epsilon(delta, rounds, hidden=hidden, total_slack=slack)
            if exact is not None:
                return float(min(eps, exact))
        return float(eps)
