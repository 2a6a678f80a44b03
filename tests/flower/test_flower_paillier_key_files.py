"""Issue 19 item 9: the dealer's key-share files are fresh 0600 files, never an old file truncated
with its old mode, never written through a symlink."""

import os
import stat
from types import SimpleNamespace

from secure_fedrec.engines.flower import paillier
from secure_fedrec.engines.flower.paillier import PUBLIC_FILE, deal_paillier_keys

from .conftest import PAILLIER_JOB, small_config


def _fake_deal(bits, *, threshold, parties):
    share = lambda i: SimpleNamespace(index=i, to_json=lambda: f'{{"share": {i}}}')
    return SimpleNamespace(params=SimpleNamespace(to_json=lambda: '{"public": 1}'),
                           shares=[share(i) for i in range(1, parties + 1)])


def test_shares_are_fresh_private_files(tmp_path, monkeypatch):
    from protocols.paillier import threshold

    monkeypatch.setattr(threshold, "deal_threshold_keys", _fake_deal)
    old_share = tmp_path / "share-1.json"
    old_share.write_text("old")
    os.chmod(old_share, 0o644)  # a world-readable leftover: O_TRUNC kept this mode
    victim = tmp_path / "victim"
    victim.write_text("untouched")
    os.symlink(victim, tmp_path / "share-2.json")
    old = os.umask(0)
    try:
        deal_paillier_keys(small_config(**PAILLIER_JOB), tmp_path)
    finally:
        os.umask(old)
    for index in range(1, paillier.KEY_HOLDERS + 1):
        path = tmp_path / f"share-{index}.json"
        assert not path.is_symlink()
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert path.read_text() == f'{{"share": {index}}}'
    assert victim.read_text() == "untouched"
    assert stat.S_IMODE(os.stat(tmp_path / PUBLIC_FILE).st_mode) == 0o644
