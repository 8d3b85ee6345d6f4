"""CircuitBreaker: stop calling an origin that keeps failing, and probe it before trusting it again.

A breaker is a small synchronous state machine on trio's clock.  It is shared
by any number of queries and decorated functions (and by several clients in
one trio run): each origin call asks it for a :class:`CircuitPermit` first
and reports the call's outcome with it.  Every change happens in one
synchronous method, so no lock is needed and a cancelled call cannot leave a
half-made change behind: a cancelled call gives its permit back
(:meth:`CircuitBreaker.abandon`), which frees a half-open probe's slot.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar, final

import attrs
import trio

from ._errors import InvalidOptionError, StackqueryError

T = TypeVar("T")


class CircuitState(enum.Enum):
    """Where a :class:`CircuitBreaker` stands."""

    CLOSED = "closed"
    """Calls go through; consecutive failures are counted."""
    OPEN = "open"
    """Calls are refused with :class:`CircuitOpenError` until ``recovery_time`` has passed."""
    HALF_OPEN = "half_open"
    """Up to ``half_open_calls`` probes go through; the first outcome decides."""


class CircuitOpenError(StackqueryError):
    """A call was refused because its circuit breaker is open (or its probes are all out).

    No origin call was made and no retry is spent on it.
    """

    def __init__(self, circuit: str, retry_at: float) -> None:
        super().__init__(f"circuit {circuit!r} is open: the origin is not called")
        self.circuit = circuit
        """The breaker's name."""
        self.retry_at = retry_at
        """Trio time from which the breaker lets a probe through (``-inf``: once a probe ends)."""


@attrs.frozen
class CircuitStatistics:
    """A point-in-time view of a :class:`CircuitBreaker`."""

    name: str
    state: CircuitState
    """The state as of the last call (an open breaker turns half-open when a call comes
    after ``retry_at``, not by itself)."""
    consecutive_failures: int
    """Failed calls in a row while closed (reset by a success)."""
    calls: int
    """Origin calls let through (probes included)."""
    successes: int
    failures: int
    refused: int
    """Calls refused while open, or half-open with every probe slot taken."""
    abandoned: int
    """Calls let through that were cancelled before they had an outcome."""
    opened: int
    """Times the breaker opened."""
    half_opened: int
    """Times it turned half-open."""
    closed: int
    """Times a probe closed it again."""
    probes_in_flight: int
    retry_at: float
    """Trio time from which an open breaker lets a probe through (``-inf`` unless open)."""


@final
@attrs.frozen
class CircuitPermit:
    """What :meth:`CircuitBreaker.admit` hands out: give it back with ``record`` or ``abandon``."""

    generation: int
    """The breaker's state generation when the call was let through: an outcome from an
    older generation (the breaker opened or closed meanwhile) changes no state."""
    probe: bool
    """Whether the call is a half-open probe (it holds a probe slot)."""
    transition: CircuitState | None = None
    """The state letting this call through moved the breaker into, if it moved."""


_OUTCOMES: Final = ("calls", "successes", "failures", "refused", "abandoned")


@final
class CircuitBreaker:
    """Stops origin calls after ``failure_threshold`` consecutive failures; probes after a pause.

    Closed, every call goes through and consecutive failed calls are counted
    (a success resets the count).  At ``failure_threshold`` the breaker
    opens: calls are refused at once with :class:`CircuitOpenError` (no
    origin call, no retry spent) for ``recovery_time`` seconds.  The first
    call after that turns it half-open and is let through as a probe, with
    at most ``half_open_calls`` probes in flight at once (more calls are
    refused as if open); the first probe to finish decides: a success closes
    the breaker, a failure opens it for another ``recovery_time``.  A probe
    cancelled before it finished decides nothing and frees its slot, so the
    breaker never stays half-open with no probe left to end it.

    **Failures are counted per origin call, not per fetch.**  Each attempt of
    a fetch (the first call and every retry) is a call to the origin and is
    counted, as resilience libraries do (Polly, resilience4j, pybreaker):
    the breaker protects the origin, which sees every attempt, so a query
    with ``retry=3`` opens a threshold-5 breaker within two failed fetches
    instead of making 20 calls first; and once it is open the remaining
    retries of a fetch are not made (the fetch ends with
    :class:`CircuitOpenError` when its next retry is due).

    Time is trio's clock (``trio.current_time()``), so a ``MockClock``
    drives it.  All state changes are synchronous: the breaker may be shared
    by queries of several clients in one trio run.  Used in a new trio run,
    it starts closed again (times of another run mean nothing).

    Args:
        failure_threshold: consecutive failed calls that open the breaker (>= 1).
        recovery_time: seconds it stays open before a probe (> 0, finite).
        half_open_calls: probes allowed in flight at once while half-open (>= 1).
        name: names the breaker in errors, statistics, events and metrics.
        metrics: a collector told of each transition and refusal, if it has
            ``record_circuit(name, event)`` (the built-in collectors do); events
            are ``"opened"``, ``"half_opened"``, ``"closed"``, ``"refused"``.

    Raises:
        InvalidOptionError: a threshold, time or count out of range.
        TypeError: ``name`` is not a ``str``.
    """

    def __init__(
        self,
        failure_threshold: int = 5,
        recovery_time: float = 30.0,
        half_open_calls: int = 1,
        *,
        name: str = "circuit",
        metrics: Any = None,
    ) -> None:
        _check_count("failure_threshold", failure_threshold)
        _check_count("half_open_calls", half_open_calls)
        if (
            isinstance(recovery_time, bool)
            or not isinstance(recovery_time, int | float)
            or not 0 < recovery_time < math.inf
        ):
            raise InvalidOptionError(
                f"recovery_time must be a finite number of seconds > 0, got {recovery_time!r}"
            )
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, got {type(name).__name__}: {name!r}")
        self.failure_threshold = failure_threshold
        self.recovery_time = float(recovery_time)
        self.half_open_calls = half_open_calls
        self.name = name
        self._record_metric: Callable[[str, str], object] | None = getattr(
            metrics, "record_circuit", None
        )
        self._run: object = None
        self._reset()

    def _reset(self) -> None:
        self._state = CircuitState.CLOSED
        self._generation = 0
        self._consecutive_failures = 0
        self._probes = 0
        self._retry_at = -math.inf
        self._counts = dict.fromkeys(_OUTCOMES, 0)
        self._transitions = dict.fromkeys(CircuitState, 0)

    def __repr__(self) -> str:
        return f"<CircuitBreaker {self.name!r} {self._state.value}>"

    @property
    def state(self) -> CircuitState:
        """The state as of the last call (see :attr:`CircuitStatistics.state`)."""
        return self._state

    def statistics(self) -> CircuitStatistics:
        """Return the breaker's current :class:`CircuitStatistics`; synchronous."""
        counts, moves = self._counts, self._transitions
        return CircuitStatistics(
            name=self.name,
            state=self._state,
            consecutive_failures=self._consecutive_failures,
            calls=counts["calls"],
            successes=counts["successes"],
            failures=counts["failures"],
            refused=counts["refused"],
            abandoned=counts["abandoned"],
            opened=moves[CircuitState.OPEN],
            half_opened=moves[CircuitState.HALF_OPEN],
            closed=moves[CircuitState.CLOSED],
            probes_in_flight=self._probes,
            retry_at=self._retry_at,
        )

    # -- the three steps of a call, each synchronous -----------------------------------

    def admit(self) -> CircuitPermit:
        """Let one origin call through, or refuse it; synchronous (no checkpoint).

        Raises:
            CircuitOpenError: the breaker is open, or half-open with every probe slot taken.
        """
        self._check_run()
        transition = None
        if self._state is CircuitState.OPEN and trio.current_time() >= self._retry_at:
            self._move(CircuitState.HALF_OPEN)
            transition = CircuitState.HALF_OPEN
        if self._state is CircuitState.CLOSED:
            self._counts["calls"] += 1
            return CircuitPermit(self._generation, probe=False)
        if self._state is CircuitState.HALF_OPEN and self._probes < self.half_open_calls:
            self._probes += 1
            self._counts["calls"] += 1
            return CircuitPermit(self._generation, probe=True, transition=transition)
        self._counts["refused"] += 1
        self._metric("refused")
        raise CircuitOpenError(self.name, self._retry_at)

    def record(self, permit: CircuitPermit, *, ok: bool) -> CircuitState | None:
        """Report the outcome of a call :meth:`admit` let through; return the state moved to.

        An outcome from before the breaker last moved (a call let through
        while closed that fails after it opened) is counted but moves nothing.
        """
        self._counts["successes" if ok else "failures"] += 1
        if permit.generation != self._generation:
            return None
        if permit.probe:
            self._probes -= 1
            target = CircuitState.CLOSED if ok else CircuitState.OPEN
            self._move(target)
            return target
        if ok:
            self._consecutive_failures = 0
            return None
        self._consecutive_failures += 1
        if self._consecutive_failures >= self.failure_threshold:
            self._move(CircuitState.OPEN)
            return CircuitState.OPEN
        return None

    def abandon(self, permit: CircuitPermit) -> None:
        """A call :meth:`admit` let through ended without an outcome (cancelled): forget it.

        A probe's slot is freed, so the next call may probe.
        """
        self._counts["abandoned"] += 1
        if permit.probe and permit.generation == self._generation:
            self._probes -= 1

    async def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Await ``fn(*args)`` through the breaker.

        Cancelled, the call is abandoned (it counts neither way).

        Raises:
            CircuitOpenError: the breaker refused the call; ``fn`` was not called.
            Exception: whatever ``fn`` raised (counted as a failure).
        """
        return await call_through(self, lambda: fn(*args))

    # -- inside --------------------------------------------------------------------------

    def _move(self, state: CircuitState) -> None:
        self._state = state
        self._generation += 1
        self._transitions[state] += 1
        self._probes = 0
        self._consecutive_failures = 0
        self._retry_at = (
            trio.current_time() + self.recovery_time if state is CircuitState.OPEN else -math.inf
        )
        self._metric(_EVENT_NAMES[state])

    def _metric(self, event: str) -> None:
        if self._record_metric is not None:
            self._record_metric(self.name, event)

    def _check_run(self) -> None:
        run = trio.lowlevel.current_root_task()
        if run is not self._run:
            if self._run is not None:
                self._reset()
            self._run = run


_EVENT_NAMES: Final = {
    CircuitState.OPEN: "opened",
    CircuitState.HALF_OPEN: "half_opened",
    CircuitState.CLOSED: "closed",
}


def _check_count(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidOptionError(f"{name} must be an int >= 1, got {value!r}")


def check_circuit(_instance: object, _attribute: object, value: Any) -> None:
    """attrs validator of a ``circuit`` option: ``None`` or a :class:`CircuitBreaker`.

    Raises:
        TypeError: anything else.
    """
    if value is not None and not isinstance(value, CircuitBreaker):
        raise TypeError(
            f"circuit must be a stackquery.CircuitBreaker or None, got {type(value).__name__}: "
            f"{value!r:.100}"
        )


async def call_through(
    breaker: CircuitBreaker,
    fn: Callable[[], Awaitable[T]],
    on_transition: Callable[[CircuitState], object] | None = None,
) -> T:
    """Await ``fn()`` with a permit of ``breaker``; ``on_transition(state)`` when it moved it.

    Cancellation (any ``BaseException``) abandons the permit before it propagates.

    Raises:
        CircuitOpenError: the breaker refused the call; ``fn`` was not called.
        Exception: whatever ``fn`` raised (recorded as a failure).
    """
    permit = breaker.admit()
    if permit.transition is not None and on_transition is not None:
        on_transition(permit.transition)
    try:
        result = await fn()
    except Exception:
        moved = breaker.record(permit, ok=False)
        if moved is not None and on_transition is not None:
            on_transition(moved)
        raise
    except BaseException:
        breaker.abandon(permit)
        raise
    moved = breaker.record(permit, ok=True)
    if moved is not None and on_transition is not None:
        on_transition(moved)
    return result


__all__ = [
    "CircuitBreaker",
    "CircuitOpenError",
    "CircuitPermit",
    "CircuitState",
    "CircuitStatistics",
    "call_through",
    "check_circuit",
]
