"""The short fault-injection soak (CI): every round ends exact or in a typed abort.

The long version is ``benchmarks/soak.py``; its figures are in docs/security.md.
"""

from __future__ import annotations

import numpy as np
import pytest

from protocols.masking.server import MaskingServer
from protocols.testing import faults
from protocols.testing.faults import (
    MASKING_VARIANTS,
    FaultConfig,
    PaillierSoak,
    run_soak,
)


@pytest.fixture(scope="module")
def paillier_soaks():
    return [PaillierSoak("threshold", insecure_for_tests=True),
            PaillierSoak("two_party", insecure_for_tests=True)]


def test_short_soak_has_no_unexplained_outcome(paillier_soaks):
    # A fixed number of rounds, not a time budget: on a loaded CI machine a time
    # budget made the round count (and so what the assertions below see) vary.
    tally = run_soak(list(MASKING_VARIANTS), rounds=300, seed=2024,
                     paillier=paillier_soaks, paillier_every=5)
    summary = tally.as_dict()
    assert summary["other"] == 0, summary["failures"]
    assert tally.rounds == 300
    assert summary["exact"] > tally.rounds // 4 and summary["aborted"] > 0
    for variant in [*MASKING_VARIANTS, "paillier-threshold", "paillier-two-party"]:
        assert summary["by_variant"][variant]["exact"] > 0, variant
    injected = summary["faults_injected"]
    for fault in ("dropouts", "tamper_truncate", "tamper_bitflip", "tamper_replay",
                  "tamper_replay_restamped",
                  "tamper_wrong_session", "tamper_wrong_round", "tamper_low_order_key",
                  "duplicate_up", "late_up"):
        assert injected.get(fault, 0) > 0, fault
    assert injected["oracle_checked"] > 0


def test_honest_rounds_with_dropouts_agree_with_the_oracle():
    calm = FaultConfig(adversary_rate=0, duplicate_rate=0, late_rate=0, downlink_replay_rate=0,
                       dropout_rate=0.2)
    tally = run_soak(list(MASKING_VARIANTS), rounds=80, seed=5, config=calm)
    assert tally.verdicts["other"] == 0, tally.failures
    assert tally.faults["oracle_checked"] == 80


def test_a_wrong_sum_is_classified_as_a_bug(monkeypatch):
    # The classifier must be able to fail: corrupt every released sum by one.
    original = MaskingServer._close_unmask

    def off_by_one(self):
        out = original(self)
        self.result.total[:] += np.uint64(1)
        return out

    monkeypatch.setattr(MaskingServer, "_close_unmask", off_by_one)
    config = FaultConfig(adversary_rate=0, dropout_rate=0, duplicate_rate=0, late_rate=0,
                         downlink_replay_rate=0)
    tally = run_soak(["secagg"], rounds=10, seed=1, config=config)
    assert tally.verdicts["other"] >= 1
    assert all("wrong sum" in failure for failure in tally.failures)


def test_an_untyped_exception_is_classified_as_a_bug(monkeypatch):
    def explode(self, data):
        raise KeyError("not a protocol error")

    monkeypatch.setattr(MaskingServer, "receive", explode)
    tally = run_soak(["secagg+"], rounds=3, seed=1)
    assert tally.verdicts["other"] == 3
    assert "KeyError" in tally.failures[0]


def test_fault_config_validates_its_rates():
    with pytest.raises(ValueError):
        FaultConfig(dropout_rate=1.5)
    with pytest.raises(ValueError):
        FaultConfig(max_clients=1)
    with pytest.raises(ValueError):
        run_soak(["secagg"], seed=0)  # neither rounds nor seconds
    with pytest.raises(ValueError):
        run_soak(["no-such-protocol"], rounds=1)
    assert faults.TAMPERING  # every tampering kind is listed for the docs
