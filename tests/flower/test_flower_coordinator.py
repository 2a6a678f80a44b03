"""The coordinator/node split, without Flower: same result as the in-process engine."""

from __future__ import annotations

import numpy as np
import pytest

from secure_fedrec.engines.flower.coordinator import FlowerCoordinator
from secure_fedrec.engines.flower.memory import MemoryTransport
from secure_fedrec.runner import load_data, make_split

from .conftest import reference_params, small_config


def run_split(config, num_partitions, kill_at=None):
    data = load_data(config)
    split = make_split(config, data)
    transport = MemoryTransport(num_partitions)
    transport.kill_at = kill_at or {}
    coordinator = FlowerCoordinator(config, data, split, transport, num_partitions)
    coordinator.run()
    return coordinator


def test_plaintext_matches_inprocess_exactly():
    config = small_config(**{"aggregation.protocol": "plaintext"})
    expected, trainer = reference_params(config)
    got = run_split(config, 4)
    np.testing.assert_array_equal(got.trainer.params, expected)
    assert got.history[-1].evaluation["rmse"] == pytest.approx(trainer.history[-1].evaluation["rmse"], rel=1e-9)


@pytest.mark.parametrize("protocol", ["secagg", "secagg+"])
def test_masking_matches_inprocess(protocol):
    config = small_config(**{"aggregation.protocol": protocol})
    expected, trainer = reference_params(config)
    got = run_split(config, 5)
    # Stochastic rounding (os.urandom) differs between runs: equal up to quantization noise.
    np.testing.assert_allclose(got.trainer.params, expected, rtol=0, atol=1e-6)
    assert not np.array_equal(got.trainer.params, reference_params(small_config(
        **{"aggregation.protocol": protocol, "seed": 8}))[0])
    for mine, theirs in zip(got.history, trainer.history):
        assert mine.contributors == theirs.contributors
        assert mine.measurements["bytes_sent_per_client"] == theirs.measurements["bytes_sent_per_client"]


@pytest.mark.parametrize("label, recorded", [
    ("train", "advertise_keys"), ("share_keys", "share_keys"), ("masked_input", "masked_input"),
    ("unmasking", "unmasking"), ("evaluate", "evaluate"),
])
def test_dead_node_is_a_dropout(label, recorded):
    config = small_config(**{"aggregation.protocol": "secagg"})
    kill_round = 1 if label == "evaluate" else 0  # evaluation after round 1 is tagged round 1
    got = run_split(config, 3, kill_at={(kill_round, label): {2}})
    assert got.dead_at[2] == (kill_round, recorded)
    expected, trainer = reference_params(config, num_partitions=3, dead_at=got.dead_at)
    np.testing.assert_allclose(got.trainer.params, expected, rtol=0, atol=1e-6)
    assert [m.contributors for m in got.history] == [m.contributors for m in trainer.history]
    assert got.history[-1].contributors < got.history[-1].sampled


def test_unsupported_configs_are_refused_before_anything_starts():
    from secure_fedrec.engines.flower.coordinator import check_supported

    with pytest.raises(ValueError, match="paillier"):
        check_supported(small_config(**{"aggregation.protocol": "paillier"}))
    check_supported(small_config(**{"aggregation.protocol": "secagg+"}))


def test_node_state_keeps_protocol_parties_across_messages():
    """The pickled node state restores live MaskingClients (their X25519 keys included)."""
    from protocols.masking import MaskingClient, MaskingServer, params_for
    from secure_fedrec.engines.flower.codec import dump_node_state, load_node_state

    params = params_for(3, bits=16, vector_length=4)
    server = MaskingServer(params, [0, 1, 2])
    clients = {c: MaskingClient(c) for c in (0, 1, 2)}
    for c in clients.values():
        c.set_input(np.arange(4, dtype=np.uint64) + c.client_id)
    outgoing = server.start()
    for _ in range(3):  # advertise, share, mask: a pickle round trip before every stage
        clients = load_node_state(dump_node_state({"s": clients}))["s"]
        for cid, frame in outgoing:
            for reply in clients[cid].receive(frame):
                server.receive(reply)
        outgoing = server.advance()
    clients = load_node_state(dump_node_state({"s": clients}))["s"]
    for cid, frame in outgoing:
        for reply in clients[cid].receive(frame):
            server.receive(reply)
    server.advance()
    np.testing.assert_array_equal(server.result.total, (3 * np.arange(4) + 3).astype(np.uint64))
