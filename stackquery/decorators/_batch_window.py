"""The origin side of ``@cache.batch``: ids collected in one run-loop batch, one call for them.

Each id is its own query (its own key, actor, snapshot), so single flight,
stale-while-revalidate, L2 and invalidation work per id exactly as for
``@cache``.  What is shared is the origin call: an id's ``query_fn`` does not
call the origin, it adds the id to its client's open :class:`_Window` and
waits for the window's outcome.  The first id of a window starts the task
that flushes it, in the client's nursery.

"The same scheduling tick" is one batch of trio's run loop.  Trio runs the
tasks that are runnable in batches: every task made runnable (spawned, or
woken by a reply) while a batch runs goes into the next one.  The flush
task, spawned by the window's first id, starts in the batch after that id
arrived and closes the window one batch later still: every id whose
``query_fn`` starts in the same batch as the first one, or in the next (the
ids of a ``many`` started with a single call: ``many`` fetches them in tasks
of its own, one batch later), is in the window by then.  Concurrent callers started together
(tasks of one nursery, one ``many`` call, the waiters of one L2 ``get_many``)
reach their ``query_fn`` in the same batch, since each key goes through the
same steps (actor activation, fetch task) to get there.  No sleep, no timer:
the window costs no latency.  An id that arrives later goes in the next window:
a cold id that is read from L2 first reaches its ``query_fn`` after the read,
so it does not share a call with a stale id's refresh asked for at the same time.

The flush closes the window (later ids open a new one), splits its ids in
chunks of ``max_batch`` and calls the origin once per chunk, concurrently,
with the client's ``retry`` / ``retry_delay`` between attempts (per id there
is no retry: the ids' queries have ``retry=0``, so a failing origin is called
again per chunk, not per id).
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Mapping
from typing import Any, Literal

import attrs
import trio

from actors import Reply

from .._client import QueryClient
from .._errors import ClientClosedError, StackqueryError
from .._options import QueryOptions
from .._retry import call_with_retries
from ..metrics._collector import MetricsCollector

logger = logging.getLogger("stackquery.batch")

Missing = Literal["none", "error", "skip"]
"""What an id the origin's mapping leaves out becomes: ``None``, a ``MissingIdError``, nothing."""


class MissingIdError(StackqueryError, KeyError):
    """The batch function's mapping had no entry for an id (``missing="error"``).

    Raised to the callers of that id only; the other ids of the batch get
    their values.  Not cached: the next call of the id asks the origin again.
    """

    def __init__(self, item_id: Any, function: str) -> None:
        super().__init__(f"{function}() returned no value for id {item_id!r}")
        self.id = item_id
        """The id that was missing."""
        self.function = function
        """The batch function's name (``module.qualname``)."""

    def __str__(self) -> str:
        return str(self.args[0])  # not KeyError's repr of the message


class SkippedIdError(StackqueryError):
    """An id the origin left out with ``missing="skip"``: its query holds this error, no value.

    The batch function's callers never see it: ``f(id)`` and ``f.many``
    return ``None`` for that id instead.  Only a caller that fetches the id's
    query itself (``client.fetch_query``) would.
    """


@attrs.frozen
class BatchStatistics:
    """What one batch function's origin did since it was decorated (every client together)."""

    origin_calls: int
    """Calls of the decorated function (retries included)."""
    ids_requested: int
    """Ids sent to it, over all calls."""
    largest_batch: int
    """Most ids sent in one call."""
    missing_ids: int
    """Ids asked for that a mapping left out."""
    unrequested_ids: int
    """Ids in a mapping that were not asked for (ignored, never cached)."""
    failed_calls: int
    """Calls that raised or returned something else than a mapping."""


@attrs.define(eq=False)
class _Window:
    """The ids collected for the next origin call of one client, each with its reply."""

    replies: dict[Any, Reply[Any]] = attrs.field(factory=dict)


@attrs.define(eq=False)
class ClientBatches:
    """One batch function on one client: its ids' options and its open window.

    Holds the client weakly: the batch function must not keep a closed
    client (and its L1 table) alive.
    """

    origin: BatchOrigin
    client_ref: weakref.ref[QueryClient]
    options: dict[Any, tuple[type, QueryOptions[Any]]] = attrs.field(factory=dict)
    """Memo of each id's options, with the id's type (``f(1)`` and ``f(True)`` are two keys)."""
    window: _Window | None = None
    """The window ids go into now; ``None`` until an id arrives."""

    async def load(self, item_id: Any) -> Any:
        """The ``query_fn`` of one id: join the open window and wait for its outcome.

        Cancelled (the id's fetch was cancelled or removed), it stops waiting;
        the window's origin call goes on for the other ids.

        Raises:
            Exception: the origin call's error; ``MissingIdError`` or
                ``SkippedIdError`` when the mapping had no entry for the id.
            ClientClosedError: the client was collected.
        """
        window = self.window
        if window is None:
            client = self.client_ref()
            if client is None:
                raise ClientClosedError("the query client of this batch function is gone")
            window = _Window()
            # Opened once its flush is started: a client that refuses the task
            # (closed) must not leave a window behind that nobody flushes.
            client.start_soon(
                self.origin.flush, self, window, client, name=f"stackquery-batch {self.origin.name}"
            )
            self.window = window
        reply = window.replies.get(item_id)
        if reply is None:
            reply = window.replies[item_id] = Reply()
        return await reply.wait()


@attrs.define(eq=False)
class BatchOrigin:
    """The decorated function of ``@cache.batch`` and how its windows are flushed."""

    func: Callable[..., Any]
    name: str
    max_batch: int
    missing: Missing
    metrics: MetricsCollector | None
    _origin_calls: int = 0
    _ids_requested: int = 0
    _largest_batch: int = 0
    _missing_ids: int = 0
    _unrequested_ids: int = 0
    _failed_calls: int = 0

    def statistics(self) -> BatchStatistics:
        """Return the counts of what the origin did."""
        return BatchStatistics(
            origin_calls=self._origin_calls,
            ids_requested=self._ids_requested,
            largest_batch=self._largest_batch,
            missing_ids=self._missing_ids,
            unrequested_ids=self._unrequested_ids,
            failed_calls=self._failed_calls,
        )

    async def flush(self, batches: ClientBatches, window: _Window, client: QueryClient) -> None:
        """Close ``window`` and call the origin for its ids, ``max_batch`` at a time.

        Every reply of the window is settled when this returns, or raises
        (cancelled with the client: the ids' fetches are cancelled with it).
        """
        # One more batch of the run loop before the window closes: ``many``
        # starts its ids' fetches in tasks of their own, so they reach their
        # ``query_fn`` one batch after a single call started together with it
        # (``f(1)`` and ``f.many([1, 2])`` in one tick are one call, not two).
        await trio.lowlevel.checkpoint()
        if batches.window is window:
            batches.window = None  # ids that arrive from now on open the next window
        replies = window.replies
        ids = list(replies)
        step = self.max_batch
        chunks = [ids[start : start + step] for start in range(0, len(ids), step)]
        try:
            if len(chunks) == 1:
                await self._call(chunks[0], replies, client)
            else:
                async with trio.open_nursery() as nursery:
                    for chunk in chunks:
                        nursery.start_soon(self._call, chunk, replies, client)
        finally:
            closed = ClientClosedError("the query client closed before the batch call finished")
            for reply in replies.values():
                if not reply.is_set:
                    reply.set_error(closed)

    async def _call(
        self, chunk: list[Any], replies: dict[Any, Reply[Any]], client: QueryClient
    ) -> None:
        rule = client.config.retry_rule
        assert rule.should_retry is not None and rule.delay is not None  # the config has both
        _ok, result = await call_with_retries(
            lambda: self._attempt(chunk), should_retry=rule.should_retry, delay=rule.delay
        )
        if not isinstance(result, Mapping):  # the last attempt's error
            for item_id in chunk:
                replies[item_id].set_error(result)
            return
        try:
            self._settle(chunk, replies, result)
        except Exception as exc:  # a mapping that fails to be read: its ids get the error
            for item_id in chunk:
                if not replies[item_id].is_set:
                    replies[item_id].set_error(exc)

    def _settle(
        self, chunk: list[Any], replies: dict[Any, Reply[Any]], result: Mapping[Any, Any]
    ) -> None:
        """Give each id of ``chunk`` its value from ``result``, or what ``missing`` says."""
        found = 0
        for item_id in chunk:
            reply = replies[item_id]
            if item_id in result:
                found += 1
                reply.set_value(result[item_id])
            else:
                self._missing_ids += 1
                if self.missing == "none":
                    reply.set_value(None)
                else:
                    reply.set_error(self._missing_error(item_id))
        extra = len(result) - found  # the chunk's ids are distinct: each found one is counted once
        if extra:
            self._unrequested_ids += extra
            logger.debug("%s() returned %d id(s) it was not asked for", self.name, extra)

    def _missing_error(self, item_id: Any) -> Exception:
        if self.missing == "error":
            return MissingIdError(item_id, self.name)
        return SkippedIdError(f"{self.name}() returned no value for id {item_id!r} (skipped)")

    async def _attempt(self, chunk: list[Any]) -> Mapping[Any, Any]:
        """One call of the origin with ``chunk`` (a fresh list each time: it may be mutated)."""
        self._origin_calls += 1
        self._ids_requested += len(chunk)
        self._largest_batch = max(self._largest_batch, len(chunk))
        metrics = self.metrics
        start = trio.current_time() if metrics is not None else 0.0
        if metrics is not None:
            metrics.record_fetch(self.name)
        try:
            result = await self.func(list(chunk))
            if not isinstance(result, Mapping):
                raise TypeError(
                    f"{self.name}() must return a mapping of id to value, "
                    f"got {type(result).__name__}"
                )
        except Exception as exc:
            self._failed_calls += 1
            if metrics is not None:
                metrics.record_error(self.name, "fetch", type(exc).__name__)
            raise
        finally:
            if metrics is not None:
                metrics.record_latency(self.name, "fetch", trio.current_time() - start)
        return result


__all__ = ["BatchOrigin", "BatchStatistics", "ClientBatches", "MissingIdError", "SkippedIdError"]
