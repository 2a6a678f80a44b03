"""The coordinator/node split, without Flower: same result as the in-process engine."""

from __future__ import annotations

import numpy as np
import pytest

from secure_fedrec.engines.flower.coordinator import FlowerCoordinator
from secure_fedrec.engines.flower.memory import MemoryTransport
from secure_fedrec.runner import load_data, make_split

from .conftest import (
    CENTRAL_DP,
    DISTRIBUTED_DP,
    PAILLIER_JOB,
    RECORD_DISTRIBUTED_DP,
    RECORD_DP,
    reference_params,
    small_config,
)


def run_split(config, num_partitions, kill_at=None, paillier_keys=None):
    data = load_data(config)
    split = make_split(config, data)
    transport = MemoryTransport(num_partitions)
    transport.kill_at = kill_at or {}
    coordinator = FlowerCoordinator(config, data, split, transport, num_partitions,
                                    paillier_keys=paillier_keys)
    coordinator.run()
    return coordinator


@pytest.fixture(scope="module")
def paillier_keys(tmp_path_factory):
    """One dealing for the module: a 2048-bit threshold key takes seconds to deal."""
    from secure_fedrec.engines.flower.paillier import deal_paillier_keys

    return str(deal_paillier_keys(small_config(**PAILLIER_JOB), tmp_path_factory.mktemp("keys")))


def epsilons(history):
    return [m.measurements.get("epsilon") for m in history]


def test_plaintext_matches_inprocess_exactly():
    config = small_config(**{"aggregation.protocol": "plaintext"})
    expected, trainer = reference_params(config)
    got = run_split(config, 4)
    np.testing.assert_array_equal(got.params, expected)
    assert got.history[-1].evaluation["rmse"] == pytest.approx(trainer.history[-1].evaluation["rmse"], rel=1e-9)


@pytest.mark.parametrize("protocol", ["secagg", "secagg+"])
def test_masking_matches_inprocess(protocol):
    config = small_config(**{"aggregation.protocol": protocol})
    expected, trainer = reference_params(config)
    got = run_split(config, 5)
    # Stochastic rounding (os.urandom) differs between runs: equal up to quantization noise.
    np.testing.assert_allclose(got.params, expected, rtol=0, atol=1e-6)
    assert not np.array_equal(got.params, reference_params(small_config(
        **{"aggregation.protocol": protocol, "seed": 8}))[0])
    for mine, theirs in zip(got.history, trainer.history):
        assert mine.contributors == theirs.contributors
        assert mine.measurements["bytes_sent_per_client"] == theirs.measurements["bytes_sent_per_client"]


@pytest.mark.parametrize("kill_round, label, recorded", [
    (0, "train", "advertise_keys"), (0, "share_keys", "share_keys"), (0, "masked_input", "masked_input"),
    (0, "unmasking", "unmasking"),
    # round 0's evaluation rides with round 1's train request
    (1, "train", "advertise_keys"),
])
def test_dead_node_is_a_dropout(kill_round, label, recorded):
    config = small_config(**{"aggregation.protocol": "secagg"})
    got = run_split(config, 3, kill_at={(kill_round, label): {2}})
    assert got.dead_at[2] == (kill_round, recorded)
    expected, trainer = reference_params(config, num_partitions=3, dead_at=got.dead_at)
    np.testing.assert_allclose(got.params, expected, rtol=0, atol=1e-6)
    assert [m.contributors for m in got.history] == [m.contributors for m in trainer.history]
    assert got.history[-1].contributors < got.history[-1].sampled
    assert got.history[-1].evaluation["evaluated_fraction"] < 1


def test_a_node_dead_at_the_last_evaluation_leaves_the_training_whole():
    """The last evaluation is the only exchange of its own (tagged with the round count)."""
    config = small_config(**{"aggregation.protocol": "secagg"})
    got = run_split(config, 3, kill_at={(2, "evaluate"): {2}})
    assert got.dead_at[2] == (2, "evaluate")
    expected, trainer = reference_params(config)
    np.testing.assert_allclose(got.params, expected, rtol=0, atol=1e-6)
    assert [m.contributors for m in got.history] == [m.contributors for m in trainer.history] == [10, 10]
    assert 0 < got.history[-1].evaluation["evaluated_fraction"] < 1
    assert "evaluated_fraction" not in got.history[0].evaluation


def test_every_protocol_and_privacy_unit_is_supported():
    from secure_fedrec.engines.flower.coordinator import check_supported

    for protocol in ("plaintext", "secagg", "secagg+", "paillier"):
        check_supported(small_config(**{"aggregation.protocol": protocol}))
    for privacy in (CENTRAL_DP, DISTRIBUTED_DP, RECORD_DP, {**CENTRAL_DP, "privacy.clipping": "adaptive"},
                    {**DISTRIBUTED_DP, "privacy.clipping": "adaptive"}):
        check_supported(small_config(**privacy))


def test_paillier_needs_the_dealers_keys():
    config = small_config(**PAILLIER_JOB)
    with pytest.raises(ValueError, match="paillier_keys"):
        run_split(config, 3)


@pytest.mark.parametrize("name, privacy", [
    ("central+secagg", {**CENTRAL_DP, "aggregation.protocol": "secagg"}),
    ("central+plaintext", {**CENTRAL_DP, "aggregation.protocol": "plaintext"}),
    ("distributed+secagg+", DISTRIBUTED_DP),
])
def test_user_level_dp_accounts_as_inprocess(name, privacy):
    """Same sampled users, same rounds, the same ε after every round; the noise itself differs."""
    config = small_config(**privacy)
    got = run_split(config, 3)
    _, trainer = reference_params(config)
    assert epsilons(got.history) == epsilons(trainer.history)
    assert all(e is not None and 0 < e < 20 for e in epsilons(got.history))
    assert [m.contributors for m in got.history] == [m.contributors for m in trainer.history]
    assert got.server.privacy.summary()["epsilon"] == trainer.privacy.summary()["epsilon"]
    last = got.history[-1].measurements
    assert last["noise_stddev"] == trainer.history[-1].measurements["noise_stddev"] > 0
    assert last["clip_norm"] == 0.5


def test_user_level_pipeline_matches_inprocess_without_noise():
    """Clip on the nodes, mean over the expected count on the server: with (almost) no noise,
    the parameters are the in-process engine's."""
    config = small_config(**{**CENTRAL_DP, "privacy.noise_multiplier": 1e-6,
                             "privacy.accountant": "rdp", "aggregation.protocol": "secagg"})
    got = run_split(config, 3)
    expected, _ = reference_params(config)
    assert got.history[-1].measurements["noise_stddev"] < 1e-6
    # FedAdam divides by sqrt(v): where v is tiny, even this noise moves a coordinate a little.
    np.testing.assert_allclose(got.params, expected, rtol=0, atol=1e-3)
    assert np.median(np.abs(got.params - expected)) < 1e-5  # values are ~1e-1


def test_adaptive_clipping_runs_on_flower_with_the_clip_norm_in_the_broadcast():
    """The server moves C; the nodes clip with the C of the round's broadcast. With (almost) no
    noise, the clip norms and parameters are the in-process engine's."""
    config = small_config(**{**CENTRAL_DP, "privacy.clipping": "adaptive", "privacy.noise_multiplier": 1e-6,
                             "privacy.clip_count_stddev": 1e-6, "privacy.clip_learning_rate": 0.5,
                             "privacy.accountant": "rdp", "aggregation.protocol": "secagg",
                             "training.rounds": 3})
    got = run_split(config, 3)
    expected, trainer = reference_params(config)
    clips = [m.measurements["clip_norm"] for m in got.history]
    assert len(set(clips)) == 3  # C moved every round
    np.testing.assert_allclose(clips, [m.measurements["clip_norm"] for m in trainer.history], rtol=1e-4)
    assert epsilons(got.history) == epsilons(trainer.history)
    np.testing.assert_allclose(got.params, expected, rtol=0, atol=1e-3)
    assert got.server.privacy.summary()["clip_norm_final"] == got.history[-1].measurements["clip_norm_next"]


def test_a_round_of_one_client_aborts_on_flower_too():
    """Issue 19, item 3, on the Flower engine: the round that samples one user releases nothing,
    the user still trains (as in-process), and the job goes on."""
    config = small_config(**{"aggregation.protocol": "secagg+", "training.sampling": "poisson",
                             "training.clients_per_round": 0.1, "data.synthetic.n_users": 40,
                             "training.rounds": 8, "seed": 7, "evaluation.every": 8})
    got = run_split(config, 3)
    _, trainer = reference_params(config)
    assert [m.contributors for m in got.history] == [m.contributors for m in trainer.history]
    aborted = [m for m in got.history if m.measurements.get("aborted")]
    assert aborted and all(m.sampled == 1 and m.contributors == 0 for m in aborted)
    assert len(got.history) == 8


def test_record_level_dp_accounts_as_inprocess():
    """DP-SGD runs on the nodes; each user's steps are charged to its accountant on the server."""
    config = small_config(**{**RECORD_DP, "aggregation.protocol": "secagg"})
    got = run_split(config, 3)
    _, trainer = reference_params(config)
    assert epsilons(got.history) == epsilons(trainer.history)
    assert all(e is not None and e > 0 for e in epsilons(got.history))
    assert [m.contributors for m in got.history] == [m.contributors for m in trainer.history]
    ours, theirs = got.server.privacy.summary(), trainer.privacy.summary()
    assert ours["epsilon"] == theirs["epsilon"]
    assert ours["epsilon_distribution"] == theirs["epsilon_distribution"]


def test_record_level_distributed_noise_matches_inprocess():
    """Issue 20 on the Flower engine: the same client step on the nodes (each node keeps its users'
    optimizer moments), the same ε sequence, results within the noise of the two runs."""
    config = small_config(**RECORD_DISTRIBUTED_DP)
    got = run_split(config, 3)
    _, trainer = reference_params(config)
    assert epsilons(got.history) == epsilons(trainer.history)
    assert [m.contributors for m in got.history] == [len(trainer.population)] * 3
    from secure_fedrec.engines.flower.codec import load_node_state

    node_states = [load_node_state(blob).get("client_states", {}) for blob in got.transport.states.values()]
    assert sum(len(states) for states in node_states) == len(trainer.population)
    assert all(s["step"] == 3 for states in node_states for s in states.values())
    ours, theirs = got.history[-1].evaluation["rmse"], trainer.history[-1].evaluation["rmse"]
    assert abs(ours - theirs) < 0.1  # the DP noise of each run comes from the OS: equal in law, not in bits


def test_record_level_distributed_round_below_the_survivor_floor_aborts_on_flower():
    config = small_config(**{**RECORD_DISTRIBUTED_DP, "training.dropout_rate": 0.7, "training.rounds": 1})
    got = run_split(config, 3)
    assert got.history[-1].measurements.get("protocol_failed") == 1.0
    assert got.history[-1].contributors == 0
    np.testing.assert_array_equal(got.params, reference_initial(config))
    assert len(got.server.privacy.accountant) == 1  # charged all the same


def reference_initial(config):
    from secure_fedrec.engines.inprocess import FederatedTrainer

    return FederatedTrainer(config, make_split(config, load_data(config))).params


def test_paillier_matches_inprocess(paillier_keys):
    config = small_config(**PAILLIER_JOB)
    got = run_split(config, 3, paillier_keys=paillier_keys)
    expected, trainer = reference_params(config)
    np.testing.assert_allclose(got.params, expected, rtol=0, atol=1e-6)
    assert [m.contributors for m in got.history] == [m.contributors for m in trainer.history] == [10, 10]
    assert got.history[-1].measurements["protocol_key_bits"] == 2048


def test_paillier_survives_a_dead_key_holder_host(paillier_keys):
    """Node 2 hosts key holder 3; it dies at the decryption: 2 of 3 key holders still decrypt."""
    config = small_config(**PAILLIER_JOB)
    got = run_split(config, 3, kill_at={(0, "decrypt"): {2}}, paillier_keys=paillier_keys)
    assert got.dead_at[2] == (0, "decrypt")
    # Round 0 keeps node 2's users (they had uploaded before it died); from round 1 on they
    # are dropouts, as in-process with the node gone before round 1 (its "evaluate" tag).
    expected, trainer = reference_params(config, num_partitions=3, dead_at={2: (1, "evaluate")})
    assert [m.contributors for m in got.history] == [m.contributors for m in trainer.history]
    assert got.history[0].contributors == 10
    np.testing.assert_allclose(got.params, expected, rtol=0, atol=1e-6)
    assert got.history[1].contributors < got.history[1].sampled


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


def test_engine_flower_honours_the_flower_config_section(monkeypatch):
    """``engine = "flower-sim"`` starts ``flower.nodes`` nodes with the section's timeouts."""
    from secure_fedrec.config import ConfigError, load_config
    from secure_fedrec.engines.flower import launcher
    from secure_fedrec.runner import run_job

    seen = {}

    class FakeFederation:
        def __init__(self, mode, num_nodes, work_dir=None, **kwargs):
            seen.update(mode=mode, nodes=num_nodes)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return None

        def submit(self, config, out, **kwargs):
            f = config.flower
            seen.update(engine=config.engine, nodes_in_config=f.nodes, train_timeout=f.train_timeout,
                        stage_timeout=f.stage_timeout, node_wait_timeout=f.node_wait_timeout)

        def wait(self, run, out, timeout):
            return {"engine": "flower-sim"}

    monkeypatch.setattr(launcher, "LocalFederation", FakeFederation)
    config = load_config(None, {"engine": "flower-sim", "flower.nodes": 3, "flower.stage_timeout": 7.5,
                                "flower.train_timeout": 30.0, "flower.node_wait_timeout": 60.0})
    assert run_job(config)["engine"] == "flower-sim"
    assert seen == {"mode": "sim", "nodes": 3, "nodes_in_config": 3, "train_timeout": 30.0,
                    "stage_timeout": 7.5, "node_wait_timeout": 60.0, "engine": "flower-sim"}
    for bad in ({"flower.nodes": 0}, {"flower.stage_timeout": -1.0}, {"flower.train_timeout": float("nan")},
                {"flower.bogus": 1}):
        with pytest.raises(ConfigError):
            load_config(None, bad)


NODE_SCRIPT = """
import base64, json, sys
from secure_fedrec.engines.flower.dispatch import dispatch
request = json.loads(sys.stdin.read())
for key in ("params",):
    request[key] = base64.b64decode(request[key])
reply, _ = dispatch("train", request, b"", {"partition-id": request.pop("partition"), "num-partitions": 2})
assert reply["reporting"] == len(request["users"]), reply
print(json.dumps(sorted(m for m in ("dp_accounting", "scipy", "opacus") if m in sys.modules)))
"""


def test_a_node_trains_and_encodes_without_the_accountants_libraries():
    """The client plan and the broadcast carry every number a node needs (no calibration on a
    node), so a node handling ``train`` — a fresh process per message in deployment — imports
    neither dp_accounting nor scipy, even under distributed DP."""
    import base64
    import json
    import subprocess
    import sys

    config = small_config(**DISTRIBUTED_DP)
    data = load_data(config)
    co = FlowerCoordinator(config, data, make_split(config, data), MemoryTransport(2), 2)
    plan = co.server.plan_round(0)
    partition, request = next(iter(co._train_requests(plan, co._common_train(plan)).items()))
    request = {**request, "params": base64.b64encode(request["params"]).decode(), "partition": partition}
    out = subprocess.run([sys.executable, "-c", NODE_SCRIPT], input=json.dumps(request), capture_output=True,
                         text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_ranking_metrics_recombine_exactly_across_nodes():
    """Ranking metrics are means over users, and users hold different numbers of test items
    on a holdout split: the nodes' sums and counts recombine to the in-process figures
    exactly, recall at the configured cutoff included."""
    config = small_config(**{"aggregation.protocol": "plaintext", "data.implicit": True, "model.name": "mf",
                             "data.split": "holdout", "evaluation.recall_k": 7, "training.rounds": 1})
    _, trainer = reference_params(config)
    expected = trainer.history[-1].evaluation
    got = run_split(config, 3).history[-1].evaluation
    assert "recall@7" in got and "evaluated_fraction" not in got
    test_rows = np.bincount(trainer.split.test.users)
    assert len(set(test_rows[test_rows > 0].tolist())) > 1  # users weigh differently by test rows
    for name, value in expected.items():
        assert got[name] == (pytest.approx(value, rel=1e-9) if isinstance(value, float) else value), name


def test_a_malformed_evaluation_reply_is_left_out():
    from secure_fedrec.engines.flower.coordinator import combine_evaluations
    from secure_fedrec.evaluation import MetricSums

    good = {"n_test": 4, **MetricSums({"hr@10": 1.0}, {"hr@10": 2.0}, {}).to_json()}
    for bad in ({"n_test": 3, "names": ["hr@10"], "sums": [float("nan")], "counts": [1.0]},
                {"n_test": 3, "names": ["hr@10"], "sums": [1.0], "counts": [-1.0]},
                {"n_test": 3, "names": ["hr@10", "hr@10"], "sums": [1.0, 1.0], "counts": [1.0, 1.0]},
                {"n_test": 99, **MetricSums({"hr@10": 1.0}, {"hr@10": 1.0}, {}).to_json()},
                {"names": "hr@10"}, "not a dict"):
        out = combine_evaluations([good, bad], n_test_total=10, partial=False)
        assert out["hr@10"] == 0.5 and out["evaluated_fraction"] == 0.4


def test_a_round_below_the_dp_floor_aborts_inside_the_protocol_before_unmasking(monkeypatch):
    """Issue 19, item 4 on the Flower engine: the coordinator's MaskingServer carries the plan's
    ``min_survivors`` and refuses to start the unmasking below it (before: it unmasked, then the
    engine refused the sum). The round releases nothing and is charged as in-process."""
    from protocols import BelowThreshold
    from secure_fedrec.engines.flower import masking_rounds

    config = small_config(**DISTRIBUTED_DP, **{"aggregation.threshold_fraction": 0.9,
                                               "training.clients_per_round": 20.0, "training.rounds": 1})
    data = load_data(config)
    transport = MemoryTransport(3)
    coordinator = FlowerCoordinator(config, data, make_split(config, data), transport, 3)
    server = coordinator.server
    floor = server.privacy.min_survivors
    plan_round = server.plan_round

    def thinned(round_index):  # one fewer than the floor survives the masked upload
        plan = plan_round(round_index)
        trainers = [c for c, _ in plan.trainers]
        assert len(trainers) >= floor > server.session(len(trainers)).threshold
        plan.dropouts = {c: "masked_input" for c in trainers[: len(trainers) - floor + 1]}
        return plan

    monkeypatch.setattr(server, "plan_round", thinned)
    sent: list[tuple[str, str]] = []
    exchange = transport.exchange

    def spied(message_type, requests, **kwargs):
        sent.extend((message_type, r.get("stage", "")) for r in requests.values())
        return exchange(message_type, requests, **kwargs)

    monkeypatch.setattr(transport, "exchange", spied)
    reasons = []
    aborted = masking_rounds._aborted
    monkeypatch.setattr(masking_rounds, "_aborted", lambda reason, *a: (reasons.append(reason), aborted(reason, *a))[1])
    before = server.params.copy()
    coordinator.run()

    assert len(reasons) == 1 and isinstance(reasons[0], BelowThreshold)
    assert (reasons[0].survivors, reasons[0].threshold, reasons[0].stage) == (floor - 1, floor, "masked_input")
    assert ("train.stage", "masked_input") in sent and ("train.stage", "unmasking") not in sent
    metrics = coordinator.history[0]
    assert metrics.contributors == 0 and metrics.measurements["aborted"] == 1.0
    np.testing.assert_array_equal(server.params, before)
    # The same ε as the in-process engine's full round: an aborted round is charged all the same.
    _, trainer = reference_params(config)
    assert trainer.history[0].contributors > 0
    assert metrics.measurements["epsilon"] == trainer.history[0].measurements["epsilon"] > 0


def test_private_sampling_runs_on_the_split_with_every_user_uploading():
    """privacy.private_sampling on the coordinator/node split: every user of every node uploads
    every round (the coin rides in the client plan), and the run is accounted as in-process."""
    config = small_config(**{**DISTRIBUTED_DP, "privacy.private_sampling": True, "training.rounds": 2,
                             "aggregation.threshold_fraction": 0.9})
    got = run_split(config, 3)
    assert [m.sampled for m in got.history] == [60, 60]
    assert [m.contributors for m in got.history] == [60, 60]
    summary = got.server.privacy_summary()
    assert summary["private_sampling"] is True and summary["participation_known"] is None
    assert np.all(np.isfinite(got.params))


@pytest.mark.parametrize("extra", [RECORD_DISTRIBUTED_DP, {**RECORD_DP, "aggregation.protocol": "secagg"}],
                         ids=["distributed", "local"])
def test_record_level_compact_upload_on_flower_matches_inprocess(extra):
    """The record-level public subset travels to the nodes (JSON) and back: the same contributors,
    ε and upload bytes as in-process."""
    config = small_config(**{**extra, "aggregation.encoding": "compact"})
    got = run_split(config, 3)
    _, trainer = reference_params(config)
    assert epsilons(got.history) == epsilons(trainer.history)
    assert [m.contributors for m in got.history] == [m.contributors for m in trainer.history]
    up = [m.measurements["bytes_up_per_client"] for m in got.history]
    assert up == [m.measurements["bytes_up_per_client"] for m in trainer.history]
    assert np.isfinite(got.history[-1].evaluation["rmse"])
