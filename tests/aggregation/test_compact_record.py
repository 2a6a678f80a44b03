"""The compact upload at record level (a public coordinate subset): round trips, the privacy
geometry, the plans that use it, the bytes and the wire form."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from protocols import PlaintextSum
from secure_fedrec.aggregation import (
    ClientContext,
    ClientUpdate,
    CompactRotatedEncoding,
    ServerContext,
    SubsetQuantizedEncoding,
    SubsetShareEncoding,
    SumOutcome,
    compact_length,
)
from secure_fedrec.aggregation.compact import public_subset
from secure_fedrec.config import ConfigError, load_config
from secure_fedrec.engines.inprocess import FederatedTrainer
from secure_fedrec.rounds.wire import plan_from_json, plan_to_json
from secure_fedrec.runner import load_data, make_split

SHARES = {"gamma": 0.01, "share_sigma": 3.0, "bits": 32, "max_level": 1e6, "noise_stddev": 0.1,
          "wrap_probability": 0.0, "keep_fraction": 0.4, "salt": 11, "dense_length": 200}


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Silent(SubsetShareEncoding):
    def noise_share(self, size: int) -> np.ndarray:
        return np.zeros(size, dtype=np.int64)


def _run(encoding, updates, round_index=5):
    ctx = ClientContext(round_index=round_index, n_clients=len(updates), expected_clients=len(updates))
    payloads = {i: encoding.client(u, ctx)[0] for i, u in enumerate(updates)}
    result = PlaintextSum().run_round(payloads, bits=encoding.bits)
    outcome = SumOutcome(total=result.total, contributors=tuple(result.contributors))
    server = ServerContext(round_index=round_index, n_clients=len(updates), expected_clients=len(updates))
    return encoding.server(outcome, server)[0], payloads


def _sparse_integer_updates(rng, n, length=200):
    out = []
    for _ in range(n):
        idx = np.sort(rng.choice(length, size=30, replace=False))
        out.append(ClientUpdate(indices=idx, values=rng.integers(-500, 500, size=30).astype(np.float64), size=length))
    return out


def test_subset_shares_release_the_kept_coordinates_of_the_sum_and_zero_elsewhere():
    rng = np.random.default_rng(0)
    updates = _sparse_integer_updates(rng, 5)
    encoding = _Silent(**SHARES)
    aggregate, payloads = _run(encoding, updates)
    kept = public_subset(11, 5, 200, 0.4)
    assert all(p.size == kept.size == compact_length(200, 0.4) for p in payloads.values())
    exact = sum(u.dense() for u in updates) * 0.01
    np.testing.assert_allclose(aggregate.total[kept], exact[kept], rtol=0, atol=1e-9)
    dropped = np.setdiff1d(np.arange(200), kept)
    assert not np.any(aggregate.total[dropped])
    assert aggregate.weight_total == 5.0


def test_subset_shares_noise_only_the_kept_coordinates():
    encoding = SubsetShareEncoding(**SHARES)
    aggregate, _ = _run(encoding, [ClientUpdate(indices=np.array([], dtype=np.int64), values=np.array([]),
                                                size=200)] * 40)
    kept = public_subset(11, 5, 200, 0.4)
    # 40 shares of variance ~9 levels², times γ: the kept coordinates are noised, the others exactly zero
    assert 0.1 < np.std(aggregate.total[kept]) / (0.01 * 3.0 * np.sqrt(40)) < 1.5
    assert not np.any(np.delete(aggregate.total, kept))


def test_the_subset_is_the_user_level_encodings_and_moves_with_the_round():
    rotated = CompactRotatedEncoding(keep_fraction=0.4, salt=11, dense_length=200, gamma=1.0, l2_sensitivity=1.0,
                                     share_sigma=0.0)
    for round_index in (0, 1, 9):
        np.testing.assert_array_equal(rotated._public(round_index, 200)[0], public_subset(11, round_index, 200, 0.4))
    assert not np.array_equal(public_subset(11, 1, 200, 0.4), public_subset(11, 2, 200, 0.4))


@pytest.mark.parametrize("values", [[0.5], [2e6], [np.nan]])
def test_subset_shares_refuse_what_is_not_a_planned_integer(values):
    update = ClientUpdate(indices=np.array([3]), values=np.array(values, dtype=np.float64), size=200)
    ctx = ClientContext(round_index=0, n_clients=1, expected_clients=1)
    with pytest.raises(ValueError, match="integers within the planned bound"):
        SubsetShareEncoding(**SHARES).client(update, ctx)


@pytest.mark.parametrize("change", [{"keep_fraction": 0.0}, {"keep_fraction": 1.5}, {"salt": -1},
                                    {"dense_length": 0}])
def test_subset_encodings_check_their_fields(change):
    with pytest.raises(ValueError):
        SubsetShareEncoding(**{**SHARES, **change})
    with pytest.raises(ValueError):
        SubsetQuantizedEncoding(coordinate_clip=1.0, **{"keep_fraction": 0.4, "salt": 1, "dense_length": 200,
                                                        **change})


def test_subset_shares_refuse_a_sum_of_the_wrong_length():
    server = ServerContext(round_index=0, n_clients=1, expected_clients=1)
    with pytest.raises(ValueError, match="expects"):
        SubsetShareEncoding(**SHARES).server(SumOutcome(total=np.zeros(200, dtype=np.uint64), contributors=(1,)),
                                             server)


def test_subset_quantized_carries_the_weights_and_the_kept_coordinates():
    rng = np.random.default_rng(1)
    encoding = SubsetQuantizedEncoding(coordinate_clip=1.0, bits=32, keep_fraction=0.3, salt=4, dense_length=200)
    updates = [dataclasses.replace(ClientUpdate.from_dense(rng.uniform(-0.5, 0.5, 200)), weight=w)
               for w in (0.25, 0.5, 1.0)]
    aggregate, payloads = _run(encoding, updates)
    kept = public_subset(4, 5, 200, 0.3)
    assert all(p.size == kept.size + 1 for p in payloads.values())
    assert aggregate.weight_total == pytest.approx(1.75, abs=1e-6)
    exact = sum(u.dense() for u in updates)
    np.testing.assert_allclose(aggregate.total[kept], exact[kept], atol=1e-5)
    assert not np.any(np.delete(aggregate.total, kept))


# -- the plans -----------------------------------------------------------------------------------
RECORD = {"privacy.unit": "record", "privacy.noise": "distributed", "privacy.target_epsilon": 4.0,
          "privacy.delta": 1e-5, "data.synthetic.n_users": 40, "data.synthetic.n_items": 30,
          "data.synthetic.mean_ratings_per_user": 12.0, "model.dim": 4, "training.rounds": 3,
          "aggregation.protocol": "secagg+", "evaluation.every": 3, "seed": 3}


def _trainer(**overrides) -> FederatedTrainer:
    config = load_config(None, {**RECORD, **overrides})
    return FederatedTrainer(config, make_split(config, load_data(config)))


def test_record_distributed_compact_uploads_the_subset_and_accounts_for_its_dimension():
    dense, compact = _trainer(), _trainer(**{"aggregation.encoding": "compact"})
    kept = compact_length(dense.privacy.population.dim, 0.46)
    assert compact.privacy.noised_dim == compact.privacy.accountant.dim == kept
    assert dense.privacy.accountant.dim == dense.privacy.population.dim
    summary = compact.privacy.summary()
    assert summary["encoding"] == "compact" and summary["noised_dim"] == kept
    history_dense, history_compact = dense.run(), compact.run()
    up_dense = np.mean([m.measurements["bytes_sent_per_client"] for m in history_dense])
    up_compact = np.mean([m.measurements["bytes_sent_per_client"] for m in history_compact])
    vector_saving = (dense.privacy.population.dim - kept) * 4  # 32-bit words
    assert up_dense - up_compact == pytest.approx(vector_saving, rel=0.02)
    assert all(m.contributors > 0 for m in history_compact)
    assert np.isfinite(history_compact[-1].evaluation["rmse"])
    # a smaller subset spends the same budget: the noise is planned for the kept coordinates
    assert history_compact[-1].measurements["epsilon"] <= 4.0 * (1 + 1e-9)


def test_record_distributed_compact_runs_as_the_labelled_simulation():
    trainer = _trainer(**{"aggregation.encoding": "compact", "aggregation.protocol": "plaintext"})
    history = trainer.run()
    assert isinstance(trainer.privacy.pipeline.encoding, SubsetShareEncoding)
    assert np.isfinite(history[-1].evaluation["rmse"])


def test_record_local_compact_uploads_the_subset_and_the_weight():
    trainer = _trainer(**{"privacy.noise": "local", "privacy.noise_multiplier": 1.0, "privacy.target_epsilon": None,
                          "privacy.record_batch_size": 8, "aggregation.encoding": "compact",
                          "training.rounds": 2, "training.clients_per_round": 10})
    encoding = trainer.privacy.pipeline.encoding
    assert isinstance(encoding, SubsetQuantizedEncoding)
    assert encoding.payload_length(encoding.dense_length) == compact_length(encoding.dense_length, 0.46) + 1
    history = trainer.run()
    assert all(m.contributors > 0 for m in history)
    assert np.isfinite(history[-1].evaluation["rmse"])


@pytest.mark.parametrize("noise", ["distributed", "local"])
def test_record_compact_plans_travel_to_flower_nodes_as_json(noise):
    extra = {"privacy.noise_multiplier": 1.0, "privacy.target_epsilon": None} if noise == "local" else {}
    trainer = _trainer(**{"privacy.noise": noise, "aggregation.encoding": "compact", **extra})
    plan = trainer.server.client_plan
    assert plan_from_json(plan_to_json(plan)).pipeline.encoding == plan.pipeline.encoding


def test_record_local_compact_needs_a_secure_protocol():
    with pytest.raises(ConfigError, match="secure protocol"):
        load_config(None, {**RECORD, "privacy.noise": "local", "aggregation.protocol": "plaintext",
                           "aggregation.encoding": "compact"})


def test_the_audits_no_noise_twin_keeps_the_subset():
    from secure_fedrec.audit.twin import shares_without_noise

    trainer = _trainer(**{"aggregation.encoding": "compact", "aggregation.protocol": "plaintext"})
    before = trainer.privacy.pipeline.encoding
    shares_without_noise(trainer)
    after = trainer.server.client_plan.pipeline.encoding
    assert isinstance(after, SubsetShareEncoding)
    assert (after.keep_fraction, after.salt, after.dense_length) == (before.keep_fraction, before.salt,
                                                                     before.dense_length)
    assert not np.any(after.noise_share(50))
