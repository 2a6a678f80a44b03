"""Property-based fuzzing of every decoder that takes bytes from outside (the CI companion of fuzz/).

Arbitrary bytes, and valid messages mutated (truncated, extended, bit-flipped,
spliced), may only raise each decoder's documented error types; the table of
decoders and their contracts is ``fuzz/targets.py``, shared with the atheris
harnesses. Plus one regression test per bug the fuzzers found.
"""

from __future__ import annotations

import importlib.util
import pathlib
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols.errors import MalformedMessage

_PATH = pathlib.Path(__file__).resolve().parents[2] / "fuzz" / "targets.py"
_spec = importlib.util.spec_from_file_location("sfr_fuzz_targets", _PATH)
targets = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = targets  # dataclasses resolve annotations through sys.modules
_spec.loader.exec_module(targets)

#: Examples per target: the party targets build fresh parties (key generation) per input.
_BUDGET = {"masking_parties": 60, "paillier_parties": 60, "config_toml": 80, "state_file": 400}
_FAST = 250
_SETTINGS = {"deadline": None,
             "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large]}


def _mutate(data: st.DataObject, seed: bytes) -> bytes:
    buf = bytearray(seed)
    for _ in range(data.draw(st.integers(1, 3))):
        op = data.draw(st.sampled_from(["truncate", "extend", "flip", "splice", "set"]))
        if op == "truncate" and buf:
            del buf[data.draw(st.integers(0, len(buf) - 1)):]
        elif op == "extend":
            buf += data.draw(st.binary(min_size=1, max_size=16))
        elif op == "flip" and buf:
            pos = data.draw(st.integers(0, len(buf) - 1))
            buf[pos] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "set" and buf:
            buf[data.draw(st.integers(0, len(buf) - 1))] = data.draw(
                st.sampled_from([0, 1, 0x7F, 0x80, 0xFF]))
        else:
            pos = data.draw(st.integers(0, len(buf)))
            buf[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
    return bytes(buf)


@pytest.mark.parametrize("name", sorted(targets.TARGETS))
def test_arbitrary_bytes_raise_only_documented_errors(name):
    target = targets.TARGETS[name]

    @settings(max_examples=_BUDGET.get(name, _FAST) // 2, **_SETTINGS)
    @given(st.binary(max_size=300))
    def run(data):
        targets.check(target, data)

    run()


@pytest.mark.parametrize("name", sorted(targets.TARGETS))
def test_mutated_valid_inputs_raise_only_documented_errors(name):
    target = targets.TARGETS[name]
    seeds = target.seeds()
    for seed in seeds:  # the unmutated seeds are valid: they must decode
        target.call(seed)

    @settings(max_examples=_BUDGET.get(name, _FAST), **_SETTINGS)
    @given(st.sampled_from(seeds), st.data())
    def run(seed, data):
        targets.check(target, _mutate(data, seed))

    run()


def test_the_check_lets_undocumented_errors_through():
    # The harness must be able to fail: an exception outside the contract escapes.
    boom = targets.Target("boom", lambda data: {}[data], (MalformedMessage,), lambda: [b""], "")
    with pytest.raises(KeyError):
        targets.check(boom, b"x")


# -- regression tests, one per finding (see fuzz/run_all.py FIXED) ----------------------------
def test_partial_decryption_index_zero_is_malformed():
    from protocols.paillier.messages import PartialDecryptionMessage
    from protocols.wire import Writer

    for index in (0, 255):
        body = Writer().u8(index).blob(b"\x01" * 8).bigint(1).bigint(2).bigint(3).getvalue()
        with pytest.raises(MalformedMessage):
            PartialDecryptionMessage.parse(body, partials_size=8, key_bytes=64)


def test_aggregator_survives_a_partial_decryption_with_index_zero():
    from protocols.paillier.messages import PartialDecryptionMessage
    from protocols.wire import HEADER_SIZE

    frames = targets._paillier_setup()[2]
    partial = next(f for f in frames if f[6] == PartialDecryptionMessage.kind)
    bad = partial[:HEADER_SIZE] + b"\x00" + partial[HEADER_SIZE + 1:]
    targets.check(targets.TARGETS["paillier_parties"], bad)  # only ProtocolError inside


def test_deeply_nested_key_document_is_a_value_error():
    from protocols.paillier import PaillierPublicKey
    from protocols.paillier.threshold import ThresholdKeySet

    for decoder in (PaillierPublicKey, ThresholdKeySet):
        with pytest.raises(ValueError, match="nested"):
            decoder.from_json("[" * 100_000, insecure_for_tests=True)


def test_config_file_that_is_not_utf8_is_a_config_error(tmp_path):
    from secure_fedrec.config import ConfigError, load_config

    path = tmp_path / "bad.toml"
    path.write_bytes(b'seed = 1\nengine = "\xff\xfe"\n')
    with pytest.raises(ConfigError, match="UTF-8"):
        load_config(path)


def test_deeply_nested_config_is_a_config_error(tmp_path):
    from secure_fedrec.config import ConfigError, load_config

    path = tmp_path / "deep.toml"
    path.write_text("a = " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError, match="nested"):
        load_config(path)
