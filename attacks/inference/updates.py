"""Server-side inference of a user's rated items from what the server observes
(in the spirit of IMIA, Yuan et al. 2023).

In federated matrix factorisation a client's update to the item table is
non-zero exactly on the rows of items it trained on (its rated items, plus any
sampled negatives), so a curious server that sees the update reads the rated
items off the row norms. What the server *observes* depends on the protocol:

=================  ==========================================  ===================================
protocol           server sees                                 observation to pass here
=================  ==========================================  ===================================
plaintext          each client's update                        :class:`ClientUpdateObservation`
masking (SecAgg)   masked updates + the unmasked sum           :class:`AggregateObservation`
Paillier           ciphertexts + the decrypted sum             :class:`AggregateObservation`
=================  ==========================================  ===================================

A masked update is the encoded update plus a pseudorandom mask in Z_{2^b}: as
long as the masks are secret, it is uniformly distributed whatever the update,
and Paillier ciphertexts are IND-CPA under the DCR assumption. Neither carries
information about the target beyond the sum the server is meant to learn, so
the attack against those protocols is exactly the attack on the aggregate.
(Feeding a masked vector to :class:`ClientUpdateObservation` anyway is a
useful sanity check: it scores like chance.)

From the aggregate alone the server can rank items only by how much the whole
cohort moved them; for a single target this reveals the cohort's taste, and it
identifies the target's items exactly when the target is the only contributor.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..metrics import roc_auc

__all__ = [
    "AggregateObservation",
    "ClientUpdateObservation",
    "ItemInferenceResult",
    "UpdateInferenceAttack",
    "evaluate_item_inference",
    "server_observation",
]

_PROTOCOLS = ("plaintext", "masking", "secagg", "paillier")


def _check_table(name: str, table: np.ndarray) -> np.ndarray:
    arr = np.asarray(table, dtype=float)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[0] < 1:
        raise ValueError(f"{name} must be an (n_items, dim) array, got shape {np.shape(table)}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


@dataclass(frozen=True)
class ClientUpdateObservation:
    """The target's own item-table update, as the server receives it in plaintext."""

    update: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "update", _check_table("update", self.update))

    @classmethod
    def from_upload(
        cls, uploaded_table: np.ndarray, broadcast_table: np.ndarray
    ) -> ClientUpdateObservation:
        """For clients that upload their whole local item table: the update is the
        difference from the table the server broadcast."""
        up, down = (
            _check_table("uploaded_table", uploaded_table),
            _check_table("broadcast_table", broadcast_table),
        )
        if up.shape != down.shape:
            raise ValueError("uploaded and broadcast tables differ in shape")
        return cls(up - down)

    @property
    def n_items(self) -> int:
        return self.update.shape[0]


@dataclass(frozen=True)
class AggregateObservation:
    """Only the sum of ``num_contributors`` updates (secure aggregation)."""

    aggregate: np.ndarray
    num_contributors: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "aggregate", _check_table("aggregate", self.aggregate))
        if int(self.num_contributors) < 1:
            raise ValueError("num_contributors must be at least 1")

    @property
    def n_items(self) -> int:
        return self.aggregate.shape[0]


Observation = ClientUpdateObservation | AggregateObservation


def server_observation(
    protocol: str,
    *,
    target_update: np.ndarray | None = None,
    aggregate: np.ndarray | None = None,
    num_contributors: int | None = None,
) -> Observation:
    """What a curious server can use against one target under ``protocol``.

    ``"plaintext"`` needs ``target_update``; ``"masking"``/``"secagg"`` and
    ``"paillier"`` need ``aggregate`` and ``num_contributors`` (the masked
    update / ciphertexts are deliberately not accepted: see the module doc).
    """
    if protocol not in _PROTOCOLS:
        raise ValueError(f"protocol must be one of {_PROTOCOLS}, got {protocol!r}")
    if protocol == "plaintext":
        if target_update is None:
            raise ValueError("the plaintext protocol exposes target_update; pass it")
        return ClientUpdateObservation(target_update)
    if aggregate is None or num_contributors is None:
        raise ValueError(
            f"{protocol} exposes only the aggregate; pass aggregate and num_contributors"
        )
    return AggregateObservation(aggregate, num_contributors)


class UpdateInferenceAttack:
    """Score items by what the observed update or aggregate says about them.

    ``method="norm"``: the norm of the item's row. Exact for explicit ratings
    without negative sampling, where only rated rows are non-zero.

    ``method="direction"`` (IMIA-style, for implicit feedback with negative
    sampling): in matrix factorisation every row of one client's item update
    is a multiple of that client's user vector, positive items pulled one way
    and sampled negatives the other. The attack estimates the user direction
    as the top singular vector of the update, projects each row on it, and
    orients the sign so that the positive side is the smaller group of touched
    rows (``positives_are_minority=True``, right whenever more negatives are
    sampled than positives; set False otherwise). Untouched rows score 0,
    between positives and negatives.

    An aggregate mixes many users' directions, so on an
    :class:`AggregateObservation` both methods score by row norm.

    ``zero_tolerance`` sets :meth:`predict`'s default rule ("rated" means the
    score exceeds it); pass ``num_items`` to predict the top-k instead, which
    is the right choice when DP noise makes every row non-zero.
    """

    def __init__(
        self,
        method: str = "norm",
        *,
        zero_tolerance: float = 0.0,
        positives_are_minority: bool = True,
    ):
        self.method = method
        self.zero_tolerance = zero_tolerance
        self.positives_are_minority = positives_are_minority

    def score(self, observation: Observation) -> np.ndarray:
        if self.method not in ("norm", "direction"):
            raise ValueError(f"method must be 'norm' or 'direction', got {self.method!r}")
        if isinstance(observation, AggregateObservation):
            return np.linalg.norm(observation.aggregate, axis=1) / observation.num_contributors
        if not isinstance(observation, ClientUpdateObservation):
            raise TypeError(f"unsupported observation type {type(observation).__name__}")
        update = observation.update
        if self.method == "norm":
            return np.linalg.norm(update, axis=1)
        return self._oriented_projection(update)

    def _oriented_projection(self, update: np.ndarray) -> np.ndarray:
        if not np.any(update):
            return np.zeros(update.shape[0])
        direction = np.linalg.svd(update, full_matrices=False)[2][0]
        projection = update @ direction
        touched = np.abs(projection) > self.zero_tolerance
        n_positive_side = int(np.sum(projection[touched] > 0))
        n_negative_side = int(np.sum(touched)) - n_positive_side
        positive_is_smaller = n_positive_side < n_negative_side
        if positive_is_smaller != self.positives_are_minority:
            projection = -projection
        return projection

    def predict(self, observation: Observation, num_items: int | None = None) -> np.ndarray:
        scores = self.score(observation)
        if num_items is None:
            return scores > self.zero_tolerance
        if not 0 <= num_items <= scores.size:
            raise ValueError(f"num_items must be in [0, {scores.size}]")
        predicted = np.zeros(scores.size, dtype=bool)
        predicted[np.argsort(-scores, kind="stable")[:num_items]] = True
        return predicted


@dataclass(frozen=True)
class ItemInferenceResult:
    """How well one target's rated items were recovered."""

    precision: float
    recall: float
    auc: float
    num_predicted: int
    num_rated: int


def evaluate_item_inference(
    scores: np.ndarray, rated: np.ndarray, predicted: np.ndarray | None = None, *,
    num_predicted: int | None = None,
) -> ItemInferenceResult:
    """Precision and recall of the predicted items and the AUC of ``scores`` against the
    rated-item mask.

    The prediction is ``predicted`` (a mask) or the top ``num_predicted`` scores.
    One of them is required: defaulting to the top-|rated| items would give the
    attacker the target's own number of rated items, part of the answer.

    >>> r = evaluate_item_inference(np.array([3.0, 0.0, 1.0, 0.0]), np.array([1, 0, 1, 0], bool), num_predicted=2)
    >>> (r.precision, r.recall, r.auc)
    (1.0, 1.0, 1.0)
    """
    s = np.asarray(scores, dtype=float)
    truth = np.asarray(rated)
    if truth.dtype != bool or truth.shape != s.shape or s.ndim != 1:
        raise ValueError("rated must be a boolean mask with the same shape as scores")
    if (predicted is None) == (num_predicted is None):
        raise ValueError("pass exactly one of predicted and num_predicted (top-|rated| would use the answer)")
    if predicted is None:
        if not 0 <= num_predicted <= s.size:
            raise ValueError(f"num_predicted must be in [0, {s.size}]")
        predicted = np.zeros(s.size, dtype=bool)
        predicted[np.argsort(-s, kind="stable")[:num_predicted]] = True
    pred = np.asarray(predicted, dtype=bool)
    hits = int(np.sum(pred & truth))
    precision = hits / int(pred.sum()) if pred.any() else 0.0
    recall = hits / int(truth.sum()) if truth.any() else 0.0
    auc = roc_auc(truth, s) if 0 < truth.sum() < truth.size else float("nan")
    return ItemInferenceResult(precision, recall, auc, int(pred.sum()), int(truth.sum()))
