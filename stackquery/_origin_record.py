"""What one client counts of how it protected its origins: breakers used, stale-if-error serves."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import attrs

from ._circuit import CircuitBreaker, CircuitState, CircuitStatistics

_PRUNE_SLACK = 64
"""Keys remembered past the table's size before forgotten keys are swept."""


@attrs.define(eq=False)
class OriginRecord:
    """One client's record of its queries' circuit breakers and stale-if-error serves."""

    circuits: dict[int, CircuitBreaker] = attrs.field(factory=dict)
    """Every breaker a query of the client called its origin through, by ``id``."""
    key_circuits: dict[str, CircuitBreaker] = attrs.field(factory=dict)
    """The breaker each key last called its origin through."""
    stale_if_error_served: int = 0
    """Callers that waited on a fetch that failed and got the last good data instead of
    the error (``stale_if_error``)."""

    def used(self, key_hash: str, breaker: CircuitBreaker, live: Mapping[str, object]) -> None:
        """The key called its origin through ``breaker``; keys not in ``live`` are forgotten
        once they pile up (amortized: one sweep per as many uses as there are live keys)."""
        self.circuits.setdefault(id(breaker), breaker)
        self.key_circuits[key_hash] = breaker
        if len(self.key_circuits) > 2 * len(live) + _PRUNE_SLACK:
            self.forget_except(live)

    def forget_except(self, live: Mapping[str, object]) -> None:
        """Forget the breakers of keys not in ``live`` (keys gone from the table)."""
        self.key_circuits = {k: b for k, b in self.key_circuits.items() if k in live}

    def circuit_state(self, key_hash: str) -> CircuitState | None:
        """The state of the breaker the key last called its origin through, or ``None``."""
        breaker = self.key_circuits.get(key_hash)
        return breaker.state if breaker is not None else None

    def breakers_json(self) -> dict[str, dict[str, Any]]:
        """The breakers' statistics as JSON, by name (``name#2`` ... for a name used twice);
        ``retry_at`` is ``None`` unless the breaker is open."""
        out: dict[str, dict[str, Any]] = {}
        for stats in self.circuit_statistics():
            name, n = stats.name, 1
            while name in out:
                n += 1
                name = f"{stats.name}#{n}"
            info = attrs.asdict(stats, filter=lambda a, _v: a.name != "name")
            info["state"] = stats.state.value
            info["retry_at"] = None if stats.retry_at == -math.inf else stats.retry_at
            out[name] = info
        return out

    def circuit_statistics(self) -> tuple[CircuitStatistics, ...]:
        """The statistics of every breaker the client's queries used, first used first."""
        return tuple(breaker.statistics() for breaker in self.circuits.values())


__all__ = ["OriginRecord"]
