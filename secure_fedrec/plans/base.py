"""What every privacy plan is: how clients train, how updates are aggregated, how rounds are accounted.

A plan is built once per run from the configuration and public facts about the
population (:class:`Population`); it is one of a closed set of types
(:func:`secure_fedrec.plans.build_privacy_plan`):

=========================  ===========================  ===============================  ==========================
plan                       client (training, halves)    server halves                    accountant
=========================  ===========================  ===============================  ==========================
:class:`NoPrivacy`         local epochs; weight;        decode; weighted mean            none
                           quantize
:class:`UserCentral`       local epochs; clip (fixed    decode; Gaussian noise;          PLD/RDP, one step a round
                           or adaptive); quantize       mean over E[clients]
:class:`UserDistributed`   local epochs; clip; round    signed decode; mean over         DDG RDP, one step a round
                           and add a noise share        E[clients]
:class:`RecordLocal`       DP-SGD; weight; quantize     decode; weighted mean            one RDP per client
=========================  ===========================  ===============================  ==========================

and the fifth, :class:`RecordDistributed`: every round one DP-SGD step of all clients
(joint clipping, each example rounded on its own; the private rows noised on the
client), a discrete Gaussian share per client, the mean over the public expected
batch; one population accountant (the DDG's RDP, symmetric subsampling bound).

The plan owns the privacy state of a run: its accountant(s), the budget guard, and
the current states of its aggregation layers (the adaptive clip norm), which is why
it also writes and restores them (``state_dict``).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..aggregation import (
    AggregationPipeline,
    Encoding,
    FloatEncoding,
    Layer,
    Measurements,
    QuantizedEncoding,
    SessionPolicy,
)
from ..config import RunConfig
from ..privacy.calibration import default_delta
from ..training.local import LocalTraining
from ..training.methods import DpSgdStep, LocalEpochs, TrainingMethod

__all__ = ["PROTOCOL_NAMES", "TOLERANCE", "Population", "PrivacyPlan", "local_training", "ring_encoding"]

#: how a statement names each aggregation protocol
PROTOCOL_NAMES = {"secagg+": "SecAgg+ masking", "secagg": "SecAgg masking",
                  "paillier": "threshold-Paillier encryption", "plaintext": "plaintext (non-secure) aggregation"}

#: relative slack so that a calibrated ε equal to the target is not refused
TOLERANCE = 1e-9


@dataclass(frozen=True)
class Population:
    """Public facts about a run's population that a plan is computed from."""

    n_users: int  # clients that can be sampled (users with training data)
    expected_clients: float  # E[clients per round]
    dim: int  # shared parameters of the model
    #: record level: each client's number of DP-SGD examples (its sampling rate and steps)
    client_examples: Sequence[int] = (1,)
    #: record level: ratings in the training data, the N of the default δ = min(1/(10N), N^-1.1)
    n_records: int | None = None
    #: record level, distributed noise: shared coordinates one example's gradient can touch
    example_dim: int | None = None

    @property
    def sample_rate(self) -> float:
        return min(1.0, self.expected_clients / max(1, self.n_users))


def local_training(config: RunConfig) -> LocalTraining:
    """The client's plain local-training settings (``training.*``)."""
    t = config.training
    return LocalTraining(epochs=t.local_epochs, batch_size=t.batch_size, lr=t.lr, optimizer=t.optimizer,
                         reg=t.reg, negatives=t.negatives)


def ring_encoding(config: RunConfig, coordinate_clip: float) -> Encoding:
    """The encoding the run's protocol adds: floats for plaintext, else fixed point."""
    if config.aggregation.protocol == "plaintext":
        return FloatEncoding()
    return QuantizedEncoding(coordinate_clip=coordinate_clip, bits=config.aggregation.bits)


class PrivacyPlan(ABC):
    """The privacy mechanism of one run (see the module docstring for the closed set)."""

    unit: ClassVar[str]

    def __init__(self, config: RunConfig, population: Population) -> None:
        self.config = config
        self.population = population
        self.stopped_reason: str | None = None
        p = config.privacy
        # δ = min(1/(10N), N^-1.1) for N privacy units (privacy/calibration.py: default_delta):
        # users at user level, ratings at record level
        units = population.n_records if self.unit == "record" and population.n_records else population.n_users
        self.delta: float = p.delta if p.delta is not None else default_delta(units)
        self._calibrate()
        self.training: TrainingMethod = self._training()
        self.pipeline = AggregationPipeline(layers=self._layers(), encoding=self._encoding())
        #: the aggregation layers' current states (the server's; sent to clients each round)
        self.layer_states: tuple[Any, ...] = self.pipeline.initial_states()

    # -- what the plan builds ------------------------------------------------------------------
    def _calibrate(self) -> None:
        """Compute the mechanism's parameters (noise, clipping) before anything is built."""

    def _training(self) -> TrainingMethod:
        return LocalEpochs(local_training(self.config))

    @abstractmethod
    def _layers(self) -> tuple[Layer, ...]: ...

    @abstractmethod
    def _encoding(self) -> Encoding: ...

    @property
    def enabled(self) -> bool:
        return True

    @property
    def noise(self) -> str:
        """Where the noise is added (``config.privacy.noise``; record level: each client's DP-SGD)."""
        return self.config.privacy.noise

    @property
    def expected_clients(self) -> float:
        return self.population.expected_clients

    @property
    def min_survivors(self) -> int:
        """The fewest contributors whose sum may be released (1: no floor beyond the protocol's)."""
        return 1

    @property
    def every_client(self) -> bool:
        """Whether every client uploads in every round (no client sampling the server knows of)."""
        return False

    @property
    def private_sampling_rate(self) -> float | None:
        """The rate of each client's own participation coin when every client uploads but takes
        part only by that coin (user level, private sampling); ``None`` otherwise."""
        return None

    def server_optimizer_spec(self) -> tuple[str, float, float] | None:
        """The server optimizer the mechanism prescribes, ``(name, lr, weight_decay)``; ``None``:
        the run's ``training.server_optimizer``."""
        return None

    @property
    def reports_loss(self) -> bool:
        """Whether clients report their training loss: a function of their data no mechanism covers."""
        return not self.enabled

    def session_policy(self) -> SessionPolicy:
        agg = self.config.aggregation
        return SessionPolicy(
            protocol=agg.protocol, threshold_fraction=agg.threshold_fraction,
            dropout_rate=self.config.training.dropout_rate, min_survivors=self.min_survivors,
            paillier_min_clients=max(2, self.min_survivors,
                                     math.floor(agg.threshold_fraction * self.expected_clients)))

    # -- a round ---------------------------------------------------------------------------------
    def can_run_round(self) -> bool:
        """Whether one more round keeps ε within the target (sets :attr:`stopped_reason` if not)."""
        return True

    def client_may_train(self, client: int, num_examples: int) -> bool:
        """Record level: a client abstains once another round would exceed its own budget."""
        return True

    def charge_client(self, client: int, spent: DpSgdStep) -> None:
        """Record level: charge the DP-SGD steps a client ran to its own accountant."""

    def record_release(self, noise_bearing: int) -> None:
        """Note how many noise-bearing contributors the round's released sum carried (0: it released
        nothing), before :meth:`after_round` charges the round. Plans whose noise is the sum of the
        contributors' shares may charge the round at that count after the fact."""

    def after_round(self) -> Measurements:
        """Charge one round (whatever it released) and report ε."""
        return {}

    # -- reporting and persistence -------------------------------------------------------------------
    @abstractmethod
    def summary(self) -> dict[str, Any]: ...

    def known_participation(self, rounds_per_client: np.ndarray) -> dict[str, Any]:
        """What the guarantee is for an observer who knows which clients took part in which
        round (``rounds_per_client``: rounds each client was sampled in). Only plans that claim
        amplification by client sampling have something to say."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {"unit": self.unit, "noise": self.noise, "delta": self.delta}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("unit") != self.unit or state.get("noise") != self.noise:
            raise ValueError("the checkpoint's privacy unit or noise placement differs from this run's")
