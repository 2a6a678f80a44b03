"""How long the server waits for the nodes' replies to one exchange.

A node that does not answer in time is a dropout with all its users. Flower only
reports a SIGKILLed SuperNode after its heartbeat lapses (37.5–60 s on 1.42), so
the deadline is ours. A fixed deadline is either too short for a loaded machine
or far too long for a fast round; so by default it is **derived from the reply
times measured** for the same stage: the nodes do the same work for equal shares
of the users, so a node that has not answered ``factor`` times later than the
slowest reply seen for that stage (in this exchange, or in the last exchange of
the same stage) is taken as gone. ``floor`` keeps short stages from being cut by scheduling noise, and
before any reply of a stage was ever seen the wait is ``first`` (the time every
node was given to connect).

A fixed number of seconds (``flower.stage_timeout`` / ``flower.train_timeout``
> 0) replaces the derived deadline for its kind of exchange.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["DeadlinePolicy", "StageDeadline"]


@dataclass
class StageDeadline:
    """The deadline of one exchange (one stage), as a number of seconds since it started."""

    label: str
    fixed: float | None
    factor: float
    floor: float
    first: float
    slowest_before: float | None

    def limit(self, reply_seconds: Sequence[float]) -> float:
        """Seconds after the start of the exchange at which unanswered nodes are dropped,
        given the replies received so far (seconds after the start)."""
        if self.fixed is not None:
            return self.fixed
        seen = [s for s in reply_seconds] + ([self.slowest_before] if self.slowest_before else [])
        if not seen:
            return self.first
        return max(self.floor, self.factor * max(seen))


@dataclass
class DeadlinePolicy:
    """The run's deadlines: fixed per kind of exchange, or derived from measured reply times.

    ``train_timeout`` applies to the exchanges that train or evaluate (message type
    ``train``/``evaluate``), ``stage_timeout`` to the protocol stages; ``None`` or 0
    means derived.
    """

    train_timeout: float | None = None
    stage_timeout: float | None = None
    factor: float = 3.0
    floor: float = 5.0
    first: float = 120.0
    #: stage label -> the slowest reply of its last exchange (seconds): recent, so a slow
    #: first round (cold caches, process starts) does not stretch every later deadline
    slowest: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 1.0 <= self.factor <= 100.0:
            raise ValueError(f"factor must be in [1, 100], got {self.factor}")
        if not 0.0 < self.floor <= 86_400.0 or not 0.0 < self.first <= 86_400.0:
            raise ValueError("floor and first must be in (0, 86400] seconds")

    def for_stage(self, message_type: str, label: str) -> StageDeadline:
        fixed = self.stage_timeout if message_type == "train.stage" else self.train_timeout
        return StageDeadline(label=label, fixed=fixed or None, factor=self.factor, floor=self.floor,
                             first=self.first, slowest_before=self.slowest.get(label))

    def observe(self, label: str, reply_seconds: Sequence[float]) -> None:
        """Remember how long the replies of one exchange of ``label`` took."""
        if reply_seconds:
            self.slowest[label] = max(reply_seconds)
