"""Session parameters: one pure function of the round's size, the same for both engines."""

import json
import math

import pytest

from protocols import BelowThreshold
from protocols.masking import SecAggPlus, params_for
from secure_fedrec.aggregation import SessionPolicy, session_parameters


@pytest.mark.parametrize("n", [2, 3, 7, 10, 40])
@pytest.mark.parametrize("fraction, floor", [(0.5, 1), (0.6, 1), (0.5, 6), (0.9, 2)])
def test_secagg_threshold_is_a_majority_the_fraction_and_the_floor(n, fraction, floor):
    policy = SessionPolicy("secagg", threshold_fraction=fraction, min_survivors=floor)
    if n < max(2, floor):
        with pytest.raises(BelowThreshold):
            session_parameters(policy, n, bits=32, vector_length=9)
        return
    session = session_parameters(policy, n, bits=32, vector_length=9)
    assert session.threshold == min(n, max(n // 2 + 1, math.ceil(fraction * n), floor))
    assert session.degree == n - 1 and session.min_survivors == floor
    params = session.masking_params()
    assert params == params_for(n, bits=32, vector_length=9, threshold=session.threshold, min_survivors=floor)


@pytest.mark.parametrize("n", [2, 5, 20, 100, 300])
@pytest.mark.parametrize("dropout", [0.0, 0.1, 0.3])
def test_secaggplus_takes_the_protocols_own_graph(n, dropout):
    session = session_parameters(SessionPolicy("secagg+", dropout_rate=dropout), n, bits=32, vector_length=5)
    reference = SecAggPlus(dropout_rate=max(0.05, dropout)).params(n, bits=32, vector_length=5)
    assert session.masking_params() == reference


def test_paillier_floor_and_plaintext():
    policy = SessionPolicy("paillier", paillier_min_clients=5)
    assert session_parameters(policy, 5, bits=32, vector_length=3).min_survivors == 5
    with pytest.raises(BelowThreshold) as too_few:
        session_parameters(policy, 4, bits=32, vector_length=3)
    assert (too_few.value.survivors, too_few.value.threshold, too_few.value.stage) == (4, 5, "sampling")
    plain = session_parameters(SessionPolicy("plaintext"), 1, bits=None, vector_length=3)
    assert plain.threshold is None and plain.min_survivors == 1


def test_a_masking_session_of_one_client_is_below_threshold_not_a_crash():
    for protocol in ("secagg", "secagg+"):
        with pytest.raises(BelowThreshold) as one:
            session_parameters(SessionPolicy(protocol), 1, bits=32, vector_length=3)
        assert (one.value.survivors, one.value.threshold) == (1, 2)


def test_the_function_is_pure():
    policy = SessionPolicy("secagg", threshold_fraction=0.7, min_survivors=3)
    first = session_parameters(policy, 11, bits=20, vector_length=4)
    session_parameters(policy, 30, bits=20, vector_length=4)
    assert session_parameters(policy, 11, bits=20, vector_length=4) == first


def test_a_round_of_one_client_aborts_and_the_run_goes_on(tmp_path):
    """Issue 19, item 3: the exact command crashed at round index 3 with ``ValueError("a masking
    session needs at least 2 clients")``; that round now releases nothing and the run finishes."""
    from secure_fedrec.cli import main

    out = tmp_path / "run"
    code = main(["run", "--seed", "7", "--set", 'privacy.unit="none"', "--set", "training.rounds=8",
                 "--set", "data.synthetic.n_users=40", "--set", "data.synthetic.n_items=50",
                 "--set", "model.dim=4", "--quiet", "--out", str(out)])
    assert code == 0
    rounds = json.loads((out / "metrics.json").read_text())["rounds"]
    assert len(rounds) == 8
    small = rounds[3]
    assert small["sampled"] == 1 and small["aborted"] == 1.0 and small["abort_survivors"] == 1.0
    assert small["contributors"] == 0
    assert all("aborted" not in r and r["contributors"] == r["sampled"] for i, r in enumerate(rounds) if i != 3)
