"""Shared pieces of the Flower engine tests: a small job and its in-process reference."""

from __future__ import annotations

import numpy as np
import pytest

from secure_fedrec.config import RunConfig, load_config
from secure_fedrec.engines.inprocess import FederatedTrainer
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
    # Pinned rather than inherited, so a change of the defaults (private by default)
    # does not change what these tests check; each test overrides what it is about.
    "aggregation.protocol": "secagg",
    "aggregation.bits": 32,
    "privacy.unit": "none",
    "privacy.noise": "central",
    "training.dropout_rate": 0.0,
    "training.straggler_rate": 0.0,
    "training.sampling": "fixed",
    "evaluation.every": 1,
}


#: User-level DP needs Poisson sampling of clients (the accountant assumes it).
USER_DP = {"privacy.unit": "user", "training.sampling": "poisson", "privacy.clip_norm": 0.5,
           "privacy.accountant": "pld", "privacy.delta": 1e-5}
#: Central noise from a fixed multiplier: calibrating to a target ε costs seconds per run.
CENTRAL_DP = {**USER_DP, "privacy.noise": "central", "privacy.target_epsilon": None,
              "privacy.noise_multiplier": 1.0}
DISTRIBUTED_DP = {**USER_DP, "privacy.noise": "distributed", "privacy.target_epsilon": 8.0,
                  "aggregation.protocol": "secagg+"}
RECORD_DP = {"privacy.unit": "record", "privacy.noise": "local", "privacy.noise_multiplier": 1.0,
             "privacy.record_batch_size": 8, "privacy.delta": 1e-5, "privacy.target_epsilon": 20.0,
             "privacy.grad_sample_mode": "bookkeeping"}
#: Record-level DP-SGD with distributed noise: every user in every round, one step a round.
RECORD_DISTRIBUTED_DP = {"privacy.unit": "record", "privacy.noise": "distributed", "privacy.target_epsilon": 4.0,
                         "privacy.delta": 1e-5, "aggregation.protocol": "secagg+", "training.rounds": 3,
                         "evaluation.every": 3}
#: Packed Paillier encrypts ~56 coordinates per 2048-bit ciphertext: a tiny model keeps it fast.
PAILLIER_JOB = {"aggregation.protocol": "paillier", "aggregation.paillier_key_bits": 2048,
                "model.dim": 4, "data.synthetic.n_items": 40,
                "data.synthetic.mean_ratings_per_user": 15.0}


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
        plan = super().plan_round(round_index)
        dropouts = plan.dropouts
        # advertise_keys (masking), masked_input (a key session's round), announce (Paillier)
        first = self.protocol_stages()[0]
        # Under a key session every member on a dead node vanishes too, sampled or not.
        users = self.population.tolist() if self.server.key_rounds > 1 else plan.sampled.tolist()
        for user in users:
            died = self.dead_at.get(user % self.num_partitions)
            if died is None:
                continue
            died_round, stage = died
            if round_index > died_round or (round_index == died_round and stage == "evaluate"):
                dropouts[int(user)] = first
            elif round_index == died_round:
                dropouts[int(user)] = first if stage == "upload" else stage
        return plan


def reference_params(config: RunConfig, *, num_partitions: int = 1,
                     dead_at: dict[int, tuple[int, str]] | None = None) -> tuple[np.ndarray, FederatedTrainer]:
    split = make_split(config, load_data(config))
    trainer = ScheduledDropouts(config, split, num_partitions=num_partitions, dead_at=dead_at or {})
    trainer.run()
    return trainer.params, trainer


@pytest.fixture
def small_job() -> RunConfig:
    return small_config(**{"aggregation.protocol": "secagg"})
