"""What ``@cache`` and ``@bg`` pass on to their queries to spare the origin.

``retry`` (an int or ``retry(failure_count, error)``), ``jitter``, and for
``@cache`` also ``cache_if`` and ``error_ttl``: validated once when
decorating, with the same rules (and messages, prefixed with the decorator's
name) as :class:`~stackquery.QueryOptions`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

from .._errors import InvalidOptionError
from .._freshness import check_jitter
from .._option_checks import optional_callable, seconds
from .._retry_policy import RetryPolicy, check_retry


@attrs.frozen
class OriginProtection:
    """A decorator's ``retry``, ``jitter``, ``cache_if`` and ``error_ttl`` (``None``: unset)."""

    retry: RetryPolicy | None = attrs.field(default=None, validator=check_retry(allow_none=True))
    jitter: float | None = attrs.field(default=None, validator=check_jitter(allow_none=True))
    cache_if: Callable[[Any], object] | None = attrs.field(
        default=None, validator=optional_callable("cache_if")
    )
    error_ttl: float | None = attrs.field(
        default=None, validator=seconds("error_ttl", allow_none=True, allow_zero=False)
    )

    @classmethod
    def checked(
        cls,
        who: str,
        retry: object = None,
        jitter: object = None,
        cache_if: object = None,
        error_ttl: object = None,
    ) -> OriginProtection:
        """Validate the arguments (``who`` names the decorator in the messages).

        Raises:
            InvalidOptionError: a bad ``jitter``, ``error_ttl`` or non-callable ``retry``.
            TypeError: a ``retry`` function of the wrong arity; a ``cache_if`` that is
                not callable.
        """
        try:
            return cls(retry, jitter, cache_if, error_ttl)  # type: ignore[arg-type]
        except InvalidOptionError as exc:
            raise InvalidOptionError(f"{who}(): {exc}") from None
        except TypeError as exc:
            raise TypeError(f"{who}(): {exc}") from None


__all__ = ["OriginProtection"]
