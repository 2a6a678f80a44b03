"""The shared body of every atheris harness in this directory (see fuzz/README in docs/security.md).

Each ``fuzz_<target>.py`` calls :func:`main` with a name from :data:`targets.TARGETS`.
The project's modules are imported under atheris' instrumentation, so the
fuzzer is coverage-guided through our decoders (and through ``json``/``tomllib``,
which our key and config decoders lean on). An exception outside the target's
documented error types propagates, and libFuzzer records the input as a crash.
"""

from __future__ import annotations

import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "fuzz")]


def main(name: str) -> None:
    import atheris

    with atheris.instrument_imports(include=["protocols", "secure_fedrec.config", "json",
                                             "tomllib"]):
        import json  # noqa: F401
        import tomllib  # noqa: F401

        import protocols.masking
        import protocols.paillier
        import protocols.paillier.encryption
        import protocols.paillier.keys
        import protocols.paillier.messages
        import protocols.paillier.session
        import protocols.paillier.threshold
        import protocols.wire  # noqa: F401
        import secure_fedrec.config  # noqa: F401
    import targets

    target = targets.TARGETS[name]
    target.seeds()  # deal the test keys and record the sessions before fuzzing starts
    allowed = targets.allowed(target)

    def test_one_input(data: bytes) -> None:
        try:
            target.call(data)
        except allowed:
            pass

    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
