"""The origin of a ``bg.read``: the writer's entry in the shared store, and its messages."""

from __future__ import annotations

import logging
from typing import Any

import attrs

from backends import StorageError, ops

from .._entry import unpack_entry
from .._errors import StackqueryError
from .._keys import canonical_key
from .._observer import QueryObserver
from .._retry import Backoff
from ..serializers import Serializer

logger = logging.getLogger("stackquery.bg")


class MissingValueError(StackqueryError, LookupError):
    """A ``bg.read`` found no value for its key in the store (no writer has written it yet)."""


@attrs.frozen
class StoreRead:
    """A reader's origin: the writer's entry, read from the shared store."""

    store: Any
    key_prefix: str
    serializer: Serializer
    key: str
    entry_hash: str = attrs.field(init=False)
    """The writer's key hash: what its client's update messages name."""

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "entry_hash", canonical_key(("bg", self.key))[1])

    async def __call__(self) -> Any:
        name = self.key_prefix + self.entry_hash
        raw = await ops.get(self.store, name)
        if raw is None:
            raise MissingValueError(f"the store holds no value for bg key {self.key!r}")
        return unpack_entry(raw, self.serializer, key=name).value

    async def follow_messages(self, observer: QueryObserver[Any]) -> None:
        """Read the entry again each time the writer announces it, until cancelled.

        Only on Redis (the writer's client publishes on its key prefix's
        channel once an entry landed).  The poll stays the fallback: messages
        are lost while the subscription is down, so each (re)subscription
        reads the entry once.
        """
        # Imported here: only a reader on Redis follows messages (import stackquery need not).
        from ..fleet._link import RedisLink, channel_name, find_redis

        link = find_redis(self.store)
        if not isinstance(link, RedisLink):
            return
        redis = link.client
        channel = channel_name(link.prefix + self.key_prefix, link.db)
        backoff = Backoff(first=0.1, cap=5.0)
        while True:
            try:
                async with redis.subscribe(channel) as messages:
                    backoff.reset()
                    await observer.refetch()
                    async for _channel, data in messages:
                        if self._names_entry(data):
                            await observer.refetch()
            except StorageError as exc:
                logger.warning("bg.read %r: subscription to %s failed: %r", self.key, channel, exc)
            await backoff.wait()

    def _names_entry(self, data: bytes) -> bool:
        from ..fleet import _wire  # imported by follow_messages already: a dict lookup

        try:
            message = _wire.parse_message(data)
        except _wire.MalformedMessageError:
            return False  # anyone can publish: a forged message is not the writer's news
        if isinstance(message, _wire.Update):
            return any(key_hash == self.entry_hash for key_hash, _ in message.items)
        if isinstance(message, _wire.Delete):
            return self.entry_hash in message.hashes
        return isinstance(message, _wire.StaleAll)
