"""Neighbour graphs and the degree/threshold helper."""

from __future__ import annotations

import secrets

import pytest

from protocols.graph import (
    _binomial_tail,
    choose_parameters,
    closed_neighbourhood,
    harary_neighbourhoods,
    ring_order,
)
from protocols.masking import MaskingParams


@pytest.mark.parametrize("n,k", [(10, 2), (11, 4), (50, 8), (7, 6), (40, 39)])
def test_harary_graph_is_k_regular_and_symmetric(n, k):
    ids = [3 * i + 1 for i in range(n)]
    seed = secrets.token_bytes(32)
    hood = harary_neighbourhoods(ids, k, seed)
    for i in ids:
        assert i in hood[i] and len(hood[i]) == k + 1
        for j in hood[i]:
            assert i in hood[j]
        assert closed_neighbourhood(ids, k, seed, i) == hood[i]


def test_ring_order_is_a_seeded_permutation():
    ids = list(range(200))
    seed = secrets.token_bytes(32)
    order = ring_order(ids, seed)
    assert sorted(order) == ids and order == ring_order(list(reversed(ids)), seed)
    assert order != ring_order(ids, secrets.token_bytes(32))


def test_odd_degree_below_complete_is_rejected():
    with pytest.raises(ValueError):
        harary_neighbourhoods(list(range(10)), 3, bytes(32))
    with pytest.raises(ValueError):
        MaskingParams(threshold=2, degree=3, bits=8, vector_length=1).check_population(10)


def test_binomial_tail_matches_exact_sum():
    from math import comb
    exact = sum(comb(20, c) * 0.3**c * 0.7**(20 - c) for c in range(8, 21))
    assert abs(_binomial_tail(20, 0.3, 8) - exact) < 1e-12
    assert _binomial_tail(5, 0.0, 1) == 0.0 and _binomial_tail(5, 0.0, 0) == 1.0


@pytest.mark.parametrize("n", [100, 1000, 10_000])
def test_chosen_parameters_meet_their_targets(n):
    p = choose_parameters(n, dropout_rate=0.1, corrupt_fraction=0.05)
    assert p.degree % 2 == 0 and p.degree < n - 1
    assert 2 * p.threshold > p.degree + 1
    assert p.security_failure <= 2**-40 and p.correctness_failure <= 2**-20
    # Two fewer neighbours would break the graph-connectivity bound (binding for these n;
    # for larger n the correctness bound takes over).
    if n <= 1000:
        assert n * (0.1 + 0.05) ** ((p.degree - 2) // 2) > 2**-40
    MaskingParams(threshold=p.threshold, degree=p.degree, bits=32, vector_length=1)


def test_degree_grows_logarithmically():
    degrees = [choose_parameters(n, dropout_rate=0.1, corrupt_fraction=0.05).degree
               for n in (100, 1000, 10_000, 100_000)]
    assert degrees == sorted(degrees)
    assert degrees[-1] < 2 * degrees[0]  # 1000x more clients, less than 2x the degree


def test_helper_falls_back_to_complete_graph_or_refuses():
    p = choose_parameters(30, dropout_rate=0.05, corrupt_fraction=0.01)
    assert p.degree <= 29
    with pytest.raises(ValueError):
        choose_parameters(10, dropout_rate=0.3, corrupt_fraction=0.2)


def test_params_validation():
    with pytest.raises(ValueError):
        MaskingParams(threshold=5, degree=9, bits=8, vector_length=1)  # not a majority of 10
    with pytest.raises(ValueError):
        MaskingParams(threshold=6, degree=9, bits=8, vector_length=1, active=True)  # < 2/3
    with pytest.raises(ValueError):
        MaskingParams(threshold=6, degree=9, bits=63, vector_length=1)
    with pytest.raises(TypeError):
        MaskingParams(threshold=True, degree=9, bits=8, vector_length=1)
