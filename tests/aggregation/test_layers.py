"""The aggregation layers, each split into a client half and a server half, composed into pipelines."""

import numpy as np
import pytest

from secure_fedrec.aggregation import (
    AdaptiveClip,
    AggregationPipeline,
    CentralGaussianNoise,
    ClientContext,
    Clip,
    FloatEncoding,
    Mean,
    QuantizedEncoding,
)
from secure_fedrec.rounds.client import ClientPlan, RoundBroadcast
from secure_fedrec.training.methods import LocalEpochs


def _dense(seed=0, k=6, dim=50):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(k, dim)) * (rng.random((k, dim)) < 0.2), rng.integers(1, 200, k)


def test_weighted_mean_float_sum_matches_numpy(run_pipeline):
    dense, examples = _dense()
    pipeline = AggregationPipeline((Mean(weighting="examples", weight_cap=100.0),), FloatEncoding())
    aggregate, _, measurements = run_pipeline(pipeline, dense, examples)
    weights = np.minimum(examples, 100) / 100
    # each client's weight rides beside its row: the mean divides by the total weight
    np.testing.assert_allclose(aggregate.total, dense.sum(0) / weights.sum())
    assert measurements["weight_total"] == pytest.approx(weights.sum())


def test_dropouts_are_excluded(run_pipeline):
    dense, examples = _dense()
    pipeline = AggregationPipeline((Mean(weighting="examples"),), FloatEncoding())
    aggregate, _, _ = run_pipeline(pipeline, dense, examples, dropouts={11: "upload"})
    keep = np.arange(6) != 1
    assert aggregate.contributors == (10, 12, 13, 14, 15)
    weights = np.minimum(examples, 100) / 100
    np.testing.assert_allclose(aggregate.total, dense[keep].sum(0) / weights[keep].sum())


def test_quantized_sum_equals_float_sum_within_quantization(run_pipeline):
    dense, examples = _dense()
    pipeline = AggregationPipeline((Mean(weighting="examples"),),
                                   QuantizedEncoding(coordinate_clip=5.0, bits=40))
    aggregate, _, measurements = run_pipeline(pipeline, dense, examples, ring_bits=40)
    step = measurements["quantization_step"]
    weights = np.minimum(examples, 100) / 100
    assert abs(aggregate.weight_total - weights.sum()) <= 6 * step
    np.testing.assert_allclose(aggregate.total * aggregate.weight_total, np.clip(dense, -5, 5).sum(0),
                               atol=6 * step + 1e-9 * np.abs(dense).sum())


def test_clip_bounds_every_row_on_the_client(run_pipeline, client_updates):
    dense, examples = _dense()
    clip = Clip(clip_norm=0.5)
    ctx = ClientContext(round_index=0, n_clients=6, expected_clients=6.0)
    for update in client_updates(dense, examples).values():
        clipped, measurements = clip.client(update, None, ctx)
        assert clipped.norm() <= 0.5 + 1e-12
        assert measurements["clipped"] == float(update.norm() > 0.5)
    pipeline = AggregationPipeline((Mean(denominator="expected"), clip), FloatEncoding())
    _, _, measurements = run_pipeline(pipeline, dense, examples)
    assert measurements["fraction_clipped"] == np.mean(np.linalg.norm(dense, axis=1) > 0.5)
    assert measurements["update_norm_median"] == pytest.approx(np.median(np.linalg.norm(dense, axis=1)))


def test_central_noise_has_configured_std(run_pipeline):
    k, dim = 2, 200_000
    pipeline = AggregationPipeline((Mean(denominator="expected"), CentralGaussianNoise(stddev=0.7)),
                                   FloatEncoding())
    aggregate, _, measurements = run_pipeline(pipeline, np.zeros((k, dim)), np.ones(k), expected=1.0)
    # sample std of 2e5 normals has relative std ≈ 1/sqrt(2*2e5) ≈ 0.0016
    assert abs(aggregate.total.std() / 0.7 - 1) < 0.01
    assert abs(aggregate.total.mean()) < 5 * 0.7 / np.sqrt(dim)
    assert measurements["noise_stddev"] == 0.7


def test_adaptive_clip_state_moves_on_the_server_and_reaches_the_clients_through_the_broadcast(run_pipeline):
    dense, examples = _dense(k=8)
    norms = np.linalg.norm(dense, axis=1)
    layer = AdaptiveClip(initial_clip_norm=float(np.median(norms)) / 4, target_quantile=0.5,
                         learning_rate=0.2, bit_scale=0.5)
    pipeline = AggregationPipeline((Mean(denominator="expected"), layer), FloatEncoding())
    assert pipeline.payload_length(50) == 51  # the bit rides as one more coordinate
    _, states, measurements = run_pipeline(pipeline, dense, examples)
    (_, state), = [s for s in enumerate(states) if s[1] is not None]
    # almost every update is above C/4 of the median: the clip norm grows
    assert state.clip_norm > layer.initial_clip_norm
    assert measurements["clip_norm"] == layer.initial_clip_norm
    assert measurements["clip_norm_next"] == state.clip_norm
    assert measurements["unclipped_fraction_estimate"] == pytest.approx(np.mean(norms <= layer.initial_clip_norm))


def test_a_pipeline_is_the_same_value_after_its_wire_round_trip():
    from secure_fedrec.aggregation import (
        AdaptiveClipState,
        DistributedDiscreteGaussianEncoding,
    )
    from secure_fedrec.rounds.wire import (
        broadcast_from_json,
        broadcast_to_json,
        plan_from_json,
        plan_to_json,
    )
    from secure_fedrec.training.local import LocalTraining
    from secure_fedrec.training.methods import DpSgd

    pipeline = AggregationPipeline(
        (Mean(denominator="expected"), AdaptiveClip(0.1, 0.5, 0.2, 0.3), CentralGaussianNoise(0.25)),
        DistributedDiscreteGaussianEncoding(gamma=1e-3, l2_sensitivity=12.5, share_sigma=3.25, bits=32,
                                            noise_stddev=0.01, wrap_probability=1e-12))
    plan = ClientPlan(training=DpSgd(local=LocalTraining(epochs=3), noise_multiplier=1.1, clip_norm=0.5,
                                     batch_size=16), pipeline=pipeline, report_loss=False)
    assert plan_from_json(plan_to_json(plan)) == plan
    broadcast = RoundBroadcast(round_index=3, n_clients=7, expected_clients=6.5,
                               layer_states=(None, AdaptiveClipState(0.123456789012345), None))
    assert broadcast_from_json(broadcast_to_json(broadcast)) == broadcast
    with pytest.raises(ValueError):
        plan_from_json(plan_to_json(plan).replace('"clip_norm": 0.5', '"clip_norm": 0.5, "extra": 1'))


def _valid_plan_json() -> str:
    from secure_fedrec.rounds.wire import plan_to_json

    pipeline = AggregationPipeline((Mean(), Clip(clip_norm=0.5)), QuantizedEncoding(coordinate_clip=1.0))
    return plan_to_json(ClientPlan(training=LocalEpochs(), pipeline=pipeline))


@pytest.mark.parametrize("change", [
    lambda t: "", lambda t: "[]", lambda t: "{}", lambda t: t.replace('"layers": [', '"layers": 3, "x": ['),
    lambda t: t.replace('"clip_norm": 0.5', '"clip_norm": -1.0'),
    lambda t: t.replace('"clip_norm": 0.5', '"clip_norm": NaN'),
    lambda t: t.replace('"clip_norm": 0.5', '"clip_norm": "0.5"'),
    lambda t: t.replace('"bits": 32', '"bits": 99'),
    lambda t: t.replace('"kind": "clip"', '"kind": "pickle"'),
    lambda t: t.replace('"epochs": 5', '"epochs": 5, "extra": 1'),
])
def test_a_malformed_client_plan_is_a_value_error(change):
    from secure_fedrec.rounds.wire import plan_from_json

    valid = _valid_plan_json()
    assert plan_from_json(valid).pipeline.layers[1] == Clip(clip_norm=0.5)
    text = change(valid)
    assert text != valid
    with pytest.raises(ValueError):
        plan_from_json(text)


@pytest.mark.parametrize("text", ["null", ('{"round_index": -1, "n_clients": 3, "expected_clients": 2.0, '
                                  '"layer_states": []}'),
                                  '{"round_index": 0, "n_clients": 3, "expected_clients": 0, "layer_states": []}',
                                  ('{"round_index": 0, "n_clients": 3, "expected_clients": 2.0, '
                                  '"layer_states": [{"kind": "adaptive_clip", "clip_norm": 0}]}')])
def test_a_malformed_broadcast_is_a_value_error(text):
    from secure_fedrec.rounds.wire import broadcast_from_json

    with pytest.raises(ValueError):
        broadcast_from_json(text)
