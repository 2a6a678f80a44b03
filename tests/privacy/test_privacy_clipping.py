"""Clipping bounds every update by C, adaptive clipping tracks its quantile, central noise has std z*C."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import stats

from secure_fedrec.privacy.clipping import (
    AdaptiveClipNorm,
    NonFiniteUpdateError,
    clip_updates_l2,
    effective_update_noise_multiplier,
)
from secure_fedrec.privacy.noise import add_gaussian_noise


def _row_norms(matrix) -> np.ndarray:
    dense = matrix.toarray() if sp.issparse(matrix) else np.asarray(matrix)
    return np.linalg.norm(dense, axis=1)


@settings(max_examples=60, deadline=None)
@given(
    updates=arrays(
        np.float64,
        st.tuples(st.integers(1, 8), st.integers(1, 30)),
        elements=st.floats(-1e6, 1e6, allow_nan=False, width=64),
    ),
    clip_norm=st.floats(1e-3, 1e3),
    sparse=st.booleans(),
)
def test_no_update_above_clip_norm_reaches_aggregation(updates, clip_norm, sparse):
    source = sp.csr_array(updates) if sparse else updates
    result = clip_updates_l2(source, clip_norm)
    norms_after = _row_norms(result.updates)
    assert np.all(norms_after <= clip_norm)
    below = result.norms <= clip_norm
    original = _row_norms(source)
    assert np.array_equal(norms_after[below], original[below])
    assert np.array_equal(result.clipped, ~below)
    # Clipped rows keep their direction and land (essentially) on the sphere.
    if np.any(~below):
        assert np.allclose(norms_after[~below], clip_norm, rtol=1e-9)


def test_sparse_and_dense_agree_and_input_is_untouched():
    generator = np.random.default_rng(0)
    dense = generator.normal(size=(20, 50)) * generator.uniform(0.1, 3, size=(20, 1))
    dense[dense < 0.5] = 0.0
    snapshot = dense.copy()
    sparse = sp.csr_array(dense)
    dense_result = clip_updates_l2(dense, 1.0)
    sparse_result = clip_updates_l2(sparse, 1.0)
    assert isinstance(sparse_result.updates, sp.csr_array)
    assert np.allclose(sparse_result.updates.toarray(), dense_result.updates)
    assert np.array_equal(dense, snapshot)
    assert dense_result.fraction_clipped == pytest.approx(np.mean(np.linalg.norm(dense, axis=1) > 1.0))
    assert isinstance(clip_updates_l2(sp.csr_matrix(dense), 1.0).updates, sp.csr_matrix)


def test_non_finite_rows_are_reported():
    updates = np.ones((4, 3))
    updates[1, 2] = np.nan
    updates[3, 0] = np.inf
    with pytest.raises(NonFiniteUpdateError) as caught:
        clip_updates_l2(updates, 1.0)
    assert caught.value.rows.tolist() == [1, 3]
    with pytest.raises(NonFiniteUpdateError) as caught:
        clip_updates_l2(sp.csr_array(updates), 1.0)
    assert caught.value.rows.tolist() == [1, 3]


@pytest.mark.parametrize("clip_norm", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_clip_norm(clip_norm):
    with pytest.raises(ValueError):
        clip_updates_l2(np.ones((2, 2)), clip_norm)


def test_bad_shape():
    with pytest.raises(ValueError):
        clip_updates_l2(np.ones(3), 1.0)


def test_effective_noise_multiplier():
    z, sigma_b = 1.0, 10.0
    z_delta = effective_update_noise_multiplier(z, sigma_b)
    assert z_delta**-2 + (2 * sigma_b) ** -2 == pytest.approx(z**-2)
    assert z_delta > z
    with pytest.raises(ValueError):
        effective_update_noise_multiplier(2.0, 0.9)


def test_adaptive_clip_norm_tracks_the_target_quantile():
    generator = np.random.default_rng(1)
    clip = AdaptiveClipNorm(clip_norm=0.1, target_quantile=0.7, learning_rate=0.2)
    for _ in range(300):
        norms = generator.lognormal(mean=0.0, sigma=0.5, size=100)
        clip.update(float(np.sum(norms <= clip.clip_norm)), 100, already_noised=True)
    true_quantile = math.exp(0.5 * stats.norm.ppf(0.7))
    assert clip.clip_norm == pytest.approx(true_quantile, rel=0.1)


def test_adaptive_clip_norm_validates():
    with pytest.raises(ValueError):
        AdaptiveClipNorm(clip_norm=1.0, target_quantile=1.5)
    with pytest.raises(ValueError):
        AdaptiveClipNorm(clip_norm=1.0).update(float("nan"), 10)


def test_central_noise_std_matches_configuration(seeded_urandom):
    seeded_urandom(17)
    n, z, clip_norm = 100_000, 1.3, 0.7
    noise = add_gaussian_noise(np.zeros(n), noise_multiplier=z, clip_norm=clip_norm)
    sigma = z * clip_norm
    statistic = (n - 1) * noise.var(ddof=1) / sigma**2
    p_variance = 2 * min(stats.chi2.cdf(statistic, n - 1), stats.chi2.sf(statistic, n - 1))
    assert p_variance > 1e-3
    assert stats.kstest(noise / sigma, "norm").pvalue > 1e-3
    assert abs(noise.mean()) < 5 * sigma / math.sqrt(n)
