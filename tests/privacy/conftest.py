"""Shared fixtures for the privacy tests."""

from __future__ import annotations

import os

import numpy as np
import pytest


@pytest.fixture
def seeded_urandom(monkeypatch: pytest.MonkeyPatch):
    """Replace ``os.urandom`` by a seeded generator so statistical tests are reproducible.

    Production code always reads the real CSPRNG; only the tests pin it.
    """

    def install(seed: int) -> None:
        generator = np.random.default_rng(seed)
        monkeypatch.setattr(os, "urandom", lambda n: generator.bytes(n))

    return install
