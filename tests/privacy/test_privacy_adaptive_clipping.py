"""Adaptive clipping (Andrew et al. 2021): the clip norm tracks a quantile, the accounting stays z."""

from __future__ import annotations

import math

import numpy as np
import pytest
from dp_accounting import dp_event
from dp_accounting.rdp import rdp_privacy_accountant

from secure_fedrec.aggregation import (
    AdaptiveClip,
    AggregationPipeline,
    CentralGaussianNoise,
    FloatEncoding,
)
from secure_fedrec.config import ConfigError, load_config
from secure_fedrec.plans import Population, build_privacy_plan
from secure_fedrec.privacy.adaptive_clipping import (
    augmented_l2_bound,
    bit_scale_for_l2_bound,
)
from secure_fedrec.privacy.clipping import (
    effective_update_noise_multiplier as adjusted_noise_multiplier,
)

CLIENTS, DIM = 200, 8


def _rows(rng: np.random.Generator, norms: np.ndarray) -> np.ndarray:
    directions = rng.normal(size=(len(norms), DIM))
    return directions / np.linalg.norm(directions, axis=1, keepdims=True) * norms[:, None]


def _adaptive(clip: float, quantile: float, bit_scale: float, noise: float | None) -> AggregationPipeline:
    layers = (AdaptiveClip(initial_clip_norm=clip, target_quantile=quantile, learning_rate=0.2,
                           bit_scale=bit_scale),)
    if noise is not None:
        layers += (CentralGaussianNoise(stddev=noise),)
    return AggregationPipeline(layers, FloatEncoding())


@pytest.mark.parametrize("quantile", [0.3, 0.5, 0.8])
def test_clip_norm_converges_to_the_target_quantile_of_update_norms(seeded_urandom, run_pipeline, quantile):
    seeded_urandom(11)
    rng = np.random.default_rng(5)
    noise_multiplier, bit_noise = 1.0, CLIENTS / 20
    z_delta = adjusted_noise_multiplier(noise_multiplier, bit_noise)
    pipeline = _adaptive(0.01, quantile, z_delta / bit_noise, z_delta)
    states = pipeline.initial_states()
    history = []
    for round_index in range(300):
        norms = rng.lognormal(mean=0.0, sigma=0.5, size=CLIENTS)  # the stream: fixed distribution
        _, states, _ = run_pipeline(pipeline, _rows(rng, norms), np.ones(CLIENTS), states=states,
                                    expected=CLIENTS, round_index=round_index)
        history.append(states[0].clip_norm)
    true_quantile = math.exp(0.5 * _normal_ppf(quantile))  # quantile of lognormal(0, 0.5)
    settled = np.asarray(history[-100:])
    assert history[0] < 0.5 * true_quantile  # it started far below and had to move
    assert np.median(settled) == pytest.approx(true_quantile, rel=0.1)
    # and the fraction of norms under the settled clip is the target quantile
    fraction = np.mean(rng.lognormal(0.0, 0.5, size=100_000) <= np.median(settled))
    assert fraction == pytest.approx(quantile, abs=0.05)


def _normal_ppf(q: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(q))


def test_update_part_is_clipped_and_rescaled_and_bit_noise_is_sigma_b(seeded_urandom, run_pipeline):
    seeded_urandom(3)
    rng = np.random.default_rng(0)
    clip, bit_noise = 2.0, 4.0
    norms = np.array([0.5, 1.0, 3.0, 10.0])
    rows = _rows(rng, norms)
    out, _, measurements = run_pipeline(_adaptive(clip, 0.5, 0.7, None), rows, np.ones(4), expected=4.0)
    expected = sum(rows[j] * min(1.0, clip / norms[j]) for j in range(4))
    np.testing.assert_allclose(out.total, expected, rtol=1e-9)
    # no noise: the estimate is the exact fraction of unclipped updates
    assert measurements["unclipped_fraction_estimate"] == pytest.approx(0.5)
    # with noise z_Δ on every coordinate, the bit estimate's noise is σ_b / m
    z_delta = adjusted_noise_multiplier(1.0, bit_noise)
    noisy = _adaptive(clip, 0.5, z_delta / bit_noise, z_delta)
    estimates = []
    for round_index in range(2000):
        _, _, measurements = run_pipeline(noisy, rows, np.ones(4), expected=4.0, round_index=round_index)
        estimates.append(measurements["unclipped_fraction_estimate"])
    std = np.std(estimates, ddof=1)
    tolerance = 4 * (bit_noise / 4) / math.sqrt(2 * len(estimates))  # 4 standard errors of a std
    assert abs(std - bit_noise / 4) < tolerance
    assert np.mean(estimates) == pytest.approx(0.5, abs=4 * (bit_noise / 4) / math.sqrt(len(estimates)))


def test_adjusted_multiplier_composes_back_to_z():
    z, sigma_b = 0.9, 3.0
    z_delta = adjusted_noise_multiplier(z, sigma_b)
    assert z_delta > z
    assert (z_delta ** -2 + (2 * sigma_b) ** -2) ** -0.5 == pytest.approx(z, rel=1e-12)
    # the augmented vector view: sensitivity sqrt(1 + k²/4) with k = z_Δ/σ_b, noise z_Δ
    k = z_delta / sigma_b
    assert z_delta / math.sqrt(1 + k * k / 4) == pytest.approx(z, rel=1e-12)
    bound = augmented_l2_bound(z, sigma_b)
    assert bit_scale_for_l2_bound(bound) == pytest.approx(z * bound / sigma_b, rel=1e-12)
    with pytest.raises(ValueError):
        adjusted_noise_multiplier(z, z / 2)


BASE = {"aggregation.protocol": "plaintext", "data.synthetic.n_users": 200, "data.synthetic.n_items": 50,
        "training.rounds": 4, "training.clients_per_round": 40, "model.dim": 4,
        "training.local_epochs": 1, "training.sampling": "poisson", "privacy.unit": "user",
        "privacy.clipping": "adaptive", "privacy.clip_norm": 0.05, "privacy.noise": "central"}


def _session(**extra):
    config = load_config(None, {**BASE, **extra})
    return build_privacy_plan(config, Population(n_users=200, expected_clients=40.0, dim=30))


def test_central_accounting_is_charged_z_while_the_update_noise_uses_z_delta():
    session = _session(**{"privacy.target_epsilon": 4.0, "privacy.delta": 1e-5, "privacy.accountant": "rdp"})
    z = session.noise_multiplier
    sigma_b = 40.0 / 20
    assert session.adaptive.bit_noise_std == pytest.approx(sigma_b)
    assert session.adaptive.update_noise_multiplier == pytest.approx((z ** -2 - (2 * sigma_b) ** -2) ** -0.5)
    for _ in range(4):
        session.after_round()
    reference = rdp_privacy_accountant.RdpAccountant()
    event = dp_event.PoissonSampledDpEvent(0.2, dp_event.GaussianDpEvent(z))
    reference.compose(event, 4)
    assert session.accountant.get_epsilon(1e-5) == pytest.approx(reference.get_epsilon(1e-5), rel=0.01)
    assert session.accountant.get_epsilon(1e-5) <= 4.0 * 1.001
    # had the accountant been charged the larger z_Δ, ε would be smaller: the test can tell them apart
    looser = rdp_privacy_accountant.RdpAccountant()
    looser.compose(dp_event.PoissonSampledDpEvent(0.2, dp_event.GaussianDpEvent(
        session.adaptive.update_noise_multiplier)), 4)
    assert looser.get_epsilon(1e-5) < 0.99 * reference.get_epsilon(1e-5)


def test_adaptive_clipping_config_errors():
    with pytest.raises(ConfigError, match="privacy.clipping"):
        load_config(None, {"privacy.unit": "record", "privacy.clipping": "adaptive"})
    with pytest.raises(ConfigError, match="clip_count_stddev"):
        _session(**{"privacy.noise_multiplier": 1.0, "privacy.clip_count_stddev": 0.3})


def _run(**extra):
    from secure_fedrec.engines.inprocess import FederatedTrainer
    from secure_fedrec.runner import load_data, make_split

    config = load_config(None, {**BASE, "privacy.clip_learning_rate": 0.5, **extra})
    trainer = FederatedTrainer(config, make_split(config, load_data(config)))
    history = trainer.run()
    clips = [m.measurements["clip_norm"] for m in history]
    assert len(history) == 4 and len(set(clips)) == 4  # C moved every round
    assert trainer.privacy.summary()["clip_norm_final"] == history[-1].measurements["clip_norm_next"]
    assert np.all(np.isfinite(trainer.params))
    return trainer, history


def test_adaptive_clipping_runs_end_to_end_with_central_noise():
    trainer, history = _run(**{"privacy.noise_multiplier": 1.0})
    assert history[-1].measurements["noise_stddev"] == pytest.approx(
        trainer.privacy.adaptive.update_noise_multiplier * history[-1].measurements["clip_norm"])


def test_adaptive_clipping_under_distributed_noise_and_masking():
    trainer, history = _run(**{"privacy.noise": "distributed", "privacy.target_epsilon": 8.0,
                               "aggregation.protocol": "secagg+"})
    session = trainer.privacy
    plan = session.ddg_plan
    assert session.mechanism_dim == trainer.layout.size + 1
    # the augmented vector (unit-scale update, bit ±k/2) has norm <= the plan's clip bound
    adaptive = session.adaptive
    assert math.sqrt(1 + adaptive.bit_scale ** 2 / 4) <= plan.l2_sensitivity * plan.gamma * (1 + 1e-9)
    assert adaptive.bit_noise_std == pytest.approx(plan.model_unit_noise_std / adaptive.bit_scale)
    assert adaptive.bit_noise_std == pytest.approx(session.expected_clients / 20, rel=0.05)
    assert plan.epsilon <= 8.0 * 1.001
    assert history[-1].measurements["epsilon"] <= 8.0 * 1.001
