"""The compact upload (public subset, rotation, 16-bit ring): round trip, privacy geometry, bytes, engine runs."""

from __future__ import annotations

import numpy as np
import pytest

from protocols import PlaintextSum, prg
from protocols.masking import SecAggPlus
from secure_fedrec.aggregation import (
    ClientContext,
    ClientUpdate,
    CompactRotatedEncoding,
    ServerContext,
    SumOutcome,
    compact_length,
)
from secure_fedrec.config import ConfigError, load_config
from secure_fedrec.engines.inprocess import FederatedTrainer
from secure_fedrec.privacy.discrete_gaussian import rotated_wrap_probability
from secure_fedrec.runner import load_data, make_split


def _encoding(**overrides) -> CompactRotatedEncoding:
    fields = {"keep_fraction": 0.5, "salt": 7, "dense_length": 100, "gamma": 1e-4, "l2_sensitivity": 1e4 + 20,
              "share_sigma": 0.0, "bits": 16}
    return CompactRotatedEncoding(**{**fields, **overrides})


def _sum(encoding, vectors, round_index=3, ring_bits=16):
    ctx = ClientContext(round_index=round_index, n_clients=len(vectors), expected_clients=len(vectors))
    payloads = {i: encoding.client(ClientUpdate.from_dense(v), ctx)[0] for i, v in enumerate(vectors)}
    result = PlaintextSum().run_round(payloads, bits=ring_bits)
    outcome = SumOutcome(total=result.total, contributors=tuple(result.contributors))
    server = ServerContext(round_index=round_index, n_clients=len(vectors), expected_clients=len(vectors))
    return encoding.server(outcome, server)[0], payloads


def test_round_trip_recovers_the_sum_on_the_kept_coordinates_and_zero_elsewhere():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(5, 100))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)  # clipped to norm 1
    encoding = _encoding()
    aggregate, payloads = _sum(encoding, vectors)
    kept, _ = encoding._public(3, 100)
    assert len(kept) == encoding.payload_length(100) == 50
    assert all(p.size == 50 and int(p.max()) < 2**16 for p in payloads.values())
    expected = np.zeros(100)
    expected[kept] = vectors.sum(axis=0)[kept]
    # unbiased rounding at step 1e-4: the error is a few steps per coordinate
    assert np.max(np.abs(aggregate.total - expected)) < 5 * 1e-4 * np.sqrt(5)
    assert np.all(aggregate.total[np.setdiff1d(np.arange(100), kept)] == 0)


def test_subset_and_signs_are_public_the_same_for_every_party_and_move_each_round():
    a, b = _encoding(), _encoding()
    kept3, signs3 = a._public(3, 100)
    kept3b, signs3b = b._public(3, 100)
    assert np.array_equal(kept3, kept3b) and np.array_equal(signs3, signs3b)
    assert not np.array_equal(kept3, a._public(4, 100)[0])


def test_rotation_keeps_the_norm_so_the_sensitivity_is_unchanged():
    rng = np.random.default_rng(1)
    x = rng.normal(size=100)
    encoding = _encoding()
    kept, _ = encoding._public(0, 100)
    assert np.linalg.norm(encoding.rotate(x, 0)) == pytest.approx(np.linalg.norm(x[kept]))
    assert np.linalg.norm(encoding.rotate(x, 0)) <= np.linalg.norm(x) + 1e-12


def test_dense_tail_is_always_kept():
    encoding = _encoding(dense_tail=1, dense_length=101)
    for round_index in range(5):
        kept, _ = encoding._public(round_index, 101)
        assert kept[-1] == 100
    assert compact_length(101, 0.5, 1) == 51


def test_modular_clipping_wraps_a_coordinate_instead_of_failing():
    """A sum beyond the ring wraps (a utility loss the planner makes rare), it never raises."""
    encoding = _encoding(gamma=1.0, l2_sensitivity=200.0, bits=8, keep_fraction=1.0, dense_length=4)
    aggregate, _ = _sum(encoding, [np.array([100.0, 0, 0, 0])] * 3, ring_bits=8)
    assert np.all(np.isfinite(aggregate.total))


def test_rotated_wrap_bound_falls_with_bits_and_rises_with_clients():
    common = {"dim": 1000, "sum_l2_bound": 5e3, "share_sigma": 10.0, "max_shares": 100}
    assert rotated_wrap_probability(bits=16, **common) < rotated_wrap_probability(bits=12, **common)
    assert rotated_wrap_probability(bits=16, **common) < 1e-9
    more = {**common, "max_shares": 400, "sum_l2_bound": 2e4}
    assert rotated_wrap_probability(bits=16, **more) > rotated_wrap_probability(bits=16, **common)


@pytest.mark.parametrize("bits,width", [(8, 1), (16, 2), (17, 4), (32, 4), (33, 8)])
def test_masked_words_travel_in_the_narrowest_word(bits, width):
    assert prg.wire_dtype(bits).itemsize == width


def test_sixteen_bit_secaggplus_sends_two_bytes_per_coordinate_and_sums_exactly():
    rng = np.random.default_rng(2)
    m = 4000
    inputs = {c: rng.integers(0, 2**16, size=m, dtype=np.uint64) for c in range(6)}
    result16 = SecAggPlus(degree=5, threshold=4).run_round(inputs, bits=16)
    result32 = SecAggPlus(degree=5, threshold=4).run_round(inputs, bits=32)
    expected = sum(v.astype(np.uint64) for v in inputs.values())
    assert np.array_equal(np.asarray(result16.total, dtype=np.uint64), expected % 2**16)
    saved = np.mean(list(result32.bytes_sent.values())) - np.mean(list(result16.bytes_sent.values()))
    assert saved == pytest.approx(2 * m, abs=16)  # 2 bytes per coordinate, the rest unchanged


TINY = {"data.synthetic.n_users": 300, "data.synthetic.n_items": 40, "data.synthetic.mean_ratings_per_user": 15.0, "training.rounds": 2,
        "training.clients_per_round": 0.2, "model.dim": 4, "training.local_epochs": 1,
        "aggregation.encoding": "compact"}


def _trainer(**extra):
    config = load_config(None, {**TINY, **extra})
    return FederatedTrainer(config, make_split(config, load_data(config)))


def test_compact_run_on_the_inprocess_engine_halves_the_vector_and_counts_bytes_both_ways():
    trainer = _trainer()
    history = trainer.run()
    dim = len(trainer.params)
    last = history[-1].measurements
    assert trainer.privacy.summary()["encoding"] == "compact"
    assert trainer.privacy.noised_dim == compact_length(dim, 0.46)
    assert trainer.privacy.accountant.dim == trainer.privacy.noised_dim
    plain = compact_length(dim, 0.46) * 2  # 16-bit words
    assert last["communication_expansion"] == pytest.approx(last["bytes_sent_per_client"] / plain)
    assert last["bytes_up_per_client"] == last["bytes_sent_per_client"]
    assert last["model_bytes_per_client"] == 4 * dim  # float32, what a client's model holds
    assert last["bytes_down_per_client"] == 4 * dim + last["bytes_received_per_client"]
    assert 0 < history[-1].measurements["epsilon"] <= 8.0 * (1 + 1e-9)
    assert np.isfinite(history[-1].evaluation["rmse"])


def test_compact_upload_is_under_a_quarter_of_the_dense_vector_bytes():
    dense, compact = _trainer(**{"aggregation.encoding": "dense"}), _trainer()
    d_last, c_last = dense.run()[-1].measurements, compact.run()[-1].measurements
    d_vector = d_last["bytes_sent_per_client"] / d_last["communication_expansion"]
    c_vector = c_last["bytes_sent_per_client"] / c_last["communication_expansion"]
    assert c_vector / d_vector <= 0.25


def test_compact_with_central_noise_and_with_secagg():
    history = _trainer(**{"privacy.noise": "central", "aggregation.protocol": "secagg"}).run()
    assert history[-1].measurements["noise_stddev"] > 0 and np.isfinite(history[-1].evaluation["rmse"])


def test_compact_with_adaptive_clipping_keeps_the_bit():
    trainer = _trainer(**{"privacy.clipping": "adaptive"})
    history = trainer.run()
    assert trainer.privacy.pipeline.encoding.dense_tail == 1
    assert np.isfinite(history[-1].evaluation["rmse"])


@pytest.mark.parametrize("key,value", [
    ("aggregation.encoding", '"sparse"'), ("aggregation.compact_bits", 7), ("aggregation.compact_bits", 33),
    ("aggregation.compact_keep", 0.0), ("aggregation.compact_keep", 1.5),
])
def test_config_refuses_out_of_range_compact_keys(key, value):
    with pytest.raises(ConfigError):
        load_config(None, {key: value})


@pytest.mark.parametrize("extra", [{"privacy.unit": "none"}, {"aggregation.protocol": "plaintext",
                                                              "privacy.noise": "central"}])
def test_config_refuses_compact_where_it_cannot_work(extra):
    with pytest.raises(ConfigError):
        load_config(None, {"aggregation.encoding": "compact", **extra})


def test_compact_pipeline_travels_to_flower_nodes_as_json():
    from secure_fedrec.rounds.wire import plan_from_json, plan_to_json

    trainer = _trainer()
    plan = trainer.server.client_plan
    assert plan_from_json(plan_to_json(plan)).pipeline.encoding == plan.pipeline.encoding


def test_central_compact_ring_holds_the_worst_case_and_refuses_more_clients():
    trainer = _trainer(**{"privacy.noise": "central", "aggregation.protocol": "secagg"})
    encoding = trainer.privacy.pipeline.encoding
    # every rotated integer coordinate is at most Δ: max_summands of them cannot wrap
    assert encoding.max_summands * encoding.l2_sensitivity < 2 ** (encoding.bits - 1)
    assert encoding.central_stddev == pytest.approx(
        trainer.privacy.noise_multiplier * encoding.gamma * encoding.l2_sensitivity)
    small = _encoding(max_summands=2, central_stddev=1.0)
    aggregate, _ = _sum(small, [np.ones(100) / 10.0] * 3)
    assert aggregate.contributors == () and not np.any(aggregate.total)


def test_compact_with_key_sessions_sums_in_sixteen_bit_words():
    history = _trainer(**{"aggregation.key_rounds": 2}).run()
    assert all(m.contributors > 0 for m in history)
    assert np.isfinite(history[-1].evaluation["rmse"])
