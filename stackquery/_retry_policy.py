"""``retry`` and ``retry_delay`` as the user gives them, compiled once when options are built.

``retry`` is an int (retries after a failed attempt) or a predicate
``retry(failure_count, error) -> bool``; ``retry_delay`` is a number of
seconds, ``retry_delay(failure_count)`` or ``retry_delay(failure_count,
error)``.  ``failure_count`` is the number of failed attempts before the one
that just failed (0 at the first failure), as in TanStack Query, so
``retry=3`` is ``retry=lambda n, error: n < 3`` and a one-argument
``retry_delay`` gets the same 0-based retry number it always got.

Which form a callable has is decided here, from its signature, when the
options are built: a call never inspects anything, and a callable of the
wrong shape is a ``TypeError`` at construction.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable
from typing import Any

import attrs

from ._errors import InvalidOptionError

RetryPredicate = Callable[[int, BaseException], bool]
"""``retry(failure_count, error)``: whether to try again after this failure."""

RetryPolicy = int | RetryPredicate
"""``retry``: retries after a failed attempt, or a predicate."""

RetryDelaySpec = float | Callable[[int], float] | Callable[[int, BaseException], float]
"""``retry_delay``: seconds, ``f(failure_count)`` or ``f(failure_count, error)``."""

DelayFn = Callable[[int, BaseException], float]
"""A ``retry_delay`` compiled to its two-argument form (raises ``InvalidOptionError``)."""


def _got(value: object) -> str:
    return f"{type(value).__name__}: {value!r:.100}"


def accepts(fn: Callable[..., Any], count: int) -> bool | None:
    """Whether ``fn`` can be called with ``count`` positional arguments; ``None``: unknown.

    Remembered per function (a bounded cache): options built again and again with one
    function, as ``@cache`` builds them per argument tuple, read its signature once.
    """
    try:
        return _accepts_cached(fn, count)
    except TypeError:  # an unhashable callable: read its signature every time
        return _accepts(fn, count)


def _accepts(fn: Callable[..., Any], count: int) -> bool | None:
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin or extension without a signature
        return None
    try:
        signature.bind(*range(count))
    except TypeError:
        return False
    return True


_accepts_cached = functools.lru_cache(maxsize=1024)(_accepts)


def check_retry(*, allow_none: bool) -> Any:
    """An attrs validator of ``retry``: an int >= 0, a two-argument predicate (or ``None``).

    Raises (from the validator):
        InvalidOptionError: not an int >= 0 and not callable (bools included).
        TypeError: a callable that cannot be called as ``retry(failure_count, error)``.
    """

    def check(_instance: object, _attribute: object, value: Any) -> None:
        if value is None and allow_none:
            return
        if callable(value):
            if accepts(value, 2) is False:
                raise TypeError(
                    f"retry must be an int >= 0 or a function retry(failure_count, error) "
                    f"-> bool, got {_got(value)} which does not take 2 arguments"
                )
            return
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InvalidOptionError(f"retry must be an int >= 0, got {value!r}")

    return check


def delay_arity(value: Callable[..., Any]) -> int:
    """How a callable ``retry_delay`` is called: 2 (``failure_count, error``) or 1.

    A callable that takes two arguments gets both; one that takes only one
    gets the count; one whose signature cannot be read is called with one
    (the form ``retry_delay`` always had).

    Raises:
        TypeError: it takes neither one nor two arguments.
    """
    if accepts(value, 2):
        return 2
    if accepts(value, 1) is False:
        raise TypeError(
            f"retry_delay must be a number of seconds, retry_delay(failure_count) or "
            f"retry_delay(failure_count, error), got {_got(value)} which takes neither"
        )
    return 1


def retry_predicate(retry: RetryPolicy) -> RetryPredicate:
    """``retry`` as a predicate: an int ``n`` allows ``n`` retries."""
    if callable(retry):
        return retry
    limit = retry

    def within(failure_count: int, _error: BaseException) -> bool:
        return failure_count < limit

    return within


def delay_function(delay: RetryDelaySpec) -> DelayFn:
    """``retry_delay`` in its two-argument form, its arity decided now.

    The returned function raises :class:`InvalidOptionError` when the user's
    function raised, or returned something else than a finite number of
    seconds >= 0.
    """
    if not callable(delay):
        seconds = float(delay)  # a number, checked by the options' validator

        def constant(_failure_count: int, _error: BaseException) -> float:
            return seconds

        return constant
    two = delay_arity(delay) == 2
    fn: Callable[..., Any] = delay

    def checked(failure_count: int, error: BaseException) -> float:
        try:
            seconds = fn(failure_count, error) if two else fn(failure_count)
        except Exception as exc:
            raise InvalidOptionError(
                f"retry_delay({failure_count}) raised {type(exc).__name__}: {exc}"
            ) from exc
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, int | float)
            or not 0 <= seconds < math.inf  # NaN fails too
        ):
            raise InvalidOptionError(
                f"retry_delay({failure_count}) returned {seconds!r}: "
                "must be a finite number of seconds >= 0"
            )
        return float(seconds)

    return checked


@attrs.frozen
class RetryRule:
    """``retry`` and ``retry_delay`` of one options object, compiled; ``None``: the default's."""

    should_retry: RetryPredicate | None = None
    delay: DelayFn | None = None

    @classmethod
    def of(cls, retry: RetryPolicy | None, delay: RetryDelaySpec | None) -> RetryRule:
        """Compile ``retry`` and ``retry_delay`` (already validated).

        Raises:
            TypeError: a ``retry_delay`` function that takes neither one nor two arguments.
        """
        if retry is None and delay is None:
            return _DEFAULTS
        return cls(
            should_retry=None if retry is None else retry_predicate(retry),
            delay=None if delay is None else delay_function(delay),
        )

    def over(self, default: RetryRule) -> RetryRule:
        """This rule, each part left ``None`` taken from ``default``."""
        return RetryRule(
            should_retry=self.should_retry
            if self.should_retry is not None
            else default.should_retry,
            delay=self.delay if self.delay is not None else default.delay,
        )


_DEFAULTS: RetryRule = RetryRule()
"""The rule of options that leave both to the default (one shared object)."""


def decide_retry(predicate: RetryPredicate, failure_count: int, error: Exception) -> bool:
    """Ask ``predicate`` whether to retry after ``error``.

    Raises:
        InvalidOptionError: the predicate raised (its error is the cause); no
            retry follows.
    """
    try:
        return bool(predicate(failure_count, error))
    except Exception as exc:
        raise InvalidOptionError(
            f"retry({failure_count}, {type(error).__name__}) raised {type(exc).__name__}: {exc}"
        ) from exc


__all__ = [
    "DelayFn",
    "RetryDelaySpec",
    "RetryPolicy",
    "RetryPredicate",
    "RetryRule",
    "accepts",
    "check_retry",
    "decide_retry",
    "delay_arity",
    "delay_function",
    "retry_predicate",
]
