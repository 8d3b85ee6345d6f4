"""Hearing the server say which keys changed: ``CLIENT TRACKING`` in broadcasting mode.

A subscription that tracks (:meth:`~backends.RedisClient.subscribe_tracking`)
asks for its connection's id (``CLIENT ID``) before it subscribes, adds
``__redis__:invalidate`` to its channels, then opens a second connection of
its own, the *tracking connection*, and sends there
``CLIENT TRACKING on REDIRECT <id> BCAST PREFIX <p>...``.  From then on the
server sends the subscription an invalidation message for every change of a
key under a prefix, whoever made it: a write by any client (ours included:
``NOLOOP`` would only spare the tracking connection's own writes, and it
writes nothing), an expiry, an eviction; a ``FLUSHDB``/``FLUSHALL`` arrives
as a message with no key list (RESP2: a null array).

The tracking connection only has to stay open (``BCAST`` needs no reads on
it); the subscription checks that it does, and is lost with it.  Everything
on the invalidation channel is untrusted (anybody may ``PUBLISH`` there):
shapes are checked and anything else is reported as malformed, never raised.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, Protocol

import attrs

from ._errors import StorageError
from ._resp import CommandArg

INVALIDATE_CHANNEL: Final = b"__redis__:invalidate"
"""The channel the server sends tracking invalidations on (RESP2)."""
MAX_KEYS_PER_INVALIDATION: Final = 100_000
"""More keys than this in one message is not believed: it counts as "everything changed"."""


class TrackingRefusedError(StorageError):
    """The server refused ``CLIENT TRACKING`` (older than Redis 6, or an ACL forbids it)."""


@attrs.frozen
class Invalidation:
    """The server says these keys changed (``keys``), or everything did (``keys is None``).

    ``malformed`` is set for a message on the invalidation channel that the
    server would not send (a ``PUBLISH`` there by somebody else, a key list
    that is not a list of strings): its ``keys`` are ``()``.
    """

    keys: tuple[bytes, ...] | None
    """The changed keys, whole names; ``None`` after a ``FLUSHDB``/``FLUSHALL``."""
    malformed: bool = False
    """True when the message was not an invalidation the server sends."""


class SubscriptionEvents(Protocol):
    """What a subscriber reads: one server's :class:`~backends.Subscription`, or a cluster's.

    A cluster's (:class:`~backends._cluster_tracking.ClusterSubscription`)
    merges the channels' messages with every master's invalidations.
    """

    @property
    def connected(self) -> bool:
        """False once the subscription was closed or any of its connections is known lost."""
        ...

    async def next_event(self) -> tuple[bytes, bytes] | Invalidation:
        """The next ``(channel, data)`` message, or (tracking) the server's next invalidation.

        Raises:
            StorageUnavailableError: a connection of the subscription is lost.
            StorageClosedError: the subscription or its client was closed.
        """
        ...


def parse_invalidation(payload: object) -> Invalidation:
    """Read the payload of a message on :data:`INVALIDATE_CHANNEL`; never raises."""
    if payload is None:
        return Invalidation(None)
    if isinstance(payload, list) and all(isinstance(key, bytes) for key in payload):
        if len(payload) > MAX_KEYS_PER_INVALIDATION:
            return Invalidation(None)
        return Invalidation(tuple(payload))
    return Invalidation((), malformed=True)


def tracking_command(client_id: int, prefixes: Sequence[str]) -> tuple[CommandArg, ...]:
    """``CLIENT TRACKING on REDIRECT <client_id> BCAST PREFIX <p>...`` for ``prefixes``.

    Raises:
        ValueError: no prefix, or two prefixes of which one starts the other
            (the server refuses overlapping prefixes).
    """
    if not prefixes:
        raise ValueError("tracking needs at least one key prefix")
    for first in prefixes:
        for second in prefixes:
            if first is not second and second.startswith(first):
                raise ValueError(f"tracked prefixes overlap: {first!r} and {second!r}")
    command: list[CommandArg] = ["CLIENT", "TRACKING", "on", "REDIRECT", client_id, "BCAST"]
    for prefix in prefixes:
        command += ["PREFIX", prefix]
    return tuple(command)


__all__ = [
    "INVALIDATE_CHANNEL",
    "MAX_KEYS_PER_INVALIDATION",
    "Invalidation",
    "SubscriptionEvents",
    "TrackingRefusedError",
    "parse_invalidation",
    "tracking_command",
]
