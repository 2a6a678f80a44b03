"""A client's persistent accountant composes the rounds of per-round Opacus engines."""

from __future__ import annotations

import warnings

import opacus
import pytest
import torch

from secure_fedrec.privacy.accounting import ClientAccountants

DELTA = 1e-5


def _train_one_round(model: torch.nn.Module, noise_multiplier: float) -> list[tuple[float, float, int]]:
    """One client round with a fresh PrivacyEngine, as Flower's example does; returns its history."""
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(64, 5, generator=generator)
    targets = torch.randn(64, 1, generator=generator)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(features, targets), batch_size=8)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    engine = opacus.PrivacyEngine(accountant="rdp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        private_model, private_optimizer, private_loader = engine.make_private(
            module=model,
            optimizer=optimizer,
            data_loader=loader,
            noise_multiplier=noise_multiplier,
            max_grad_norm=1.0,
        )
        for x, y in private_loader:
            private_optimizer.zero_grad()
            torch.nn.functional.mse_loss(private_model(x), y).backward()
            private_optimizer.step()
    return list(engine.accountant.history)


def test_per_round_opacus_histories_compose_into_the_clients_accountant():
    clients = ClientAccountants(mechanism="rdp", options={})  # library default orders, as Opacus'
    rounds = []
    for _ in range(3):
        history = _train_one_round(torch.nn.Linear(5, 1), noise_multiplier=1.2)
        rounds.append(history)
        clients.register(3).extend(history)
    single_round = opacus.accountants.RDPAccountant()
    single_round.history = rounds[0]
    whole_run = opacus.accountants.RDPAccountant()
    whole_run.history = [entry for history in rounds for entry in history]
    assert clients[3].total_steps == sum(entry[2] for entry in whole_run.history)
    assert clients.worst_epsilon(DELTA) == pytest.approx(whole_run.get_epsilon(DELTA), rel=0.01)
    assert clients.worst_epsilon(DELTA) > 1.2 * single_round.get_epsilon(DELTA)  # cumulative, not per round
