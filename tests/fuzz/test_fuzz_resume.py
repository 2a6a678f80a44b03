"""Property-based fuzzing of resumes (issue 19 item 2): a checkpoint whose round index, metrics
history or accountants were changed is either refused with a :class:`CheckpointError` or adds up.

The decoders' fuzzers (``test_fuzz_decoders.py``, target ``state_file``) feed the file reader
bytes; this one feeds :func:`load_checkpoint` well-formed checkpoints whose *meaning* was
changed, which a byte fuzzer almost never reaches. "Adds up" is checked from the outside:

* user level: the metrics history is rounds 1 … ``round_index``, the accountant holds
  ``round_index`` steps and the last reported ε is the accountant's ε;
* record level (only the client accountants are changed): a resume is accepted only if every
  client's accountant is exactly what the intact run left.

On the code before the fix every accountant or round-index change was accepted.
"""

from __future__ import annotations

import copy
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from secure_fedrec.cli import main
from secure_fedrec.config import load_config
from secure_fedrec.engines.checkpoint import (
    CHECKPOINT_NAME,
    CheckpointError,
    load_checkpoint,
    read_checkpoint_state,
    write_checkpoint_state,
)
from secure_fedrec.engines.inprocess import FederatedTrainer
from secure_fedrec.runner import load_data, make_split

ROUNDS = 4
SMALL = ["--set", "data.synthetic.n_users=40", "--set", "data.synthetic.n_items=60",
         "--set", "training.clients_per_round=10", "--set", "model.dim=4", "--set", "training.local_epochs=1",
         "--set", "training.checkpoint_every=1", "--set", "aggregation.protocol=plaintext",
         "--set", f"training.rounds={ROUNDS}"]
USER = [*SMALL, "--set", "privacy.unit=user", "--set", "privacy.noise=central", "--set", "training.sampling=poisson",
        "--set", "privacy.noise_multiplier=1.0"]
RECORD = [*SMALL, "--set", "privacy.unit=record", "--set", "privacy.noise=local", "--set", "privacy.noise_multiplier=1.0",
          "--set", "training.straggler_rate=0.3"]
_SETTINGS = {"deadline": None, "derandomize": True, "suppress_health_check": [HealthCheck.too_slow]}


class _Run:
    """A finished run's folder, its intact checkpoint state, and a factory of fresh trainers."""

    def __init__(self, folder):
        self.folder = folder
        self.config = load_config(folder / "config.toml")
        self.split = make_split(self.config, load_data(self.config))
        self.intact = read_checkpoint_state(folder / CHECKPOINT_NAME)

    def resume(self, state, scratch):
        """``load_checkpoint`` of ``state`` into a fresh trainer: the trainer, or the CheckpointError."""
        scratch.mkdir(parents=True, exist_ok=True)
        write_checkpoint_state(scratch / CHECKPOINT_NAME, state)
        trainer = FederatedTrainer(self.config, self.split)
        try:
            load_checkpoint(trainer, scratch)
        except CheckpointError as exc:
            return exc
        return trainer


def _finished_run(tmp_path_factory, name, args):
    out = tmp_path_factory.mktemp(name) / "run"
    assert main(["run", "--quiet", "--out", str(out), *args]) == 0
    return _Run(out)


@pytest.fixture(scope="module")
def user_run(tmp_path_factory):
    return _finished_run(tmp_path_factory, "user", USER)


@pytest.fixture(scope="module")
def record_run(tmp_path_factory):
    return _finished_run(tmp_path_factory, "record", RECORD)


def _user_change(data: st.DataObject, state: dict) -> None:
    kind = data.draw(st.sampled_from(["round_index", "history", "accountant", "epsilon"]))
    if kind == "round_index":
        state["round_index"] = data.draw(st.integers(-2, ROUNDS + 2))
    elif kind == "history":
        start = data.draw(st.integers(0, ROUNDS))
        state["history"] = state["history"][start:data.draw(st.integers(start, ROUNDS + 1))]
    elif kind == "accountant":
        entries = state["privacy"]["accountant"]["history"]
        if entries and data.draw(st.booleans()):
            entry = data.draw(st.integers(0, len(entries) - 1))
            entries[entry] = [*entries[entry][:2], data.draw(st.integers(0, 2 * ROUNDS))]
        else:
            state["privacy"]["accountant"]["history"] = entries[:data.draw(st.integers(0, len(entries)))]
    elif state["history"]:
        last = state["history"][-1]["measurements"]
        last["epsilon"] = last["epsilon"] * data.draw(st.floats(0.0, 2.0))


def test_a_changed_user_level_checkpoint_is_refused_or_adds_up(user_run, tmp_path_factory):
    scratch = tmp_path_factory.mktemp("user-resume")
    tally = {"refused": 0, "accepted": 0}

    @settings(max_examples=40, **_SETTINGS)
    @given(st.data())
    def run(data):
        state = copy.deepcopy(user_run.intact)
        for _ in range(data.draw(st.integers(1, 3))):
            _user_change(data, state)
        outcome = user_run.resume(state, scratch)
        if isinstance(outcome, CheckpointError):
            tally["refused"] += 1
            return
        tally["accepted"] += 1
        plan, history = outcome.privacy, outcome.history
        assert [m.round for m in history] == list(range(1, outcome.round_index + 1))
        assert plan.accountant.total_steps == outcome.round_index
        reported = [m.measurements["epsilon"] for m in history if "epsilon" in m.measurements]
        if reported:
            assert math.isclose(reported[-1], plan.accountant.get_epsilon(plan.delta), rel_tol=1e-6)

    run()
    print(tally)
    assert tally["refused"] > 0


def test_a_changed_record_level_accountant_is_refused(record_run, tmp_path_factory):
    scratch = tmp_path_factory.mktemp("record-resume")
    tally = {"refused": 0, "accepted": 0}
    clients = sorted(record_run.intact["privacy"]["client_accountants"]["clients"], key=int)
    intact_steps = {c: sum(e[2] for e in record_run.intact["privacy"]["client_accountants"]["clients"][c]["history"])
                    for c in clients}

    @settings(max_examples=25, **_SETTINGS)
    @given(st.data())
    def run(data):
        state = copy.deepcopy(record_run.intact)
        accountants = state["privacy"]["client_accountants"]["clients"]
        for _ in range(data.draw(st.integers(1, 3))):
            client = data.draw(st.sampled_from(clients))
            if client in accountants and data.draw(st.booleans()):
                history = accountants[client]["history"]
                accountants[client]["history"] = history[:data.draw(st.integers(0, len(history)))]
            elif client in accountants:
                del accountants[client]
        outcome = record_run.resume(state, scratch)
        if isinstance(outcome, CheckpointError):
            tally["refused"] += 1
            return
        tally["accepted"] += 1
        held = outcome.privacy.client_accountants
        assert {c: held[int(c)].total_steps for c in clients if int(c) in held.client_ids} == {
            c: s for c, s in intact_steps.items()}

    run()
    print(tally)
    assert tally["refused"] > 0
