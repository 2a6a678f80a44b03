import numpy as np
from scipy import sparse

from protocols import PlaintextSum
from secure_fedrec.engine import CentralGaussianNoise, Clip, ClientUpdates, FloatSum, Mean, QuantizedSecureSum, RoundContext


def _updates(seed=0, k=6, dim=50):
    rng = np.random.default_rng(seed)
    dense = rng.normal(size=(k, dim)) * (rng.random((k, dim)) < 0.2)
    return ClientUpdates(
        client_ids=np.arange(10, 10 + k), matrix=sparse.csr_array(dense), weights=rng.uniform(0.1, 1, k)
    ), dense


def test_weighted_mean_float_sum_matches_numpy():
    updates, dense = _updates()
    out = Mean(FloatSum()).aggregate(updates, RoundContext(0, expected_clients=6))
    # rows already carry their weight: the mean divides by the total weight
    assert np.allclose(out.update, dense.sum(0) / updates.weights.sum())


def test_dropouts_are_excluded():
    updates, dense = _updates()
    ctx = RoundContext(0, expected_clients=6, dropouts={11: "upload"})
    out = Mean(FloatSum()).aggregate(updates, ctx)
    keep = np.arange(6) != 1
    assert out.contributors == tuple(int(c) for c in updates.client_ids[keep])
    assert np.allclose(out.update, dense[keep].sum(0) / updates.weights[keep].sum())


def test_quantized_secure_sum_equals_float_sum_within_quantization():
    updates, dense = _updates()
    layer = QuantizedSecureSum(protocol=PlaintextSum(), coordinate_clip=5.0, bits=40)
    out = layer.sum(updates, RoundContext(0, expected_clients=6))
    step = out.measurements["quantization_step"]
    clipped = np.clip(dense, -5, 5)
    assert np.max(np.abs(out.total - clipped.sum(0))) <= 6 * step
    assert abs(out.weight_total - updates.weights.sum()) <= 6 * step


def test_clip_bounds_every_row():
    updates, dense = _updates()
    seen = {}

    class Spy(FloatSum):
        def sum(self, u, ctx):
            seen["norms"] = u.row_norms()
            return super().sum(u, ctx)

    out = Clip(Spy(), clip_norm=0.5).sum(updates, RoundContext(0, 6))
    assert np.all(seen["norms"] <= 0.5 + 1e-12)
    assert out.measurements["fraction_clipped"] == np.mean(np.linalg.norm(dense, axis=1) > 0.5)


def test_central_noise_has_configured_std():
    k, dim = 2, 200_000
    updates = ClientUpdates(np.arange(k), sparse.csr_array(np.zeros((k, dim))), np.ones(k))
    out = CentralGaussianNoise(FloatSum(), stddev=0.7).sum(updates, RoundContext(0, k))
    # sample std of 2e5 normals has relative std ≈ 1/sqrt(2*2e5) ≈ 0.0016
    assert abs(out.total.std() / 0.7 - 1) < 0.01
    assert abs(out.total.mean()) < 5 * 0.7 / np.sqrt(dim)
