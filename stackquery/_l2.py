"""The client's second tier: a byte store behind a serializer, batching and a timeout.

Reads are batched: every key asked for while a read is under way goes out in
the next ``get_many``.  Writes are behind: ``write_soon`` serializes the value
at once (so a value mutated later is stored as it was fetched) and a writer
task drains the latest op per key in batches, retrying with backoff while the
store is down.  Nothing here raises into a reader: a failing, slow or corrupt
store is a miss, counted in :class:`L2Statistics` and logged.

Every store call runs in a task of its own (:class:`_StoreCall`), so that
whoever waits for it stops at ``l2_timeout`` whatever the store is made of.
The call is cancelled then too, which stops an async store; a call in a
worker thread (``SQLiteStorage``, ``FileStorage``) cannot be stopped and
finishes when its thread does.  What it finishes with is not lost nor used
twice: a late read's answer is dropped (its readers were told "miss" at the
deadline), a late write that lands is counted as written once, and the writer
sends nothing else to the store until that call has ended, so a newer value
of a key never lands before an older one still in a thread.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
from functools import partial
from itertools import repeat
from operator import is_not
from typing import Any

import attrs
import trio

from actors import Reply
from backends import ops

from ._entry import CorruptEntryError, StoredEntry, pack_entry, try_unpack_entry
from ._entry_batch import BatchEntries, unpack_batch, unpack_entries
from ._retry import Backoff
from ._throttle import ThrottledWarning
from .serializers import Serializer

logger = logging.getLogger("stackquery.l2")

_RETRY_BACKOFF_MAX = 1.0
"""Seconds at most between two tries of a write while the store is down.

Short, so that what queued up during an outage lands within a second of the
store's return; a try against a store that is down costs one failed call."""


@attrs.frozen
class L2Statistics:
    """Counts of what the second tier did since the client opened."""

    reads: int
    """Keys asked for."""
    read_batches: int
    """``get_many`` calls made for them."""
    hits: int
    misses: int
    corrupt: int
    """Entries that could not be decoded (counted as misses too)."""
    writes: int
    """Entries written."""
    deletes: int
    errors: int
    """Store calls that failed or timed out."""
    serialize_errors: int
    """Values the serializer could not encode (kept in L1 only)."""
    pending_writes: int
    """Writes and deletes waiting for the writer."""
    dropped_writes: int
    """Writes and deletes given up at shutdown: every one queued or in the batch
    being stored when ``shutdown_timeout`` ran out."""
    future_entries: int = 0
    """Entries stamped past now + ``MAX_CLOCK_SKEW``: taken as stale, stamped now."""


@attrs.frozen
class _Set:
    raw: bytes
    ttl: float | None
    data_updated_at: float
    invalidated: bool = False


@attrs.frozen
class _Delete:
    pass


_DELETE = _Delete()


def _taken(raws: list[bytes | None], start: int, end: int) -> list[bytes | None]:
    """``raws[start:end]``, those places of ``raws`` emptied (the part alone holds them, to
    be let go of as they are decoded)."""
    part = raws[start:end]
    raws[start:end] = [None] * len(part)
    return part


@attrs.define(eq=False)
class _BatchAsk:
    """Keys asked for together (:meth:`L2Cache.read_batch`): one reply for their list."""

    keys: list[str]
    reply: Reply[BatchEntries]
    pending: dict[int, StoredEntry | None] | None
    """By place in ``keys``: what a key with a write or delete not landed yet reads as."""


@attrs.define(eq=False)
class _StoreCall:
    """One store call, run in a task of its own so that its waiter can stop at ``deadline``.

    Whoever first learns that the call failed counts it: the call itself
    when it fails or is cut off by the deadline while its waiter still
    waits, else the waiter, at the deadline (``abandoned``).  A call that
    succeeds reports it through ``landed``, on time or late.
    """

    operation: str
    deadline: float
    landed: Callable[[Any], object] | None = None
    """Told the call's result once it succeeded, however late."""
    result: Any = None
    error: BaseException | None = None
    abandoned: bool = False
    """Its waiter stopped waiting at the deadline (and counted it failed)."""
    done: trio.Event = attrs.field(factory=trio.Event)


class L2Cache:
    """A ``StorageBackend`` seen through the client's serializer and key prefix.

    Args:
        store: the byte store.
        serializer: turns values into bytes and back.
        key_prefix: put before every key's canonical hash.
        timeout: seconds a store call may take before it counts as failed.
        reconnected: returns when the store is reachable again (Redis's
            ``wait_reconnected``): the writer's retry then goes at once.
    """

    def __init__(
        self,
        store: Any,
        serializer: Serializer,
        key_prefix: str,
        timeout: float,
        *,
        reconnected: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        self.store = store
        self._reconnected = reconnected
        self.serializer = serializer
        self.key_prefix = key_prefix
        self.timeout = timeout
        self.reads_in_caller = getattr(store, "cancel_safe_reads", False) is True
        """Whether a single read may go to the store from the caller's task
        (:meth:`read_now`): the store's ``get`` honours trio cancellation at once."""
        self.reads_now = 0
        """Reads out from callers' tasks: while one is, more go to the batch (one MGET)."""
        self._reads: dict[str, Reply[StoredEntry | None]] = {}
        self._reads_since = 0.0
        """When the oldest read in ``_reads`` was asked for: its answer is due ``timeout`` later."""
        self._batches: list[_BatchAsk] = []
        """Reads of many keys asked for together, for the same next ``get_many``."""
        self._reads_wanted = trio.Event()
        self._writes: dict[str, _Set | _Delete] = {}
        self._writes_wanted = trio.Event()
        self._writing: dict[str, _Set | _Delete] = {}
        """What the writer is storing now and has not landed yet (not in the store for sure)."""
        self._writer_stopped = False
        """Set at close once the writer has ended: a write queued then is counted dropped."""
        self._drained = trio.Event()
        self._drained.set()
        self._stats: defaultdict[str, int] = defaultdict(int)
        self._error_log = ThrottledWarning(logger)
        self.on_written: Callable[[list[tuple[str, float]]], None] | None = None
        """Told (key hash, data_updated_at) of entries once they landed in the store."""
        self.on_deleted: Callable[[list[str]], None] | None = None
        """Told the key hashes deleted from the store once the deletes landed."""

    def statistics(self) -> L2Statistics:
        """Return the current :class:`L2Statistics`."""
        s = self._stats
        return L2Statistics(
            reads=s["reads"],
            read_batches=s["read_batches"],
            hits=s["hits"],
            misses=s["misses"],
            corrupt=s["corrupt"],
            writes=s["writes"],
            deletes=s["deletes"],
            errors=s["errors"],
            serialize_errors=s["serialize_errors"],
            pending_writes=len(self._writes),
            dropped_writes=s["dropped_writes"],
            future_entries=s["future_entries"],
        )

    def count_future_entry(self, entry: StoredEntry) -> None:
        """Count (and log) an entry read with a time past the clock-skew allowance."""
        self._stats["future_entries"] += 1
        self._error_log.warning(
            "L2 entry stamped %r, past the clock-skew allowance, taken as stale",
            entry.data_updated_at,
        )

    # -- reads -------------------------------------------------------------------

    async def read(self, key_hash: str) -> StoredEntry | None:
        """Return the key's entry from the store, or ``None`` (absent, corrupt, store down).

        Reads of many keys at once go out as one ``get_many``.  Cancelled,
        the caller stops waiting; the batch goes on for the others.  A key
        with a write or delete not landed yet reads as that op, not as the
        store's older entry (a key removed, or dropped from L1, before its
        write landed must not come back with the value it had before).
        """
        return await self.read_soon(key_hash).wait()

    def can_read_now(self, key_hash: str) -> bool:
        """Whether :meth:`read_now` suits this read: the store allows it, no other read is
        out or queued (many at once go out as one batch), no write of the key is pending."""
        return (
            self.reads_in_caller
            and not self.reads_now
            and not self._reads
            and not self._batches
            and key_hash not in self._writes
            and key_hash not in self._writing
        )

    def read_scope(self, now: float) -> trio.CancelScope:
        """A cancel scope for one :meth:`read_now`, its deadline ``timeout`` from ``now``
        (trio time now: the caller has the run's clock at hand).

        Made with its deadline (setting one later costs more), by the read's
        owner, who may cancel it to stop the read.
        """
        return trio.CancelScope(deadline=now + self.timeout)

    async def read_now(self, key_hash: str, scope: trio.CancelScope) -> StoredEntry | None:
        """Read the key's entry with one ``get`` from the caller's task (no batch, no hop).

        Use it when :meth:`can_read_now` says so, with a ``scope`` from
        :meth:`read_scope`: the ``get`` runs inside it, so that the read's one
        cancel scope serves as its timeout and as its owner's way to stop it
        (a scope costs a few µs to enter, a read pays for one).  A store that
        fails, or does not answer by the scope's deadline, is a miss, counted
        as the batched read counts it.  ``scope`` cancelled by its owner
        before the deadline abandons the ``get`` (the store drops its reply):
        ``None`` is returned, counted neither as a hit nor as a miss.
        Cancelled from outside ``scope``, the ``get`` is abandoned too and
        ``Cancelled`` propagates: a caller that shares the read must read
        again (:meth:`read_soon`).
        """
        stats = self._stats
        stats["reads"] += 1
        key = self.key_prefix + key_hash
        raw: bytes | None = None
        self.reads_now += 1
        with scope:
            try:
                raw = ops.as_bytes(await self.store.get(key))  # ops.get, one frame less
            except Exception as exc:
                self._on_error("get", exc)
            finally:
                self.reads_now -= 1
        if scope.cancelled_caught:
            if trio.current_time() < scope.deadline:
                return None  # stopped by its owner, not by the deadline
            self._on_error("get", trio.TooSlowError(f"no answer within {self.timeout:g} s"))
        entry = try_unpack_entry(raw, self.serializer, self._on_corrupt, key=key)
        stats["hits" if entry is not None else "misses"] += 1
        return entry

    def read_soon(self, key_hash: str) -> Reply[StoredEntry | None]:
        """Ask for the key's entry as :meth:`read` does; return the reply it arrives in.

        Synchronous: the reply is already set when a pending write answers;
        else the next batch sets it (``None`` too if the reader is cancelled).
        """
        self._stats["reads"] += 1
        pending = self._pending_op(key_hash)
        if pending is not None:
            entry = self._pending_entry(key_hash, pending)
            self._stats["hits" if entry is not None else "misses"] += 1
            answered: Reply[StoredEntry | None] = Reply()
            answered.set_value(entry)
            return answered
        reply = self._reads.get(key_hash)
        if reply is None:
            if not self._reads:
                self._reads_since = trio.current_time()
            reply = self._reads[key_hash] = Reply()
            self._reads_wanted.set()
        return reply

    def read_batch(self, key_hashes: list[str]) -> Reply[BatchEntries]:
        """Ask for the entries of ``key_hashes`` together; return the one reply they arrive
        in (by place).  Synchronous.

        The keys go out in the next ``get_many``, as :meth:`read_soon`'s do, but a batch
        of keys costs one reply, not one per key.  A key with a write or delete not landed
        yet reads as that op, as in :meth:`read_soon`.  The reader cancelled, every key
        misses.
        """
        reply: Reply[BatchEntries] = Reply()
        if not key_hashes:
            reply.set_value(BatchEntries.missing(0))
            return reply
        self._stats["reads"] += len(key_hashes)
        pending: dict[int, StoredEntry | None] | None = None
        if self._writes or self._writing:
            pending = {}
            for place, key_hash in enumerate(key_hashes):
                op = self._pending_op(key_hash)
                if op is not None:
                    pending[place] = self._pending_entry(key_hash, op)
        if not self._reads and not self._batches:
            self._reads_since = trio.current_time()
        self._batches.append(_BatchAsk(key_hashes, reply, pending))
        self._reads_wanted.set()
        return reply

    def _pending_op(self, key_hash: str) -> _Set | _Delete | None:
        """The key's write or delete queued or being stored, if any (the latest)."""
        op = self._writes.get(key_hash)
        return self._writing.get(key_hash) if op is None else op

    def _pending_entry(self, key_hash: str, op: _Set | _Delete) -> StoredEntry | None:
        """What a read of the key finds while ``op`` (its write or delete) has not landed."""
        if not isinstance(op, _Set):
            return None
        return try_unpack_entry(
            op.raw, self.serializer, self._on_corrupt, key=self.key_prefix + key_hash
        )

    async def run_reader(self) -> None:
        """Serve batched reads until cancelled; cancelled, the reads left unanswered miss.

        Each read is answered within ``timeout`` of being asked for: a batch
        goes out with the deadline of its oldest read, and one the store has
        not answered by then is a miss for all its keys (what the store says
        later is dropped).  Cancelled, it returns once the store calls it
        started have ended (a call in a worker thread ends with its thread).
        """
        batch: dict[str, Reply[StoredEntry | None]] = {}
        asks: list[_BatchAsk] = []
        async with trio.open_nursery() as calls:
            try:
                while True:
                    await self._reads_wanted.wait()
                    self._reads_wanted = trio.Event()
                    batch, self._reads = self._reads, {}
                    asks, self._batches = self._batches, []
                    keys = list(batch)
                    for ask in asks:
                        keys += ask.keys
                    self._stats["read_batches"] += 1
                    raws = await self._get_many(calls, keys, self._reads_since + self.timeout)
                    self._answer(batch, asks, keys, raws)
            finally:
                # A caller waiting from outside the client must not wait forever.
                for reply in [*batch.values(), *self._reads.values()]:
                    if not reply.is_set:
                        reply.set_value(None)
                for ask in [*asks, *self._batches]:
                    if not ask.reply.is_set:
                        ask.reply.set_value(BatchEntries.missing(len(ask.keys)))
                self._reads = {}
                self._batches = []

    def _answer(
        self,
        batch: dict[str, Reply[StoredEntry | None]],
        asks: list[_BatchAsk],
        keys: list[str],
        raws: list[bytes | None],
    ) -> None:
        """Decode what the store answered for ``keys`` and set each read's reply: each of
        ``batch``'s keys (listed first in ``keys``), then each of ``asks`` (in turn).

        Each raw entry is let go of as it is decoded (``raws`` is emptied), so
        that its memory is there for the decoded value: a batch of large
        entries is then not two batches' worth of fresh memory at once.
        """
        serializer, on_corrupt, prefix = self.serializer, self._on_corrupt, self.key_prefix
        start = len(batch)
        if batch:
            entries = unpack_entries(
                _taken(raws, 0, start), serializer, on_corrupt, prefix, keys[:start]
            )
            for key_hash, entry in zip(batch, entries, strict=True):
                batch[key_hash].set_value(entry)
            hits = sum(map(is_not, entries, repeat(None, start)))
        else:
            hits = 0
        for ask in asks:
            end = start + len(ask.keys)
            part = raws if start == 0 and end == len(raws) else _taken(raws, start, end)
            answered = unpack_batch(part, serializer, on_corrupt, prefix, ask.keys)
            start = end
            if ask.pending:
                for place, entry in ask.pending.items():
                    answered.put(place, entry)
            hits += answered.hits()
            ask.reply.set_value(answered)
        self._stats["hits"] += hits
        self._stats["misses"] += len(keys) - hits

    async def _get_many(
        self, calls: trio.Nursery, keys: list[str], deadline: float
    ) -> list[bytes | None]:
        prefix = self.key_prefix
        # An addition in a comprehension: a third cheaper than map(prefix.__add__, keys).
        names = [prefix + key for key in keys] if prefix else keys  # "" + key is key
        read = partial(ops.get_many, self.store, names)
        call = self._start(calls, "get_many", read, deadline)
        try:
            raws: list[bytes | None] = await self._wait(call)
        except Exception:  # counted by _wait or the call
            return [None] * len(keys)
        return raws

    # -- store calls ----------------------------------------------------------------

    def _start(
        self,
        nursery: trio.Nursery,
        operation: str,
        call: Callable[[], Awaitable[Any]],
        deadline: float,
        *,
        landed: Callable[[Any], object] | None = None,
    ) -> _StoreCall:
        handle = _StoreCall(operation, deadline, landed)
        nursery.start_soon(self._run_call, handle, call, name=f"stackquery-l2-{operation}")
        return handle

    async def _run_call(self, handle: _StoreCall, call: Callable[[], Awaitable[Any]]) -> None:
        try:
            with trio.CancelScope(deadline=handle.deadline) as scope:
                try:
                    handle.result = await call()
                except Exception as exc:
                    handle.error = exc
            if scope.cancelled_caught:
                handle.error = trio.TooSlowError(f"no answer within {self.timeout:g} s")
            if handle.error is None:
                if handle.landed is not None:
                    handle.landed(handle.result)
            elif not handle.abandoned:
                self._on_error(handle.operation, handle.error)
        finally:
            handle.done.set()

    async def _wait(self, handle: _StoreCall) -> Any:
        """Return the call's result, or raise its error; at its deadline, TooSlowError.

        Every error raised here has been counted (here or by the call).
        """
        with trio.move_on_at(handle.deadline):
            await handle.done.wait()
        if not handle.done.is_set():
            handle.abandoned = True
            error = trio.TooSlowError(f"no answer within {self.timeout:g} s")
            self._on_error(handle.operation, error)
            raise error
        if handle.error is not None:
            raise handle.error
        return handle.result

    def _on_corrupt(self, error: CorruptEntryError) -> None:
        self._stats["corrupt"] += 1
        logger.warning("L2 entry ignored as a miss: %s", error)

    def _on_error(self, operation: str, error: BaseException) -> None:
        self._stats["errors"] += 1
        self._error_log.warning(
            "L2 %s failed (%d errors so far): %r", operation, self._stats["errors"], error
        )

    # -- writes --------------------------------------------------------------------

    def write_soon(
        self,
        key_hash: str,
        value: Any,
        *,
        data_updated_at: float,
        ttl: float | None,
        invalidated: bool = False,
    ) -> bool:
        """Queue ``value`` to be written; return whether it was queued.  Synchronous, never raises.

        A value the serializer cannot encode stays in L1 only (not queued);
        the failure is counted and logged.
        """
        raw = self._pack(key_hash, value, data_updated_at, invalidated)
        if raw is None:
            return False
        self._queue(key_hash, _Set(raw, ttl, data_updated_at, invalidated))
        return True

    def _pack(
        self, key_hash: str, value: Any, data_updated_at: float, invalidated: bool
    ) -> bytes | None:
        try:
            return pack_entry(
                value,
                data_updated_at=data_updated_at,
                serializer=self.serializer,
                invalidated=invalidated,
                key=self.key_prefix + key_hash,
            )
        except Exception as exc:
            self._stats["serialize_errors"] += 1
            logger.warning("value of query %s not written to L2: %s", key_hash, exc)
            return None

    def delete_soon(self, key_hash: str) -> None:
        """Queue the key's deletion; synchronous, never raises."""
        self._queue(key_hash, _DELETE)

    def _queue(self, key_hash: str, op: _Set | _Delete) -> None:
        if self._writer_stopped:
            # A fetch that landed as the client closed: no writer is left to store it.
            self._count_dropped(1, "queued after the writer had stopped")
            return
        self._writes.pop(key_hash, None)  # the latest op goes last, after older keys
        self._writes[key_hash] = op
        self._drained = trio.Event() if self._drained.is_set() else self._drained
        self._writes_wanted.set()

    async def run_writer(self) -> None:
        """Drain queued writes until cancelled, retrying with backoff while the store fails.

        Cancelled, it returns once the store calls it started have ended (a
        call in a worker thread ends with its thread).
        """
        backoff = Backoff(first=0.2, cap=_RETRY_BACKOFF_MAX)
        async with trio.open_nursery() as calls:
            while True:
                if not self._writes:
                    self._drained.set()
                    await self._writes_wanted.wait()
                self._writes_wanted = trio.Event()
                batch, self._writes = self._writes, {}
                self._writing = dict(batch)
                try:
                    failed = await self._write_batch(calls, batch)
                finally:
                    self._writing = {}
                if failed:
                    for key_hash, op in failed.items():
                        self._writes.setdefault(key_hash, op)  # a newer op wins
                    await backoff.wait(wake=self._reconnected)
                else:
                    backoff.reset()

    async def _write_batch(
        self, calls: trio.Nursery, batch: dict[str, _Set | _Delete]
    ) -> dict[str, _Set | _Delete]:
        """Store ``batch``; return the ops that failed.

        Each store call is awaited to its end, however late: a call past the
        deadline is counted failed then, and the writer still waits for it
        (a write in a worker thread may land yet), so that nothing newer
        reaches the store before it.
        """
        prefix = self.key_prefix
        by_ttl: defaultdict[float | None, dict[str, bytes]] = defaultdict(dict)
        deletes: list[str] = []
        for key_hash, op in batch.items():
            if isinstance(op, _Set):
                by_ttl[op.ttl][prefix + key_hash] = op.raw
            else:
                deletes.append(key_hash)
        failed: dict[str, _Set | _Delete] = {}
        for ttl, items in by_ttl.items():
            keys = [full_key[len(prefix) :] for full_key in items]
            write = partial(ops.set_many, self.store, items, ttl)
            if not await self._store_to_the_end(calls, "set_many", write, "writes", keys):
                failed.update((key_hash, batch[key_hash]) for key_hash in keys)
        for key_hash in deletes:
            delete = partial(self.store.delete, prefix + key_hash)
            if not await self._store_to_the_end(calls, "delete", delete, "deletes", [key_hash]):
                failed[key_hash] = _DELETE
        if self.on_written is not None:
            written = [
                (key_hash, op.data_updated_at)
                for key_hash, op in batch.items()
                if isinstance(op, _Set) and key_hash not in failed and not op.invalidated
            ]
            if written:
                self.on_written(written)
        if self.on_deleted is not None:
            deleted = [key_hash for key_hash in deletes if key_hash not in failed]
            if deleted:
                self.on_deleted(deleted)
        return failed

    async def _store_to_the_end(
        self,
        calls: trio.Nursery,
        operation: str,
        call: Callable[[], Awaitable[Any]],
        counter: str,
        keys: list[str],
    ) -> bool:
        """Store a write or delete of ``keys``, awaited to its end; return whether it landed."""

        def landed(_result: object) -> None:
            # Counted as it leaves _writing: one that flush() gave up on (and
            # counted dropped) is not counted written too when it lands late.
            writing = self._writing
            self._stats[counter] += sum(writing.pop(key, None) is not None for key in keys)

        deadline = trio.current_time() + self.timeout
        handle = self._start(calls, operation, call, deadline, landed=landed)
        try:
            await self._wait(handle)
        except trio.TooSlowError:
            if handle.abandoned:
                await handle.done.wait()  # still running (a worker thread): it may land yet
        except Exception:  # counted by the call
            pass
        return handle.done.is_set() and handle.error is None

    async def wait_drained(self) -> None:
        """Return once no write or delete is queued or being stored (at once if none is).

        Cancelled, it stops waiting; nothing else happens.
        """
        await self._drained.wait()
        # A write queued between the writer setting the event waited on and this
        # task running again replaced it with a new one, unset: wait for that one.
        while not self._drained.is_set():
            await self._drained.wait()

    async def flush(self, seconds: float) -> bool:
        """Wait up to ``seconds`` for queued writes to land; return whether they did.

        Every write and delete still queued or being stored when the time is
        up is counted as dropped, and one warning says how many.
        """
        with trio.move_on_after(seconds):
            await self.wait_drained()
            return True
        dropped = len(self._writes.keys() | self._writing.keys())  # a key once, however many ops
        self._writes = {}
        self._writing = {}  # given up: a late landing of one of these is not counted written
        self._count_dropped(
            dropped, f"{self.store!r} did not take them within shutdown_timeout ({seconds:g} s)"
        )
        return False

    def stop_writes(self) -> None:
        """The writer has stopped for good: what is queued now or later is counted dropped.

        A fetch whose origin returned as the client closed can land after
        :meth:`flush` saw the queue drained; its write has no writer left.
        Synchronous; never raises.
        """
        self._writer_stopped = True
        left, self._writes = len(self._writes), {}
        if left:
            self._count_dropped(left, "queued after the writer had stopped")

    def _count_dropped(self, dropped: int, why: str) -> None:
        self._stats["dropped_writes"] += dropped
        logger.warning("%d L2 writes dropped at close: %s", dropped, why)
