"""Shared pieces of the Flower engine tests: a small job and its in-process reference."""

from __future__ import annotations

import numpy as np
import pytest

from secure_fedrec.config import RunConfig, load_config
from secure_fedrec.engine.inprocess import FederatedTrainer
from secure_fedrec.runner import load_data, make_split

#: Users, items and epochs kept small: the tests are about the engine, not accuracy.
SMALL_JOB = {
    "seed": 7,
    "training.rounds": 2,
    "data.synthetic.n_users": 60,
    "data.synthetic.n_items": 80,
    "training.clients_per_round": 10.0,
    "training.local_epochs": 2,
    # 6 of 10 sampled users must survive: a node of the 3-node tests may die.
    "aggregation.threshold_fraction": 0.6,
}


def small_config(**overrides) -> RunConfig:
    return load_config(None, {**SMALL_JOB, **overrides})


class ScheduledDropouts(FederatedTrainer):
    """The in-process engine with whole nodes (partitions of users) vanishing at given stages.

    ``dead_at``: partition -> (round index, stage) of the request it never
    answered, as the Flower coordinator records it; from the next round on
    (or from this one, if it died at the evaluation after a round) all its
    users drop before the first stage.
    """

    def __init__(self, config, split, *, num_partitions: int,
                 dead_at: dict[int, tuple[int, str]]) -> None:
        super().__init__(config, split)
        self.num_partitions = num_partitions
        self.dead_at = dead_at

    def plan_round(self, round_index):
        sampled, dropouts, stragglers = super().plan_round(round_index)
        for user in sampled.tolist():
            died = self.dead_at.get(user % self.num_partitions)
            if died is None:
                continue
            died_round, stage = died
            if round_index > died_round or (round_index == died_round and stage == "evaluate"):
                dropouts[int(user)] = "advertise_keys"
            elif round_index == died_round:
                dropouts[int(user)] = "advertise_keys" if stage == "upload" else stage
        return sampled, dropouts, stragglers


def reference_params(config: RunConfig, *, num_partitions: int = 1,
                     dead_at: dict[int, tuple[int, str]] | None = None) -> tuple[np.ndarray, FederatedTrainer]:
    split = make_split(config, load_data(config))
    trainer = ScheduledDropouts(config, split, num_partitions=num_partitions, dead_at=dead_at or {})
    trainer.run()
    return trainer.params, trainer


@pytest.fixture
def small_job() -> RunConfig:
    return small_config(**{"aggregation.protocol": "secagg"})
