"""The share-count observer of benchmarks/count_channel.py: it learns more than the shift alone where
the model is wide, and never more than the bound proven for every observer (docs/privacy.md, "The share
count")."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "count_channel.py"


def _module():
    spec = importlib.util.spec_from_file_location("count_channel", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)  # its dataclasses look their module up
    spec.loader.exec_module(sys.modules[spec.name])
    return sys.modules[spec.name]


def test_reading_the_share_count_adds_to_the_shift_and_stays_under_the_proven_bound():
    bench = _module()
    # a small population and a wide model: one share among ~30 is plain in the norm (K·√(2/d) ≈ 0.1)
    cell = bench.Cell("small", users=200, sample_rate=0.15, rounds=4, dim=200_000, threshold_fraction=0.9)
    row = bench.measure(cell, trials=4000, target_epsilon=4.0, seed=0)
    assert row["mean_loss_present"] > 0  # the observer's KL, positive in expectation
    assert row["epsilon_observed"] > row["epsilon_observed_shift_only"]
    assert row["epsilon_observed"] < row["epsilon_participation_revealed"]
    assert row["epsilon_amplified"] < row["epsilon_participation_revealed"]


def test_the_privacy_loss_has_mean_one_under_the_absent_world():
    """E_Q[e^L] = 1 for an exact likelihood ratio: a check on the observer's density."""
    bench = _module()
    observer = bench.CountObserver(others=150, q=0.15, t=11, share_var=0.8**2 / 11, dim=50_000)
    loss = bench.simulate(observer, present=False, trials=40_000, rounds=1, rng=np.random.default_rng(1))
    assert math.isclose(float(np.mean(np.exp(loss))), 1.0, abs_tol=0.03)
