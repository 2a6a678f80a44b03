"""Issue 19 item 1: a node's state blob cannot run code when it is read back.

On the code before the fix ``load_node_state`` was ``pickle.loads``: the first test ran
``os.system``.
"""

import os
import pickle

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from secure_fedrec.engines.flower.codec import dump_node_state, load_node_state


class _Payload:
    def __init__(self, sentinel):
        self.sentinel = sentinel

    def __reduce__(self):
        return os.system, (f"touch {self.sentinel}",)


class _GetattrPayload:
    """The classic escape through an allowed class: getattr(…) to reach a function."""

    def __reduce__(self):
        from protocols.masking import MaskingClient

        return getattr, (MaskingClient, "receive")


def test_a_crafted_blob_does_not_run(tmp_path):
    sentinel = tmp_path / "pwned"
    blob = pickle.dumps({"sessions": _Payload(sentinel)})
    with pytest.raises(pickle.UnpicklingError, match="posix.system|os.system"):
        load_node_state(blob)
    assert not sentinel.exists()


@pytest.mark.parametrize("payload", [_GetattrPayload(), eval, print, np.save, pickle.loads])
def test_no_function_outside_the_allow_list_is_resolved(payload):
    with pytest.raises(pickle.UnpicklingError, match="may not"):
        load_node_state(pickle.dumps({"x": payload}))


def test_a_blob_that_is_not_a_dict_is_refused():
    with pytest.raises(pickle.UnpicklingError, match="a node state is a dict"):
        load_node_state(pickle.dumps([1, 2]))


def test_the_state_a_node_keeps_round_trips():
    from protocols.masking import MaskingClient

    client = MaskingClient(3)
    client.set_input(np.arange(4, dtype=np.uint64))
    identity = Ed25519PrivateKey.generate()
    state = {"private": {3: np.ones((2, 4))}, "sessions": {3: client}, "identities": {3: identity},
             "paillier_registry": {3: identity.public_key()}}
    back = load_node_state(dump_node_state(state))
    np.testing.assert_array_equal(back["private"][3], np.ones((2, 4)))
    assert isinstance(back["sessions"][3], MaskingClient) and back["sessions"][3].client_id == 3
    assert back["identities"][3].public_key() == identity.public_key()
    assert back["paillier_registry"][3] == identity.public_key()
