import numpy as np
import pytest

from protocols import BelowThreshold, PlaintextSum, SecureSum


def test_sum_excludes_dropouts_and_is_modular():
    inputs = {i: np.full(3, (1 << 31) + i, dtype=np.uint64) for i in range(4)}
    res = PlaintextSum().run_round(inputs, bits=32, dropouts={2: "upload"})
    expected = sum((1 << 31) + i for i in (0, 1, 3)) % (1 << 32)
    assert res.total.tolist() == [expected] * 3
    assert res.contributors == (0, 1, 3) and res.dropped == (2,)
    assert isinstance(PlaintextSum(), SecureSum)


def test_below_minimum_is_typed_error():
    with pytest.raises(BelowThreshold):
        PlaintextSum(min_clients=3).run_round({0: np.zeros(2, np.uint64)}, bits=16)
