"""End-to-end correctness of SecAgg / SecAgg+ under dropouts at every stage."""

from __future__ import annotations

import secrets

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from protocols.api import SecureSum
from protocols.errors import BelowThreshold, LocalProtocolError
from protocols.masking import (
    MaskingParams,
    SecAgg,
    SecAggPlus,
    SessionTrace,
    run_session,
    stages_for,
)
from protocols.testing import expected_outcome, random_inputs


@st.composite
def sessions(draw, active: bool = False):
    n = draw(st.integers(3, 60))
    start = draw(st.integers(0, 1000))
    gaps = draw(st.lists(st.integers(1, 50), min_size=n - 1, max_size=n - 1))
    ids = [int(v) for v in np.cumsum([start] + gaps)]
    even_degrees = [k for k in range(2, n - 1, 2)]
    degree = draw(st.sampled_from(even_degrees + [n - 1]) if even_degrees else st.just(n - 1))
    size = degree + 1
    low = (2 * size) // 3 + 1 if active else size // 2 + 1
    # Mostly thresholds near the legal minimum (the interesting, survivable case).
    threshold = low + draw(st.integers(0, (size - low) // 2) | st.just(size - low))
    bits = draw(st.sampled_from([1, 7, 16, 31, 32, 33, 48, 62]))
    length = draw(st.integers(0, 40))
    stages = stages_for(active)
    rate = draw(st.sampled_from([0.0, 0.05, 0.1, 0.2, 0.4]))
    dropouts = {}
    for cid in ids:
        if draw(st.floats(0, 1)) < rate:
            dropouts[cid] = draw(st.sampled_from(stages))
    seed = draw(st.integers(0, 2**32 - 1))
    # Mostly no session-wide floor (the oracle's neighbourhood rules alone), sometimes one.
    min_survivors = draw(st.just(1) | st.integers(1, n))
    params = MaskingParams(threshold=threshold, degree=degree, bits=bits,
                           vector_length=length, active=active, min_survivors=min_survivors)
    return ids, params, dropouts, seed


def _check(ids, params, dropouts, seed, *, in_hypothesis=True):
    rng = np.random.default_rng(seed)
    inputs = random_inputs(ids, params.vector_length, params.bits, rng)
    graph_seed = secrets.token_bytes(32)
    expected = expected_outcome(ids, params, graph_seed, dropouts)
    trace = SessionTrace()
    if in_hypothesis:
        event(f"below threshold at {expected.below_threshold_stage}"
              if expected.below_threshold_stage else "exact sum")
    if expected.below_threshold_stage is not None:
        with pytest.raises(BelowThreshold) as info:
            run_session(inputs, params, dropouts=dropouts, graph_seed=graph_seed, trace=trace)
        assert info.value.stage == expected.below_threshold_stage
        return
    result = run_session(inputs, params, dropouts=dropouts, graph_seed=graph_seed, trace=trace)
    assert not trace.client_errors and not trace.rejected_frames
    assert result.contributors == expected.contributors
    modulus = 1 << params.bits
    want = np.zeros(params.vector_length, dtype=object)
    for cid in expected.contributors:
        want = want + inputs[cid].astype(object)
    want = np.asarray([int(v) % modulus for v in want], dtype=np.uint64)
    assert result.total.dtype == np.uint64
    np.testing.assert_array_equal(result.total, want)
    assert set(result.dropped) == set(ids) - set(expected.contributors)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sessions())
def test_sum_is_exact_or_below_threshold(session):
    _check(*session)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sessions(active=True))
def test_active_mode_sum_is_exact_or_below_threshold(session):
    _check(*session)


def test_both_outcomes_are_exercised():
    """Guard against an oracle that always says "success" (or always "abort")."""
    ids = list(range(10))
    params = MaskingParams(threshold=6, degree=9, bits=16, vector_length=5)
    seed = bytes(32)
    ok = expected_outcome(ids, params, seed, {0: "masked_input", 1: "unmasking"})
    assert ok.contributors == tuple(range(1, 10))
    bad = expected_outcome(ids, params, seed, {c: "unmasking" for c in range(5)})
    assert bad.below_threshold_stage == "unmasking"
    _check(ids, params, {c: "unmasking" for c in range(5)}, 1, in_hypothesis=False)
    _check(ids, params, {0: "masked_input", 1: "unmasking", 2: "share_keys"}, 2,
           in_hypothesis=False)


def test_secure_sum_interface():
    for protocol in (SecAgg(), SecAggPlus(), SecAgg(active=True)):
        assert isinstance(protocol, SecureSum)
        rng = np.random.default_rng(7)
        inputs = random_inputs(range(12), 30, 20, rng)
        dropouts = {3: protocol.stages[1], 5: protocol.stages[-1]}
        result = protocol.run_round(inputs, bits=20, dropouts=dropouts, round_index=4)
        want = sum(inputs[c] for c in result.contributors) % (1 << 20)
        np.testing.assert_array_equal(result.total, want)
        assert 3 not in result.contributors and 5 in result.contributors
        assert result.client_seconds > 0 and result.server_seconds > 0
        assert all(result.bytes_sent[c] > 0 for c in result.contributors)


def test_unknown_stage_rejected():
    inputs = random_inputs(range(4), 3, 8, np.random.default_rng(0))
    with pytest.raises(LocalProtocolError):
        SecAgg().run_round(inputs, bits=8, dropouts={0: "lunch"})
    with pytest.raises(LocalProtocolError):  # no consistency round in passive mode
        SecAgg().run_round(inputs, bits=8, dropouts={0: "consistency_check"})


def test_everyone_drops_is_below_threshold():
    inputs = random_inputs(range(5), 3, 8, np.random.default_rng(0))
    with pytest.raises(BelowThreshold):
        SecAgg().run_round(inputs, bits=8, dropouts={c: "advertise_keys" for c in range(5)})


def test_secaggplus_uses_sparse_graph_and_is_cheaper_per_client():
    rng = np.random.default_rng(3)
    inputs = random_inputs(range(100), 10, 32, rng)
    plus = SecAggPlus(dropout_rate=0.1, corrupt_fraction=0.05).run_round(inputs, bits=32)
    assert plus.measurements["degree"] < 99
    full = SecAgg().run_round(inputs, bits=32)
    np.testing.assert_array_equal(plus.total, full.total)
    assert max(plus.bytes_received.values()) < max(full.bytes_received.values())


def test_out_of_range_input_is_caller_error():
    inputs = random_inputs(range(4), 3, 8, np.random.default_rng(0))
    inputs[2] = np.array([1, 256, 3], dtype=np.uint64)
    with pytest.raises(ValueError):
        SecAgg().run_round(inputs, bits=8)
    inputs[2] = np.array([1.5, 2.0, 3.0])
    with pytest.raises(ValueError):
        SecAgg().run_round(inputs, bits=8)


def test_protocols_import_and_run_with_torch_unavailable() -> None:
    """`protocols` is usable in FL code without torch: block torch and run a whole round."""
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import sys; sys.modules['torch'] = None\n"  # any `import torch` now raises ImportError
        "import numpy as np\n"
        "from protocols import SecAggPlus, FixedPointEncoder\n"
        "encoder = FixedPointEncoder.for_sum(clip=1.0, max_summands=6, bits=32)\n"
        "inputs = {c: encoder.encode(np.full(50, 0.25)) for c in range(6)}\n"
        "result = SecAggPlus(dropout_rate=0.2).run_round(inputs, bits=32, dropouts={4: 'masked_input'})\n"
        "print(result.contributors, round(float(encoder.decode(result.total)[0]), 3))\n"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root,
                         check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[0] == "(0, 1, 2, 3, 5) 1.25"
