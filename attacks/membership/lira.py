"""Likelihood-ratio attacks with shadow models: LiRA (Carlini et al. 2022) and
RMIA (Zarifzadeh et al. 2024, as in ML Privacy Meter).

Both fit on a :class:`~attacks.membership.base.ShadowStatistics` table, either
produced here by a user-supplied ``train_and_score`` callable or precomputed,
then score the target model's statistics on the same population samples.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from .._validation import RandomState, check_scores
from .base import ShadowStatistics, TrainAndScore, train_shadow_models

__all__ = ["RMIA", "LiRA"]

_MIN_STD = 1e-8


def _check_target(
    statistics: np.ndarray, indices: np.ndarray | None, n_samples: int
) -> tuple[np.ndarray, np.ndarray]:
    idx = np.arange(n_samples) if indices is None else np.asarray(indices, dtype=np.int64)
    if idx.ndim != 1 or (idx.size and (idx.min() < 0 or idx.max() >= n_samples)):
        raise ValueError(f"indices must be 1-D ids in [0, {n_samples})")
    return check_scores(statistics, idx.size, name="statistics"), idx


class _ShadowAttack:
    def __init__(
        self,
        train_and_score: TrainAndScore | None,
        n_shadow: int,
        inclusion_probability: float,
        random_state: RandomState,
    ):
        self.train_and_score = train_and_score
        self.n_shadow = n_shadow
        self.inclusion_probability = inclusion_probability
        self.random_state = random_state

    def fit(self, n_samples: int):
        """Train ``n_shadow`` shadow models on random subsets of ``n_samples`` samples."""
        if self.train_and_score is None:
            raise ValueError(
                "no train_and_score callable given; use fit_shadow with precomputed statistics"
            )
        shadow = train_shadow_models(
            self.train_and_score,
            n_samples,
            self.n_shadow,
            inclusion_probability=self.inclusion_probability,
            random_state=self.random_state,
        )
        return self.fit_shadow(shadow)

    def fit_shadow(self, shadow: ShadowStatistics):
        raise NotImplementedError


class LiRA(_ShadowAttack):
    """Likelihood-ratio attack (Carlini et al. 2022), online or offline.

    Per sample, fit Gaussians to the shadow statistics of models that trained
    on it (IN) and that did not (OUT).

    * online: score = log N(s; μ_in, σ_in) − log N(s; μ_out, σ_out)
    * offline (needs only OUT models): score = (s − μ_out) / σ_out, the
      one-sided test (ranking-equivalent to the Gaussian CDF, without its
      saturation at the far tail, which is exactly where low-FPR numbers live)

    ``fixed_variance=True`` uses one pooled σ for all samples, which Carlini et
    al. recommend below ~64 shadow models. Samples with too few IN/OUT shadows
    fall back to the pooled σ and (for μ_in) to μ_out plus the average IN−OUT gap.

    Learned attributes: ``shadow_``, ``mean_in_``, ``mean_out_``, ``std_in_``, ``std_out_``.
    """

    def __init__(
        self,
        train_and_score: TrainAndScore | None = None,
        *,
        n_shadow: int = 16,
        online: bool = True,
        fixed_variance: bool = False,
        inclusion_probability: float = 0.5,
        random_state: RandomState = None,
    ):
        super().__init__(train_and_score, n_shadow, inclusion_probability, random_state)
        self.online = online
        self.fixed_variance = fixed_variance

    def fit_shadow(self, shadow: ShadowStatistics) -> LiRA:
        s, member = shadow.statistics, shadow.membership
        n_in, n_out = member.sum(axis=0), (~member).sum(axis=0)
        if not np.any(n_out):
            raise ValueError("no sample has an OUT shadow model")
        if self.online and not np.any(n_in):
            raise ValueError("online LiRA needs IN shadow models")
        with np.errstate(invalid="ignore", divide="ignore"):
            mean_in = np.where(member, s, 0).sum(0) / n_in
            mean_out = np.where(~member, s, 0).sum(0) / n_out
        mean_out = np.where(n_out > 0, mean_out, np.nanmean(mean_out))
        gap = (
            np.nanmean(np.where((n_in > 0) & (n_out > 0), mean_in - mean_out, np.nan))
            if np.any(n_in)
            else 0.0
        )
        mean_in = np.where(n_in > 0, mean_in, mean_out + gap)
        centred = s - np.where(member, mean_in, mean_out)
        pooled_in = np.sqrt(np.mean(centred[member] ** 2)) if member.any() else 1.0
        pooled_out = np.sqrt(np.mean(centred[~member] ** 2))
        if self.fixed_variance:
            std_in, std_out = np.full(s.shape[1], pooled_in), np.full(s.shape[1], pooled_out)
        else:
            with np.errstate(invalid="ignore", divide="ignore"):
                std_in = np.sqrt(np.where(member, centred**2, 0).sum(0) / (n_in - 1))
                std_out = np.sqrt(np.where(~member, centred**2, 0).sum(0) / (n_out - 1))
            std_in = np.where(n_in > 1, std_in, pooled_in)
            std_out = np.where(n_out > 1, std_out, pooled_out)
        self.shadow_ = shadow
        self.mean_in_, self.mean_out_ = mean_in, mean_out
        self.std_in_ = np.maximum(std_in, _MIN_STD)
        self.std_out_ = np.maximum(std_out, _MIN_STD)
        return self

    def score(self, statistics: np.ndarray, indices: np.ndarray | None = None) -> np.ndarray:
        """Membership scores for the target model's ``statistics`` on population ``indices``."""
        s, idx = _check_target(statistics, indices, self.mean_out_.size)
        if not self.online:
            return (s - self.mean_out_[idx]) / self.std_out_[idx]
        return stats.norm.logpdf(s, self.mean_in_[idx], self.std_in_[idx]) - stats.norm.logpdf(
            s, self.mean_out_[idx], self.std_out_[idx]
        )


class RMIA(_ShadowAttack):
    """Robust membership inference (Zarifzadeh et al. 2024).

    Statistics here must be *likelihoods* ``p(x | θ)`` in (0, 1] (the
    probability of the true label, or ``exp(-loss)``). For each target sample
    x, ``p(x) = mean over reference models of p(x | θ_ref)``; offline (only
    OUT references) ``p(x) = ½((1 + a)·p_out(x) + (1 − a))``, where p_out
    averages the reference models that did not train on x. The score is the
    fraction of population samples z (non-members of the target, given as
    ``reference_indices``) that x dominates:
    ``(p(x|θ) / p(x)) / (p(z|θ) / p(z)) ≥ gamma``.

    Learned attributes: ``shadow_``, ``marginal_`` (p(x) per population sample).
    """

    def __init__(
        self,
        train_and_score: TrainAndScore | None = None,
        *,
        n_shadow: int = 4,
        online: bool = False,
        offline_a: float = 0.3,
        gamma: float = 1.0,
        inclusion_probability: float = 0.5,
        random_state: RandomState = None,
    ):
        super().__init__(train_and_score, n_shadow, inclusion_probability, random_state)
        self.online = online
        self.offline_a = offline_a
        self.gamma = gamma

    def fit_shadow(self, shadow: ShadowStatistics) -> RMIA:
        s = shadow.statistics
        if np.any(s <= 0) or np.any(s > 1):
            raise ValueError("RMIA needs likelihoods in (0, 1]")
        if not 0.0 <= self.offline_a <= 1.0 or self.gamma <= 0:
            raise ValueError("need 0 <= offline_a <= 1 and gamma > 0")
        if self.online:
            marginal = s.mean(axis=0)
        else:
            out = ~shadow.membership
            n_out = out.sum(axis=0)
            with np.errstate(invalid="ignore", divide="ignore"):
                p_out = np.where(out, s, 0).sum(0) / n_out
            # A sample every reference model trained on has no OUT estimate; the
            # mean over all reference models is the closest stand-in.
            p_out = np.where(n_out > 0, p_out, s.mean(axis=0))
            marginal = 0.5 * ((1 + self.offline_a) * p_out + (1 - self.offline_a))
        self.shadow_ = shadow
        self.marginal_ = marginal
        return self

    def score(
        self,
        statistics: np.ndarray,
        indices: np.ndarray | None = None,
        *,
        reference_statistics: np.ndarray | None = None,
        reference_indices: np.ndarray | None = None,
    ) -> np.ndarray:
        """Scores of target likelihoods at ``indices``.

        The z-population (``reference_statistics`` at ``reference_indices``, the
        target model's likelihoods on known non-members) defaults to the
        targets themselves.
        """
        s, idx = _check_target(statistics, indices, self.marginal_.size)
        if reference_statistics is None:
            z_stats, z_idx = s, idx
        else:
            z_stats, z_idx = _check_target(
                reference_statistics, reference_indices, self.marginal_.size
            )
        if np.any(s <= 0) or np.any(z_stats <= 0):
            raise ValueError("RMIA needs positive likelihoods")
        log_ratio_x = np.log(s) - np.log(self.marginal_[idx])
        log_ratio_z = np.sort(np.log(z_stats) - np.log(self.marginal_[z_idx]))
        dominated = np.searchsorted(log_ratio_z, log_ratio_x - np.log(self.gamma), side="right")
        return dominated / log_ratio_z.size
