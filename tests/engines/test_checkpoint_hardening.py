"""Issue 19 items 1, 2, 9: a checkpoint cannot run code, a resume must add up, and the file is private.

Each test fails on the code before the fix: checkpoints were torch pickles read with
``torch.load(weights_only=False)``, a checkpoint whose accountant forgot rounds was
resumed (spending a second budget), and the file was written 0644 through a fixed
temporary name.
"""

import io
import json
import os
import pickle
import stat
import zipfile

import numpy as np
import pytest

from secure_fedrec.cli import main
from secure_fedrec.engines.checkpoint import (
    CHECKPOINT_NAME,
    read_checkpoint_state,
    write_checkpoint_state,
)
from secure_fedrec.state_file import StateFileError, dump_state, load_state

SMALL = ["--set", "data.synthetic.n_users=40", "--set", "data.synthetic.n_items=60",
         "--set", "training.clients_per_round=10", "--set", "model.dim=4", "--set", "training.local_epochs=1",
         "--set", "training.checkpoint_every=1", "--set", "aggregation.protocol=plaintext"]
#: user-level DP, central noise: z = 0.56 at q = 0.25 gives ε = 7.81 after 6 rounds and 8.42 after 7,
#: so a target of ε = 8 stops the run after round 6
EPS8 = [*SMALL, "--set", "privacy.unit=user", "--set", "privacy.noise=central", "--set", "training.sampling=poisson",
        "--set", "privacy.noise_multiplier=0.56", "--set", "privacy.target_epsilon=8"]
RECORD = [*SMALL, "--set", "privacy.unit=record", "--set", "privacy.noise=local", "--set", "privacy.noise_multiplier=1.0",
          "--set", "training.straggler_rate=0.3"]


class _Payload:
    """Unpickling this runs ``os.system`` (writes the sentinel file)."""

    def __init__(self, sentinel):
        self.sentinel = sentinel

    def __reduce__(self):
        return os.system, (f"touch {self.sentinel}",)


@pytest.fixture(scope="module")
def eps8_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("eps8") / "run"
    assert main(["run", "--quiet", "--out", str(out), "--set", "training.rounds=8", *EPS8]) == 0
    return out


def _copy(run, tmp_path):
    import shutil

    target = tmp_path / "copy"
    shutil.copytree(run, target)
    return target


def _tamper(folder, change):
    state = read_checkpoint_state(folder / CHECKPOINT_NAME)
    change(state)
    write_checkpoint_state(folder / CHECKPOINT_NAME, state)


# -- item 1: no code runs -------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["checkpoint.npz", "checkpoint.pt"])
def test_a_pickled_checkpoint_is_never_unpickled(eps8_run, tmp_path, capsys, name):
    folder = _copy(eps8_run, tmp_path)
    (folder / CHECKPOINT_NAME).unlink()
    sentinel = tmp_path / "pwned"
    (folder / name).write_bytes(pickle.dumps(_Payload(sentinel)))
    assert main(["run", "--quiet", "--resume", str(folder)]) == 2
    assert not sentinel.exists()
    assert "checkpoint" in capsys.readouterr().err


def test_a_torch_saved_checkpoint_with_a_payload_does_not_run(eps8_run, tmp_path, capsys):
    torch = pytest.importorskip("torch")
    folder = _copy(eps8_run, tmp_path)
    sentinel = tmp_path / "pwned"
    torch.save({"version": 2, "payload": _Payload(sentinel)}, folder / CHECKPOINT_NAME)
    assert main(["run", "--quiet", "--resume", str(folder)]) == 2
    assert not sentinel.exists()
    assert "not a readable checkpoint" in capsys.readouterr().err


def test_an_object_array_inside_the_file_is_refused_unread(tmp_path):
    sentinel = tmp_path / "pwned"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("state.json", json.dumps({"x": {"__array__": "a0"}}))
        with archive.open("a0.npy", "w") as member:
            np.lib.format.write_array(member, np.array([_Payload(sentinel)], dtype=object), allow_pickle=True)
    (tmp_path / "s.npz").write_bytes(buffer.getvalue())
    with pytest.raises(StateFileError, match="object array"):
        load_state(tmp_path / "s.npz")
    assert not sentinel.exists()


def test_corrupt_and_hostile_files_get_a_clean_error(eps8_run, tmp_path, capsys):
    folder = _copy(eps8_run, tmp_path)
    good = (folder / CHECKPOINT_NAME).read_bytes()
    middle = len(good) // 2
    flipped = good[:middle] + bytes([good[middle] ^ 0xFF]) + good[middle + 1:]  # the CRC no longer matches
    for bad in (good[:middle], b"", b"\0" * 100, flipped):
        (folder / CHECKPOINT_NAME).write_bytes(bad)
        assert main(["run", "--quiet", "--resume", str(folder)]) == 2
        assert "checkpoint" in capsys.readouterr().err


def test_an_array_header_larger_than_its_bytes_is_refused_before_allocation(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("state.json", json.dumps({"x": {"__array__": "a0"}}))
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False,
                                                      "shape": (2 ** 40,)})
        archive.writestr("a0.npy", header.getvalue() + b"\0" * 8)
    (tmp_path / "s.npz").write_bytes(buffer.getvalue())
    with pytest.raises(StateFileError, match="header describes"):
        load_state(tmp_path / "s.npz")


def test_state_file_round_trip():
    torch = pytest.importorskip("torch")
    state = {"a": np.arange(5.0), "t": torch.ones(2, 3), "n": None, "f": float("nan"), "l": [1, "x", (2, 3)],
             "d": {"k": np.int64(3)}}
    path_bytes = dump_state(state)
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "s.npz")
        with open(path, "wb") as fh:
            fh.write(path_bytes)
        back = load_state(path)
    np.testing.assert_array_equal(back["a"], state["a"])
    assert isinstance(back["t"], torch.Tensor) and back["t"].shape == (2, 3)
    assert back["n"] is None and np.isnan(back["f"]) and back["l"] == [1, "x", [2, 3]] and back["d"] == {"k": 3}


# -- item 2: the resume must add up ---------------------------------------------------------------
def test_the_issue_scenario_an_emptied_accountant_after_6_rounds_at_epsilon_8_is_refused(eps8_run, tmp_path, capsys):
    metrics = json.loads((eps8_run / "metrics.json").read_text())
    assert len(metrics["rounds"]) == 6 and metrics["privacy"]["epsilon"] == pytest.approx(7.81, abs=0.01)
    folder = _copy(eps8_run, tmp_path)
    _tamper(folder, lambda s: s["privacy"]["accountant"].update(history=[]))
    assert main(["run", "--quiet", "--resume", str(folder)]) == 2
    assert "second privacy budget" in capsys.readouterr().err


def test_an_accountant_shorter_than_the_round_index_is_refused(eps8_run, tmp_path, capsys):
    folder = _copy(eps8_run, tmp_path)
    _tamper(folder, lambda s: s["privacy"]["accountant"]["history"][0].__setitem__(2, 3))
    assert main(["run", "--quiet", "--resume", str(folder)]) == 2
    assert "holds 3 rounds" in capsys.readouterr().err


def test_an_intact_checkpoint_still_resumes_and_stops_at_the_budget(eps8_run, tmp_path):
    folder = _copy(eps8_run, tmp_path)
    assert main(["run", "--quiet", "--resume", str(folder)]) == 0
    metrics = json.loads((folder / "metrics.json").read_text())
    assert len(metrics["rounds"]) == 6 and metrics["privacy"]["epsilon"] <= 8


@pytest.mark.parametrize("round_index", [-1, 9, 10 ** 12, 2.5, True, "6"])
def test_an_out_of_range_round_index_is_refused(eps8_run, tmp_path, capsys, round_index):
    folder = _copy(eps8_run, tmp_path)
    _tamper(folder, lambda s: s.update(round_index=round_index))
    assert main(["run", "--quiet", "--resume", str(folder)]) == 2
    assert "round index" in capsys.readouterr().err


def test_a_metrics_history_that_disagrees_is_refused(eps8_run, tmp_path, capsys):
    folder = _copy(eps8_run, tmp_path)
    _tamper(folder, lambda s: s.update(history=s["history"][:4]))
    assert main(["run", "--quiet", "--resume", str(folder)]) == 2
    assert "metrics history" in capsys.readouterr().err
    folder = _copy(eps8_run, tmp_path / "b")
    _tamper(folder, lambda s: s["history"][-1]["measurements"].update(epsilon=3.0))
    assert main(["run", "--quiet", "--resume", str(folder)]) == 2
    assert "reported" in capsys.readouterr().err


def test_record_level_every_clients_history_is_checked(tmp_path, capsys):
    out = tmp_path / "record"
    assert main(["run", "--quiet", "--out", str(out), "--set", "training.rounds=3", *RECORD]) == 0
    intact = (out / CHECKPOINT_NAME).read_bytes()
    assert main(["run", "--quiet", "--resume", str(out), "--set", "training.rounds=4"]) == 0

    def forget_one_client(state):
        clients = state["privacy"]["client_accountants"]["clients"]
        victim = sorted(clients, key=int)[len(clients) // 2]
        clients[victim]["history"] = []

    for change in (forget_one_client,
                   lambda s: s["privacy"]["client_accountants"]["clients"].clear()):
        (out / CHECKPOINT_NAME).write_bytes(intact)
        _tamper(out, change)
        assert main(["run", "--quiet", "--resume", str(out), "--set", "training.rounds=4"]) == 2
        assert "second privacy budget" in capsys.readouterr().err


# -- item 9: the file is private ------------------------------------------------------------------
def test_the_checkpoint_is_written_0600_whatever_the_umask(eps8_run, tmp_path):
    old = os.umask(0)
    try:
        folder = _copy(eps8_run, tmp_path)
        write_checkpoint_state(folder / CHECKPOINT_NAME, read_checkpoint_state(folder / CHECKPOINT_NAME))
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(folder / CHECKPOINT_NAME).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(eps8_run / CHECKPOINT_NAME).st_mode) == 0o600


def test_every_file_a_run_writes_is_fsynced_and_the_model_is_private_and_pickle_free(tmp_path, monkeypatch):
    """``save_model_atomic`` (model file), the checkpoint and metrics.json go through the fsyncing
    writer; on the code before the fix the model and the checkpoint were ``torch.save`` pickles
    written to a fixed temporary name, never fsynced."""
    synced = []
    real_fsync = os.fsync

    def recording_fsync(fd):
        synced.append(os.path.basename(os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    out = tmp_path / "run"
    old = os.umask(0)
    try:
        assert main(["run", "--quiet", "--out", str(out), "--set", "training.rounds=2", "--set", "privacy.unit=none",
                     *SMALL]) == 0
    finally:
        os.umask(old)
    for name in ("metrics.json", CHECKPOINT_NAME, "model.npz"):
        assert any(s.startswith(f".{name}.") for s in synced), f"{name} was never fsynced: {synced}"
        assert stat.S_IMODE(os.stat(out / name).st_mode) == 0o600, name
    assert "run" in synced  # the folder, after the renames
    assert set(load_state(out / "model.npz")) == {"shared", "layout", "round"}


def test_a_temporary_file_left_by_a_crash_is_removed_by_the_next_checkpoint(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    stale = out / f".{CHECKPOINT_NAME}.0123456789abcdef.tmp"  # what kill -9 during a write leaves
    stale.write_bytes(b"every client's rows")
    assert main(["run", "--quiet", "--out", str(out), "--set", "training.rounds=1", "--set", "privacy.unit=none",
                 *SMALL]) == 0
    assert not stale.exists() and (out / CHECKPOINT_NAME).exists()
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("flags", [0x1, 0x20, 0x40])
def test_zip_members_with_flags_this_format_never_writes_are_refused(tmp_path, flags):
    """Found by tests/fuzz (state_file target): an encrypted or patched member escaped as
    RuntimeError / NotImplementedError."""
    data = bytearray(dump_state({"x": 1}))
    for offset in (6, data.rfind(b"PK\x01\x02") + 8):  # the local header's and the central directory's flags
        data[offset] |= flags
    (tmp_path / "s.npz").write_bytes(bytes(data))
    with pytest.raises(StateFileError):
        load_state(tmp_path / "s.npz")
