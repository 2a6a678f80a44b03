"""Privacy accountants for the Poisson-subsampled Gaussian mechanism.

The interface imitates Opacus (``opacus.accountants.IAccountant``): keyword-only
``step``, ``get_epsilon(delta)``, a ``history`` of ``(noise_multiplier,
sample_rate, steps)`` tuples in Opacus' own layout, and a ``state_dict`` /
``load_state_dict`` pair that checks what it loads.

The arithmetic is delegated to Google's ``dp_accounting`` library (0.6): the
history is turned into a ``dp_event`` (one ``PoissonSampledDpEvent`` of a
``GaussianDpEvent`` per distinct ``(noise_multiplier, sample_rate)``, self
composed ``steps`` times) and handed to ``dp_accounting.pld.PLDAccountant`` or
``dp_accounting.rdp.RdpAccountant``. Composition is commutative, so grouping
equal mechanisms does not change the result; it only makes PLD fast.

The same two classes serve both privacy units:

* record level (DP-SGD on one client): ``sample_rate = batch_size /
  num_client_records``, one ``step`` per local optimizer step, recorded only in
  rounds the client took part in (no amplification from client sampling is
  claimed); one accountant per client, see :class:`ClientAccountants`;
* user level (DP-FedAvg): ``sample_rate = expected clients per round /
  num_users``, one ``step`` per round, ``noise_multiplier = z`` (noise std
  divided by the clip norm).

Both assume **Poisson sampling** with the add-or-remove-one neighbouring
relation. Fixed-size sampling is not covered by these numbers.

The distributed discrete Gaussian mechanism's accountant
(:class:`~secure_fedrec.privacy.ddg_accounting.DistributedDiscreteGaussianAccountant`)
is a subclass with the same ``step(*, noise_multiplier, sample_rate, steps=1)``: every
accountant of a run, whatever its mechanism, is stepped, queried and saved alike.
"""

from __future__ import annotations

import abc
import copy
import functools
import logging
import math
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from dp_accounting import dp_event
from dp_accounting.pld import pld_privacy_accountant
from dp_accounting.rdp import rdp_privacy_accountant

__all__ = [
    "INTEGER_RDP_ORDERS",
    "Accountant",
    "AccountantStateError",
    "ClientAccountants",
    "EpsilonDistribution",
    "PldAccountant",
    "RdpAccountant",
    "StepRecord",
    "create_accountant",
    "validate_delta",
]

_STATE_VERSION = 1

# Integer orders only: dp_accounting evaluates them in closed form, ~5x faster
# than its default grid (which adds fractional orders below 11), at ~2-3 %
# looser ε. ClientAccountants uses them by default: a run may have thousands
# of clients, each with its own sampling rate.
INTEGER_RDP_ORDERS: tuple[float, ...] = tuple(
    float(order) for order in [*range(2, 65), 80, 96, 128, 160, 192, 256]
)


class _DroppedOrderFilter(logging.Filter):
    """Silence dp_accounting's notice that a fractional RDP order did not converge.

    The library then leaves that order out of the minimum over orders, which
    can only make ε larger (still a valid bound); the notice is repeated for
    every query and would flood the run's log.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "_compute_log_a_frac failed to converge" not in record.getMessage()


logging.getLogger("absl").addFilter(_DroppedOrderFilter())


class AccountantStateError(ValueError):
    """A state dict does not describe a valid accountant of the expected kind."""


@dataclass(frozen=True)
class StepRecord:
    """One entry of an accountant's history: ``steps`` uses of the same mechanism."""

    noise_multiplier: float
    sample_rate: float
    steps: int

    def __post_init__(self) -> None:
        _check_mechanism(self.noise_multiplier, self.sample_rate, self.steps)

    def as_tuple(self) -> tuple[float, float, int]:
        return (self.noise_multiplier, self.sample_rate, self.steps)


def _check_mechanism(noise_multiplier: Any, sample_rate: Any, steps: Any) -> None:
    if isinstance(noise_multiplier, bool) or not isinstance(noise_multiplier, (int, float)):
        raise TypeError(f"noise_multiplier must be a number, got {noise_multiplier!r}")
    if not (math.isfinite(noise_multiplier) and noise_multiplier >= 0):
        raise ValueError(f"noise_multiplier must be finite and >= 0, got {noise_multiplier!r}")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, float)):
        raise TypeError(f"sample_rate must be a number, got {sample_rate!r}")
    if not (math.isfinite(sample_rate) and 0 <= sample_rate <= 1):
        raise ValueError(f"sample_rate must be in [0, 1], got {sample_rate!r}")
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")


def validate_delta(delta: float) -> float:
    """Return ``delta`` as a float if it lies in (0, 1), else raise ``ValueError``."""
    if isinstance(delta, bool) or not isinstance(delta, (int, float)) or not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta!r}")
    return float(delta)


class Accountant(abc.ABC):
    """Tracks the privacy loss of a sequence of Poisson-subsampled noise steps.

    The one accountant protocol of the package: keyword-only ``step(*,
    noise_multiplier, sample_rate, steps=1)``, ``get_epsilon(delta)``,
    ``epsilon_after(..., delta=)`` (nothing recorded), ``copy()``, ``len()`` (steps) and a
    checked ``state_dict``. Subclasses fix the mechanism the multiplier belongs to
    (the Gaussian here, the distributed discrete Gaussian in :mod:`.ddg_accounting`).

    ``history`` is a list of ``(noise_multiplier, sample_rate, steps)`` tuples,
    the layout of Opacus' accountants, so a history can be copied from an Opacus
    ``PrivacyEngine.accountant.history`` with :meth:`extend` (e.g. when the
    engine creates a fresh Opacus engine every round, as Flower's example does,
    the round's history is appended here and the client's ε stays cumulative).
    """

    mechanism: ClassVar[str]

    def __init__(self) -> None:
        self.history: list[tuple[float, float, int]] = []
        self._epsilon_cache: dict[tuple[Any, ...], float] = {}

    # -- recording ------------------------------------------------------------------
    def step(self, *, noise_multiplier: float, sample_rate: float, steps: int = 1) -> None:
        """Record ``steps`` applications of the subsampled Gaussian mechanism.

        Consecutive steps with identical parameters are merged into one entry,
        as Opacus does.
        """
        _check_mechanism(noise_multiplier, sample_rate, steps)
        if steps == 0:
            return
        noise_multiplier, sample_rate, steps = float(noise_multiplier), float(sample_rate), int(steps)
        if self.history and self.history[-1][:2] == (noise_multiplier, sample_rate):
            last = self.history[-1]
            self.history[-1] = (last[0], last[1], last[2] + steps)
        else:
            self.history.append((noise_multiplier, sample_rate, steps))

    def extend(self, history: Iterable[Sequence[Any]]) -> None:
        """Append an Opacus-style history (list of ``(sigma, q, steps)``) to this one."""
        for entry in history:
            if len(entry) != 3:
                raise ValueError(f"history entries are (noise_multiplier, sample_rate, steps), got {entry!r}")
            self.step(noise_multiplier=entry[0], sample_rate=entry[1], steps=entry[2])

    @property
    def total_steps(self) -> int:
        return sum(entry[2] for entry in self.history)

    # -- queries --------------------------------------------------------------------------
    def get_epsilon(self, delta: float) -> float:
        """The ε of the whole history at ``delta`` (``inf`` if a step had no noise)."""
        delta = validate_delta(delta)
        if not self.history:
            return 0.0
        key = (delta, tuple(self.history))
        cached = self._epsilon_cache.get(key)
        if cached is None:
            cached = float(self._compute_epsilon(self._grouped_history(), delta))
            if len(self._epsilon_cache) > 64:
                self._epsilon_cache.clear()
            self._epsilon_cache[key] = cached
        return cached

    def epsilon_after(
        self, *, noise_multiplier: float, sample_rate: float, steps: int = 1, delta: float
    ) -> float:
        """The ε this accountant would report after one more ``step`` (it is not changed)."""
        trial = self.copy()
        trial.step(noise_multiplier=noise_multiplier, sample_rate=sample_rate, steps=steps)
        return trial.get_epsilon(delta)

    def copy(self) -> Accountant:
        duplicate = copy.copy(self)
        duplicate.history = list(self.history)
        duplicate._epsilon_cache = dict(self._epsilon_cache)
        return duplicate

    def __len__(self) -> int:
        """The number of steps recorded (:attr:`total_steps`), not of history entries."""
        return self.total_steps

    # -- persistence ------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "version": _STATE_VERSION,
            "mechanism": self.mechanism,
            "history": [list(entry) for entry in self.history],
            "options": self._options(),
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Replace this accountant's history with the one in ``state_dict``.

        Raises :class:`AccountantStateError` if the dict is for another
        mechanism, has other options, or a malformed history; the accountant is
        left unchanged in that case.
        """
        if not isinstance(state_dict, Mapping):
            raise AccountantStateError("state_dict must be a mapping")
        missing = {"version", "mechanism", "history"} - set(state_dict)
        if missing:
            raise AccountantStateError(f"state_dict lacks keys {sorted(missing)}")
        if state_dict["version"] != _STATE_VERSION:
            raise AccountantStateError(f"unsupported state_dict version {state_dict['version']!r}")
        if state_dict["mechanism"] != self.mechanism:
            raise AccountantStateError(
                f"state_dict of a {state_dict['mechanism']!r} accountant cannot be loaded "
                f"into a {self.mechanism!r} accountant"
            )
        options = state_dict.get("options", self._options())
        if dict(options) != self._options():
            raise AccountantStateError(f"state_dict options {options!r} differ from {self._options()!r}")
        history = state_dict["history"]
        if not isinstance(history, (list, tuple)):
            raise AccountantStateError("history must be a list")
        loaded: list[tuple[float, float, int]] = []
        for entry in history:
            try:
                record = StepRecord(*entry)
            except (TypeError, ValueError) as exc:
                raise AccountantStateError(f"invalid history entry {entry!r}: {exc}") from exc
            if record.steps > 0:
                loaded.append((float(record.noise_multiplier), float(record.sample_rate), int(record.steps)))
        self.history = loaded
        self._epsilon_cache.clear()

    # -- implementation hooks ----------------------------------------------------------------------
    def _options(self) -> dict[str, Any]:
        return {}

    def _grouped_history(self) -> list[tuple[float, float, int]]:
        grouped: OrderedDict[tuple[float, float], int] = OrderedDict()
        for sigma, q, steps in self.history:
            grouped[(sigma, q)] = grouped.get((sigma, q), 0) + steps
        return [(sigma, q, steps) for (sigma, q), steps in grouped.items()]

    @staticmethod
    def _to_dp_event(grouped: Sequence[tuple[float, float, int]]) -> dp_event.DpEvent:
        events: list[dp_event.DpEvent] = []
        for sigma, q, steps in grouped:
            if q == 0:
                continue  # never sampled: no privacy cost
            if sigma == 0:
                events.append(dp_event.NonPrivateDpEvent())
                continue
            base: dp_event.DpEvent = dp_event.GaussianDpEvent(sigma)
            if q < 1:
                base = dp_event.PoissonSampledDpEvent(q, base)
            events.append(dp_event.SelfComposedDpEvent(base, steps))
        return dp_event.ComposedDpEvent(events)

    @abc.abstractmethod
    def _compute_epsilon(self, grouped: Sequence[tuple[float, float, int]], delta: float) -> float:
        """ε at ``delta`` for a grouped, non-empty history."""


class RdpAccountant(Accountant):
    """Rényi-DP accountant (``dp_accounting.rdp.RdpAccountant``).

    A valid upper bound, looser than PLD by typically 5-20 %; kept as the
    cross-check the issue asks for and as the fast choice for many clients.
    RDP is converted to (ε, δ) by ``dp_accounting.rdp.compute_epsilon`` (the
    conversion of Canonne, Kamath and Steinke 2020 / Asoodeh et al. 2021).
    """

    mechanism = "rdp"

    def __init__(self, orders: Sequence[float] | None = None) -> None:
        super().__init__()
        chosen = rdp_privacy_accountant.DEFAULT_RDP_ORDERS if orders is None else orders
        self.orders: tuple[float, ...] = tuple(float(order) for order in chosen)
        if not self.orders or any(not (order > 1) for order in self.orders):
            raise ValueError("RDP orders must be > 1")

    def _options(self) -> dict[str, Any]:
        return {"orders": list(self.orders)}

    def rdp(self) -> np.ndarray:
        """The composed RDP curve at :attr:`orders`."""
        total = np.zeros(len(self.orders), dtype=np.float64)
        for sigma, q, steps in self._grouped_history():
            total += steps * _single_step_rdp(sigma, q, self.orders)
        return total

    def _compute_epsilon(self, grouped: Sequence[tuple[float, float, int]], delta: float) -> float:
        # RDP composes by adding curves, so each (sigma, q) curve is computed
        # once by the library and cached: a client's ε is then a cheap sum.
        total = np.zeros(len(self.orders), dtype=np.float64)
        for sigma, q, steps in grouped:
            total += steps * _single_step_rdp(sigma, q, self.orders)
        if np.all(np.isinf(total)):
            return math.inf
        eps, _ = rdp_privacy_accountant.compute_epsilon(np.asarray(self.orders), total, delta)
        return float(eps)


@functools.lru_cache(maxsize=4096)
def _single_step_rdp(sigma: float, q: float, orders: tuple[float, ...]) -> np.ndarray:
    library = rdp_privacy_accountant.RdpAccountant(orders=list(orders))
    library.compose(Accountant._to_dp_event([(sigma, q, 1)]))
    curve = library.rdp
    curve.setflags(write=False)
    return curve


class PldAccountant(Accountant):
    """Privacy-loss-distribution accountant (``dp_accounting.pld.PLDAccountant``).

    Numerically tight for the subsampled Gaussian. The library discretizes
    privacy losses pessimistically, so the reported ε is an upper bound whose
    excess grows with the discretization interval. By default the interval is
    chosen per query: a first pass at 1e-3 gives ε₀, and when ε₀ < 1 the
    answer is recomputed at ``max(1e-5, 5e-4 * ε₀)``; on the test cases this
    keeps the pessimism within ~0.1 % of ε for ε > 0.5 at 0.02-0.3 s per query
    (tests/privacy compare with Opacus' PRV accountant). Pass a fixed
    ``value_discretization_interval`` to override.
    """

    mechanism = "pld"

    def __init__(self, value_discretization_interval: float | None = None) -> None:
        super().__init__()
        if value_discretization_interval is not None and not (
            math.isfinite(value_discretization_interval) and value_discretization_interval > 0
        ):
            raise ValueError("value_discretization_interval must be positive")
        self.value_discretization_interval = (
            None if value_discretization_interval is None else float(value_discretization_interval)
        )

    def _options(self) -> dict[str, Any]:
        return {"value_discretization_interval": self.value_discretization_interval}

    def _compute_epsilon(self, grouped: Sequence[tuple[float, float, int]], delta: float) -> float:
        event = self._to_dp_event(grouped)
        if self.value_discretization_interval is not None:
            return self._epsilon_at(event, delta, self.value_discretization_interval)
        coarse = self._epsilon_at(event, delta, 1e-3)
        if not math.isfinite(coarse):
            return coarse
        fine_interval = max(1e-5, 5e-4 * coarse)
        return self._epsilon_at(event, delta, fine_interval) if fine_interval < 5e-4 else coarse

    @staticmethod
    def _epsilon_at(event: dp_event.DpEvent, delta: float, interval: float) -> float:
        library = pld_privacy_accountant.PLDAccountant(value_discretization_interval=interval)
        library.compose(event)
        return library.get_epsilon(delta)


_ACCOUNTANTS: dict[str, type[Accountant]] = {"rdp": RdpAccountant, "pld": PldAccountant}


def create_accountant(mechanism: str, **options: Any) -> Accountant:
    """An empty accountant by name: ``"pld"`` or ``"rdp"``."""
    try:
        return _ACCOUNTANTS[mechanism](**options)
    except KeyError:
        raise ValueError(f"unknown accountant {mechanism!r}; choose from {sorted(_ACCOUNTANTS)}") from None


@dataclass(frozen=True)
class EpsilonDistribution:
    """ε over clients at one δ: the worst client and percentiles of the rest.

    ``percentiles`` maps a percentile in [0, 100] to ε (numpy's "linear"
    interpolation). Clients that never trained count with ε = 0.
    """

    delta: float
    num_clients: int
    worst_epsilon: float
    worst_client: int | None
    percentiles: Mapping[float, float]
    mean_epsilon: float


class ClientAccountants:
    """One persistent record-level accountant per client, keyed by client id.

    Each client's accountant composes every local step of every round in which
    that client trained (``sample_rate = batch / num_client_records``), so the
    reported ε is cumulative over the run, not per round. Identical histories
    are evaluated once, so a population that shares parameters costs one
    accountant query per distinct history; with RDP (the default, on
    :data:`INTEGER_RDP_ORDERS` unless ``options`` says otherwise) each
    ``(noise_multiplier, sample_rate)`` curve is computed once per process
    (~0.03 s) and later queries are sums.
    """

    def __init__(
        self,
        client_ids: Iterable[int] = (),
        *,
        mechanism: str = "rdp",
        options: Mapping[str, Any] | None = None,
    ) -> None:
        self.mechanism = mechanism
        if options is None:
            options = {"orders": list(INTEGER_RDP_ORDERS)} if mechanism == "rdp" else {}
        self.options: dict[str, Any] = dict(options)
        create_accountant(mechanism, **self.options)  # validates the name and options now
        self._accountants: dict[int, Accountant] = {}
        for client_id in client_ids:
            self.register(client_id)

    # -- membership ---------------------------------------------------------------------
    def register(self, client_id: int) -> Accountant:
        """The accountant of ``client_id``, created empty if new."""
        client_id = _check_client_id(client_id)
        accountant = self._accountants.get(client_id)
        if accountant is None:
            accountant = create_accountant(self.mechanism, **self.options)
            self._accountants[client_id] = accountant
        return accountant

    def __getitem__(self, client_id: int) -> Accountant:
        return self._accountants[client_id]

    def __contains__(self, client_id: object) -> bool:
        return client_id in self._accountants

    def __len__(self) -> int:
        return len(self._accountants)

    @property
    def client_ids(self) -> list[int]:
        return sorted(self._accountants)

    # -- recording --------------------------------------------------------------------------
    def step(self, client_id: int, *, noise_multiplier: float, sample_rate: float, steps: int = 1) -> None:
        self.register(client_id).step(noise_multiplier=noise_multiplier, sample_rate=sample_rate, steps=steps)

    # -- queries --------------------------------------------------------------------------------
    def epsilons(self, delta: float) -> dict[int, float]:
        """ε of every registered client at ``delta``."""
        delta = validate_delta(delta)
        by_history: dict[tuple[Any, ...], float] = {}
        result: dict[int, float] = {}
        for client_id, accountant in self._accountants.items():
            key = tuple(accountant._grouped_history())
            if key not in by_history:
                by_history[key] = accountant.get_epsilon(delta)
            result[client_id] = by_history[key]
        return result

    def worst_epsilon(self, delta: float) -> float:
        """The largest ε over clients (0 if no client has trained)."""
        return max(self.epsilons(delta).values(), default=0.0)

    def epsilon_distribution(
        self, delta: float, percentiles: Sequence[float] = (0, 25, 50, 75, 90, 99, 100)
    ) -> EpsilonDistribution:
        values = self.epsilons(delta)
        if not values:
            return EpsilonDistribution(float(delta), 0, 0.0, None, {float(p): 0.0 for p in percentiles}, 0.0)
        ids = list(values)
        eps = np.array([values[i] for i in ids], dtype=np.float64)
        worst_index = int(np.argmax(eps))
        finite = np.where(np.isfinite(eps), eps, np.inf)
        return EpsilonDistribution(
            delta=float(delta),
            num_clients=len(ids),
            worst_epsilon=float(eps[worst_index]),
            worst_client=ids[worst_index],
            percentiles={float(p): float(np.percentile(finite, p)) for p in percentiles},
            mean_epsilon=float(np.mean(finite)),
        )

    def worst_epsilon_after(self, planned: Mapping[int, tuple[float, float, int]], delta: float) -> float:
        """Worst ε over all clients if each client in ``planned`` took its planned
        ``(noise_multiplier, sample_rate, steps)``; nothing is recorded."""
        current = self.epsilons(delta)
        worst = max(current.values(), default=0.0)
        for client_id, (sigma, q, steps) in planned.items():
            base = self._accountants.get(client_id) or create_accountant(self.mechanism, **self.options)
            eps = base.epsilon_after(noise_multiplier=sigma, sample_rate=q, steps=steps, delta=delta)
            worst = max(worst, eps)
        return worst

    def copy(self) -> ClientAccountants:
        duplicate = ClientAccountants(mechanism=self.mechanism, options=self.options)
        duplicate._accountants = {cid: acc.copy() for cid, acc in self._accountants.items()}
        return duplicate

    # -- persistence ----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "version": _STATE_VERSION,
            "mechanism": self.mechanism,
            "options": dict(self.options),
            "clients": {str(cid): acc.state_dict() for cid, acc in sorted(self._accountants.items())},
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Replace all client accountants; validates everything before changing anything."""
        if not isinstance(state_dict, Mapping) or "clients" not in state_dict:
            raise AccountantStateError("state_dict must be a mapping with a 'clients' entry")
        if state_dict.get("version") != _STATE_VERSION:
            raise AccountantStateError(f"unsupported state_dict version {state_dict.get('version')!r}")
        if state_dict.get("mechanism") != self.mechanism:
            raise AccountantStateError(
                f"state_dict of {state_dict.get('mechanism')!r} accountants cannot be loaded "
                f"into {self.mechanism!r} accountants"
            )
        if dict(state_dict.get("options", {})) != self.options:
            raise AccountantStateError("state_dict accountant options differ from this container's")
        clients = state_dict["clients"]
        if not isinstance(clients, Mapping):
            raise AccountantStateError("'clients' must be a mapping")
        loaded: dict[int, Accountant] = {}
        for key, client_state in clients.items():
            try:
                client_id = _check_client_id(int(key))
            except (TypeError, ValueError) as exc:
                raise AccountantStateError(f"invalid client id {key!r}") from exc
            accountant = create_accountant(self.mechanism, **self.options)
            accountant.load_state_dict(client_state)
            loaded[client_id] = accountant
        self._accountants = loaded


def _check_client_id(client_id: Any) -> int:
    if isinstance(client_id, bool) or not isinstance(client_id, (int, np.integer)) or client_id < 0:
        raise ValueError(f"client ids are non-negative integers, got {client_id!r}")
    return int(client_id)
