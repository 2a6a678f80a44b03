"""Issue 19 item 9: private files are created 0600, exclusively, never through a symlink, and fsynced."""

import os
import stat

import pytest

from secure_fedrec import outputs
from secure_fedrec.outputs import (
    write_bytes_atomic,
    write_json_atomic,
    write_text_atomic,
)


def test_private_files_are_0600_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        write_bytes_atomic(tmp_path / "a.bin", b"secret")
        write_text_atomic(tmp_path / "b.txt", "secret")
        write_json_atomic(tmp_path / "c.json", {"x": 1})
    finally:
        os.umask(old)
    for name in ("a.bin", "b.txt", "c.json"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o600


def test_an_existing_world_readable_file_does_not_keep_its_mode(tmp_path):
    path = tmp_path / "share.json"
    path.write_text("old")
    os.chmod(path, 0o644)
    write_bytes_atomic(path, b"new")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600 and path.read_bytes() == b"new"


def test_a_planted_symlink_at_the_temporary_name_is_refused(tmp_path, monkeypatch):
    target = tmp_path / "victim"
    target.write_text("untouched")
    monkeypatch.setattr(outputs.secrets, "token_hex", lambda n: "fixed")
    os.symlink(target, tmp_path / ".out.bin.fixed.tmp")
    with pytest.raises(FileExistsError):
        write_bytes_atomic(tmp_path / "out.bin", b"secret")
    assert target.read_text() == "untouched" and not (tmp_path / "out.bin").exists()


def test_a_symlink_at_the_destination_is_replaced_not_written_through(tmp_path):
    target = tmp_path / "victim"
    target.write_text("untouched")
    os.symlink(target, tmp_path / "out.bin")
    write_bytes_atomic(tmp_path / "out.bin", b"secret")
    assert target.read_text() == "untouched"
    assert not (tmp_path / "out.bin").is_symlink() and (tmp_path / "out.bin").read_bytes() == b"secret"


def test_the_data_and_the_folder_are_fsynced_before_and_after_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(outputs.os, "fsync", lambda fd: (events.append(("fsync", os.path.isdir(f"/proc/self/fd/{fd}"))), real_fsync(fd))[1])
    monkeypatch.setattr(outputs.os, "replace", lambda a, b: (events.append(("replace", None)), real_replace(a, b))[1])
    write_bytes_atomic(tmp_path / "x", b"1")
    assert events == [("fsync", False), ("replace", None), ("fsync", True)]


def test_a_failed_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    def boom(fd):
        raise OSError("disk full")

    monkeypatch.setattr(outputs.os, "fsync", boom)
    with pytest.raises(OSError, match="disk full"):
        write_bytes_atomic(tmp_path / "x", b"1")
    assert list(tmp_path.iterdir()) == []
