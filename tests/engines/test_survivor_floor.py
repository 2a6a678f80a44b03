"""Issue 19, item 4 (engine side): a DP round below the plan's ``min_survivors`` aborts inside
the masking protocol, before any unmasking request, and is still charged.

Before the fix the engine built its protocol without the floor: the server unmasked a sum
of fewer noise shares than the accountant assumed and the engine refused it afterwards.
"""

from __future__ import annotations

import numpy as np

import protocols.masking.driver as masking_driver
import protocols.masking.messages as m
from protocols import BelowThreshold
from protocols.testing import FrameLog
from secure_fedrec.config import load_config
from secure_fedrec.engines.inprocess import FederatedTrainer
from secure_fedrec.runner import load_data, make_split

#: user-level distributed DP under SecAgg+: the floor (0.9 × 20 expected clients = 18) is far
#: above SecAgg+'s own neighbourhood threshold, so only the floor can stop the round
DDG = {
    "privacy.unit": "user", "privacy.noise": "distributed", "aggregation.protocol": "secagg+",
    "aggregation.threshold_fraction": 0.9, "data.synthetic.n_users": 60, "data.synthetic.n_items": 60,
    "training.clients_per_round": 20, "training.rounds": 2, "model.dim": 4, "training.local_epochs": 1,
}


def _trainer() -> FederatedTrainer:
    config = load_config(None, DDG)
    return FederatedTrainer(config, make_split(config, load_data(config)))


def _thin_first_round(trainer: FederatedTrainer, monkeypatch) -> int:
    """Make just enough of round 1's trainers vanish before their masked upload that one
    fewer than the floor survives; returns the survivors."""
    floor = trainer.server.privacy.min_survivors
    plan_round = trainer.plan_round

    def thinned(round_index):
        plan = plan_round(round_index)
        trainers = [c for c, _ in plan.trainers]
        assert len(trainers) >= floor, "the seed must sample at least the floor"
        plan.dropouts = {c: "masked_input" for c in trainers[: len(trainers) - floor + 1]}
        return plan

    monkeypatch.setattr(trainer, "plan_round", thinned)
    return floor - 1


def test_a_round_below_the_floor_aborts_inside_the_protocol_before_unmasking(monkeypatch):
    trainer = _trainer()
    floor = trainer.server.privacy.min_survivors
    session = trainer.server.session(floor + 1)
    assert session.masking_params().min_survivors == floor > session.threshold  # what the protocol gets

    frames = FrameLog()
    errors: list[Exception] = []
    run_session = masking_driver.run_session

    def spied(inputs, params, **kwargs):
        assert params.min_survivors == floor
        try:
            return run_session(inputs, params, interceptor=frames, **kwargs)
        except Exception as exc:
            errors.append(exc)
            raise

    monkeypatch.setattr(masking_driver, "run_session", spied)
    survivors = _thin_first_round(trainer, monkeypatch)
    before = trainer.params.copy()
    metrics = trainer.run_round()

    # Typed abort from the protocol's own gate (the engine's check would name "unmasking").
    assert len(errors) == 1 and isinstance(errors[0], BelowThreshold)
    assert (errors[0].survivors, errors[0].threshold, errors[0].stage) == (survivors, floor, "masked_input")
    # No unmasking request left the server; nothing was released.
    assert frames.find(m.MaskedInput)  # the uploads did happen
    assert not frames.find(m.UnmaskRequest)
    assert metrics.contributors == 0 and metrics.measurements["aborted"] == 1.0
    assert metrics.measurements["abort_survivors"] == float(survivors)
    np.testing.assert_array_equal(trainer.params, before)
    # Charged as the accountant requires: the same ε as the same round released in full.
    released = _trainer().run_round()
    assert released.contributors > 0
    assert metrics.measurements["epsilon"] == released.measurements["epsilon"]
    assert metrics.measurements["epsilon"] > 0
