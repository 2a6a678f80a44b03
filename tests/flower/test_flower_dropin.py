"""protocols.flower, the drop-in for other Flower apps: its pieces, and the example app on Flower."""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from protocols.errors import EncodingError
from protocols.flower.state import dump_party, load_party
from protocols.flower.weighted import WeightedEncoding

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "flower-secure-numpy"


def test_weighted_encoding_gives_the_fedavg_mean():
    rng = np.random.default_rng(0)
    shapes = [(3, 2), (1,)]
    nodes = [[rng.uniform(-2, 2, s) for s in shapes] for _ in range(3)]
    examples = [10, 40, 2500]  # the last is capped at max_weight
    encoding = WeightedEncoding(clip=8.0, max_weight=1000.0, bits=32, summands=4)
    vectors = [encoding.encode(arrays, n) for arrays, n in zip(nodes, examples)]
    vectors.append(np.zeros(WeightedEncoding.length(shapes), dtype=np.uint64))  # a member that did not train
    total = encoding.encoder().ring_sum(vectors)
    mean, weight = encoding.decode(total, shapes)
    w = np.minimum(examples, 1000) / 1000
    for k, shape in enumerate(shapes):
        expected = sum(wi * arrays[k] for wi, arrays in zip(w, nodes)) / w.sum()
        np.testing.assert_allclose(mean[k], expected, atol=1e-6)
        assert mean[k].shape == shape
    assert weight == pytest.approx(w.sum(), abs=1e-6)


@pytest.mark.parametrize("bad", [{"clip": float("nan")}, {"max_weight": 0.0}, {"summands": 0},
                                 {"bits": 70}, {"bits": 8, "summands": 1000}])
def test_weighted_encoding_refuses_bad_parameters(bad):
    with pytest.raises((ValueError, EncodingError)):
        WeightedEncoding(**bad)


def test_a_nan_update_or_weight_is_refused():
    encoding = WeightedEncoding(summands=2)
    with pytest.raises(EncodingError):
        encoding.encode([np.array([np.nan])], 5)
    with pytest.raises(EncodingError):
        encoding.encode([np.array([1.0])], float("inf"))


def test_a_party_survives_the_state_round_trip():
    from protocols.masking import MaskingClient, MaskingServer, params_for

    params = params_for(3, bits=16, vector_length=4)
    server = MaskingServer(params, [0, 1, 2])
    parties = {c: MaskingClient(c) for c in range(3)}
    for party in parties.values():
        party.set_input(np.arange(4, dtype=np.uint64))
    outgoing = server.start()
    for _ in range(4):
        parties = {c: load_party(dump_party({"party": p}))["party"] for c, p in parties.items()}
        for cid, frame in outgoing:
            for reply in parties[cid].receive(frame):
                server.receive(reply)
        outgoing = server.advance()
    np.testing.assert_array_equal(server.result.total, 3 * np.arange(4, dtype=np.uint64))


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_the_state_loader_runs_no_foreign_code():
    """Only the classes a party is made of may be named: os.system (or any getattr) is refused."""
    blob = pickle.dumps({"party": _Evil()})
    with pytest.raises(pickle.UnpicklingError, match="not part of"):
        load_party(blob)
    sneaky = io.BytesIO()
    pickle.dump({"x": getattr}, sneaky)  # builtins.getattr itself, used on another object
    with pytest.raises(pickle.UnpicklingError):
        loaded = load_party(sneaky.getvalue())
        loaded["x"](os, "system")
    with pytest.raises(pickle.UnpicklingError, match="dict"):
        load_party(pickle.dumps([1, 2]))


def _global_then_call(module: str, name: str, argument: bytes) -> bytes:
    """A pickle naming ``module`` + ``name`` (STACK_GLOBAL) and calling it on ``argument``."""
    def text(value: str) -> bytes:
        return b"\x8c" + bytes([len(value)]) + value.encode()

    return (b"\x80\x04" + text(module) + text(name) + b"\x93" + b"B" + len(argument).to_bytes(4, "little")
            + argument + b"\x85R.")


@pytest.mark.parametrize("module_and_name", [
    ("protocols.flower.state", "pickle.loads"),  # the real pickle.loads, through this module's import
    ("protocols.masking.messages", "functools.partial"),
    ("protocols.api", "np.save"),
    ("protocols.flower.state", "dump_party"),  # a function of the package, not a class
])
def test_a_dotted_name_or_a_function_of_the_package_is_refused(tmp_path, module_and_name):
    """Issue 19 item 1 (found in review): the allow-list took any global of a ``protocols``
    module, and a dotted name walks attributes, so ``pickle.loads`` was reachable and an inner
    pickle ran ``os.system``. Both node-state loaders must refuse it."""
    from secure_fedrec.engines.flower.codec import load_node_state

    sentinel = tmp_path / "ran"
    inner = pickle.dumps(_Touch(sentinel))
    blob = _global_then_call(*module_and_name, inner)
    for loader in (load_party, load_node_state):
        with pytest.raises(pickle.UnpicklingError):
            loader(blob)
    assert not sentinel.exists()


class _Touch:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def test_the_mod_checks_every_field_of_a_request():
    pytest.importorskip("flwr")
    from flwr.app import ConfigRecord

    from protocols.flower.mod import _Request

    good = {"kind": "relay", "party": 3, "frame": b"x", "train": False, "clip": 8.0, "max_weight": 1000.0,
            "bits": 32, "summands": 3, "length": 11, "weight_key": "num-examples"}
    assert _Request.parse(ConfigRecord(good)).party == 3
    for bad in ({"kind": "steal"}, {"party": -1}, {"party": True}, {"length": 0}, {"bits": 99},
                {"frame": "text"}, {"clip": float("inf")}, {"train": 1}):
        with pytest.raises(ValueError):
            _Request.parse(ConfigRecord({**good, **bad}))


def test_sans_io_example_runs():
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "sans_io_secure_sum.py")], capture_output=True,
                         text=True, timeout=120, check=False, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    assert "dropped (4,)" in out.stdout and "round 1: contributors (1, 2, 3, 4)" in out.stdout
    errors = [float(line.split("error")[-1]) for line in out.stdout.splitlines() if "error" in line]
    assert len(errors) == 4 and max(errors) < 1e-6


RUNNER = """
import json, sys
from secure_fedrec.engines.flower.launcher import LocalFederation
work, costs, app = sys.argv[1], sys.argv[2], sys.argv[3]
run_config = json.loads(sys.argv[4])
with LocalFederation("sim", 3, work) as federation:
    run = federation.submit_app(app, {**run_config, "costs-file": costs})
    code = federation.wait_for_exit(run, 600)
    if code != 0:
        print(federation.logs(80)); sys.exit(code)
"""


def fedavg_reference(rounds: int, size: int, examples: int, steps: int, lr: float) -> list[np.ndarray]:
    """The example's FedAvg computed here, without Flower: what secure aggregation must release."""
    sys.path.insert(0, str(EXAMPLE))
    try:
        from secure_numpy.task import initial_parameters, load_data, train
    finally:
        sys.path.remove(str(EXAMPLE))
    data = [load_data(p, size, examples) for p in range(3)]
    params = initial_parameters(size)
    for _ in range(rounds):
        updates = [(train(params, x, y, steps, lr), len(y)) for x, y in data]
        total = sum(n for _, n in updates)
        params = [sum(u[k] * n for u, n in updates) / total for k in range(2)]
    return params


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("flower-superlink") is None and os.environ.get("CI") != "true",
                    reason="Flower CLI not installed")
def test_the_example_app_with_our_secure_aggregation_on_flower_simulation(tmp_path):
    """Our mod and workflow in a plain NumPy Flower app, key sessions of 2 rounds: FedAvg's result
    (up to quantization), two exchanges in a steady round, four with the key setup."""
    from .test_flower_runtime import _leftovers, _loopback_only_prefix

    work, costs = tmp_path / "work", tmp_path / "costs.json"
    run_config = {"aggregation": "ours", "key-rounds": 2, "num-server-rounds": 4, "model-size": 50}
    cmd = [*_loopback_only_prefix(), sys.executable, "-c", RUNNER, str(work), str(costs), str(EXAMPLE),
           json.dumps(run_config)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    finally:
        deadline = time.monotonic() + 15
        while _leftovers(str(work)) and time.monotonic() < deadline:
            time.sleep(0.5)
        left = _leftovers(str(work))
        for pid in left:
            os.kill(pid, 9)
        assert not left, f"processes left running after the run: {left}"
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(costs.read_text())
    assert [r["exchanges"] for r in result["rounds"]] == [4, 2, 4, 2]  # fit only (evaluate is Flower's)
    assert [r["setup"] for r in result["rounds"]] == [True, False, True, False]
    assert all(r["contributors"] == 3 for r in result["rounds"])
    weights, bias = fedavg_reference(4, 50, 40, 5, 0.5)
    np.testing.assert_allclose(result["final_parameters"], [bias[0], *weights[:8]], atol=1e-5)
