"""QueryActor: the one owner of a key's state while the key needs a task.

A key needs a task while something awaits on its behalf: a fetch in flight,
observers to keep fresh (``refetch_interval``).  The actor's message loop is
in :meth:`QueryActor.run` (its messages are in ``_messages``); one fetch,
top-down (L2 for a cold key, the fleet's lease, the origin with its retries,
then the new state), is :meth:`QueryActor._run_fetch`.  When the actor has nothing left to do it
returns from ``run`` and the registry passivates it: its last snapshot stays
in the L1 table, and the next message spawns a new actor that starts from it.

A cold key's first fetch needs no actor task: the registry only reserves
the actor (the key is busy, later callers join the fetch), and the caller
starts the fetch (see :meth:`QueryActor._wake`): in a free lane of the client
(``_fetch_lanes``: a task that runs it in its own body, whose cancel scope
cancels it), else in a task of the client's nursery, in a cancel scope of its
own.  The actor's own task starts when something only it can do comes
(observers, a message), and the reserved actor leaves the registry when its
fetch ends with nothing else to do.

Two operations are synchronous and run in the caller's task:
:meth:`claim_fetch` (join the fetch in flight, or register the next one) and
:meth:`add_observer` / :meth:`remove_observer`.  Like a connection pool that
assigns requests synchronously and then does its I/O, deciding there costs no
mailbox round trip, which is what lets 10,000 callers of one cold key share
one fetch for a few microseconds each.  Everything that awaits runs here, in
the actor's own nursery (or, a fetch started without the actor's task, in
the client's).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import trio

from actors import Mailbox, MailboxFull, Registry, Reply

from . import _state
from ._entry import StoredEntry
from ._errors import ClientClosedError, QueryCancelledError
from ._fetch_lanes import FetchLanes, Lane
from ._l2_tier import L2Tier
from ._messages import (
    WAKE,
    ApplyEntry,
    Cancel,
    Invalidate,
    Message,
    Observer,
    Remove,
    Reset,
    SetData,
    Wake,
)
from ._options import QueryClientConfig, QueryOptions
from ._origin_guard import origin_attempt, serve_stale_if_error, settle_not_modified
from ._query_cache import QueryCache
from ._query_context import NOT_MODIFIED
from ._query_fn import cacheable, run_callbacks
from ._retry import call_with_retries
from .fleet._leases import Lease, Leases


@attrs.define(eq=False)
class _Fetch:
    """One fetch in flight: who waits on it and how to cancel it."""

    reply: Reply[Any]
    options: QueryOptions[Any]
    previous: _state.Snapshot
    """The key's snapshot when the fetch started (``cancel_queries`` puts it back)."""
    scope: trio.CancelScope | None = None
    """Its own cancel scope; ``None`` in a lane (the lane's scope cancels it)."""
    lane: Lane | None = None
    """The lane it runs in (see ``_fetch_lanes``), if any."""
    invalidated: bool = False
    """Invalidated while in flight: its result lands, but not as fresh."""
    l2_read: bool = False
    """L2 was read for it already (by the caller that started it), or must not be
    (the fetch after a reset): the fetch goes to the origin."""
    outside: bool = False
    """It runs in a task of the client's nursery, not the actor's (see :meth:`QueryActor._wake`)."""
    early: bool = False
    """Its origin call was made at once, and its landing is joined until the next batch
    (see :meth:`QueryActor._run_fetch_outside`)."""
    close_landing: bool = False
    """Its landing is joined until its own task ends that, a batch later: no waiter woke."""

    def cancel(self) -> None:
        if self.lane is not None:
            self.lane.cancel()
        elif self.scope is not None:
            self.scope.cancel()


_NO_MAIL: Mailbox[Any] = Mailbox(1)
"""The mailbox a reserved actor without a task shows (see :attr:`QueryActor.mailbox`)."""
_NO_MAIL.close()


@attrs.frozen
class ActorParts:
    """What each :class:`QueryActor` of a client is made with."""

    cache: QueryCache
    config: QueryClientConfig
    tier: L2Tier | None = None
    """The L2 tier, or ``None`` without storage."""
    leases: Leases | None = None
    """The fleet's leases, or ``None`` without a fleet."""
    registry: Registry[str, QueryActor] | None = None
    """The registry that hosts the actors (without one, an actor only runs in its task)."""
    spawn: Callable[..., object] | None = None
    """Starts a task in the client's nursery: a fetch of an actor without its own task."""
    lanes: FetchLanes | None = None
    """Where such a fetch runs without a task or a cancel scope of its own, if a lane is free."""


def _plain_call(options: QueryOptions[Any]) -> bool:
    """Whether a fetch's first attempt is a plain ``await query_fn()`` (no timeout, no
    circuit breaker, no context argument)."""
    return (
        options.is_async
        and options.timeout is None
        and options.circuit is None
        and not options.takes_context
    )


class QueryActor:
    """Owns one key: runs its fetches, serves its observers, applies its messages."""

    # Defaults kept by the class until an actor changes them: a cold key's actor is made
    # for one fetch, and most of these never change in its life (fewer stores to make it).
    _crash: Exception | None = None
    """A bug in a fetch outside the actor's task, for that task to raise (see ``run``)."""
    options: QueryOptions[Any] | None = None
    _fetch: _Fetch | None = None
    _pending: Reply[Any] | None = None
    _pending_previous: _state.Snapshot | None = None
    _landed: tuple[Reply[Any], _state.Snapshot] | None = None
    """The reply of a fetch that landed in the current scheduling batch and the snapshot it
    published: a claim of the key unchanged joins it (see :meth:`_run_fetch_outside`)."""
    _wake_sent = False
    _refetch_after = False
    _skip_l2 = False
    """The next fetch goes to the origin without reading L2 (after a reset)."""
    _next_refetch_at = math.inf
    _nursery: trio.Nursery | None = None
    fetch_count = 0
    _mailbox: Mailbox[Message] | None = None
    """Made on first use (see :attr:`mailbox`)."""
    observers: Sequence[Observer] = ()
    """The key's observers, in the order they came: a new list at each change (none made
    for an actor that never has any, as a cold key's)."""

    def __init__(self, key_hash: str, parts: ActorParts) -> None:
        # One argument for the parts, not a keyword each: an actor is made per cold key,
        # and passing seven keywords cost about as much as the rest of making it.
        self.key_hash = key_hash
        self._registry = parts.registry
        self._spawn = parts.spawn
        """Starts a task in the client's nursery: a fetch of an actor without its own task."""
        self._lanes = parts.lanes
        """Where such a fetch runs without a cancel scope of its own, if a lane is free."""
        self._cache = parts.cache
        self._config = parts.config
        self._tier = parts.tier
        self._leases = parts.leases

    @property
    def mailbox(self) -> Mailbox[Message]:
        """The actor's mailbox, made when its task is started (or when it is asked for
        without a registry).

        An actor the registry only reserved has no mail (messages go through
        :meth:`Registry.activate`, which starts the task first): the registry's checks
        of it when the actor leaves, unhosted, see an empty, closed mailbox shared by
        all such actors, and a cold key's actor is made without one.
        """
        mailbox = self._mailbox
        if mailbox is None:
            registry = self._registry
            if registry is not None and self.key_hash not in registry.hosted:
                return _NO_MAIL
            mailbox = self._mailbox = Mailbox(self._config.mailbox_capacity)
        return mailbox

    @property
    def is_fetching(self) -> bool:
        """Whether a fetch is in flight or claimed."""
        return self._fetch is not None or self._pending is not None

    # -- synchronous, in the caller's task ------------------------------------

    def claim_fetch(self, options: QueryOptions[Any]) -> Reply[Any]:
        """Return the reply of the fetch in flight, or of the next one, claiming it.

        Synchronous and never blocks: the first caller of a cold key registers
        the fetch and wakes the actor; every later caller joins the same reply.
        The options given last are the ones the next fetch uses.
        """
        self.options = options
        if self._fetch is not None:
            return self._fetch.reply
        if self._pending is None:
            landed = self._landed
            if landed is not None and self._cache.get(self.key_hash) is landed[1]:
                return landed[0]
            reply = self._pending = Reply()
            self._wake()  # without a task of its own, the actor starts the fetch right here
            return reply
        return self._pending

    def continue_fetch(
        self, options: QueryOptions[Any], previous: _state.Snapshot, reply: Reply[Any]
    ) -> None:
        """Take over a fetch a caller started by reading L2 in its own task; synchronous.

        The key's snapshot is already published as fetching; ``previous`` is
        the one from before (``cancel_queries`` puts it back).  The fetch
        goes on from the lease and the origin, without reading L2 again;
        ``reply`` gets its outcome.  Only for an actor with no fetch claimed.
        """
        assert not self.is_fetching
        self.options = options
        # The origin call that follows starts after any invalidation made while L2
        # was read: it is the refetch that invalidation asked for.
        self._refetch_after = False
        self._pending = reply
        self._pending_previous = previous
        self._wake()

    def current_reply(self) -> Reply[Any] | None:
        """The reply of the fetch in flight, else of the claimed one, else ``None``."""
        if self._fetch is not None:
            return self._fetch.reply
        return self._pending

    def add_observer(self, observer: Observer) -> None:
        """Attach ``observer``; start a fetch if it needs one; synchronous."""
        self.observers = [*self.observers, observer]
        self._cache.emit_observer(self.key_hash, added=True)
        opts = observer.options
        self.options = opts
        # A caller's cold L2 read of the key is its fetch: it hands over when it lands.
        if (
            opts.enabled
            and not self._cache.is_fresh_for(opts)
            and not self._cold_read_out()
            and self._cache.remembered_error(opts.key_hash) is None
        ):
            self.claim_fetch(opts)
        interval = self._cache.refetch_interval(opts) if opts.enabled else None
        if interval is not None:
            self._next_refetch_at = min(self._next_refetch_at, trio.current_time() + interval)
        self._wake()

    def after_cold_read(self, *, cancelled: bool = False) -> None:
        """A caller's cold L2 read of the key landed and settled it, or was cancelled
        (``cancelled``): tell the observers; synchronous, never raises.

        A refetch an invalidation asked for during the read is claimed now (the
        read served data set meanwhile, which the invalidation did not see), or
        dropped with the cancelled read.
        """
        if cancelled:
            self._refetch_after = False
        self.notify()
        self._claim_refetch_after()
        self._wake()

    def _cold_read_out(self) -> bool:
        tier = self._tier
        return tier is not None and self.key_hash in tier.cold_reads

    def remove_observer(self, observer: Observer) -> None:
        """Detach ``observer``; synchronous.  The gc countdown restarts when the last leaves."""
        observers = list(self.observers)
        try:
            observers.remove(observer)
        except ValueError:
            return
        self.observers = observers
        self._cache.emit_observer(self.key_hash, added=False)
        if not self.observers:
            self._next_refetch_at = math.inf
            snap = self._cache.get(self.key_hash)
            if snap is not None:
                self._cache.publish(_state.used(snap, now=trio.current_time()))
        self._wake()

    def _wake(self) -> None:
        """Make sure what is to be done gets done: by the actor's task, or without one.

        An actor the registry only reserved (no task of its own) starts a
        claimed fetch right here, in a task of the client's nursery: a cold
        key's first fetch then costs that one task, not the actor's task, its
        nursery and its mailbox loop as well.  It starts its own task once
        it has something only that task can do (observers, a message), and
        leaves the registry once it has nothing left to do.
        """
        registry = self._registry
        if registry is not None and self.key_hash not in registry.hosted:
            if self._pending is not None and self._fetch is None and self._spawn is not None:
                try:
                    self._start_pending_fetch()
                except Exception as exc:  # a bug: the actor's task raises it (a crash)
                    self._crash = exc
            mailbox = self._mailbox  # without a task, it has one only if it had mail
            mail = mailbox is not None and not mailbox.empty()
            if self._crash is not None or self.observers or mail:
                registry.activate(self.key_hash)
            elif self._fetch is None and self._pending is None and self._landed is None:
                registry.release(self.key_hash, self)
            return
        if self._wake_sent:
            return
        try:
            self.mailbox.tell_nowait(WAKE)
        except MailboxFull:
            return  # the loop has messages to handle and looks at pending work after each
        self._wake_sent = True

    # -- the message loop -------------------------------------------------------

    async def run(self) -> None:
        """Handle messages until idle: no fetch, no observers, empty mailbox.

        Called by the registry; called again by the supervisor after a crash,
        when an interrupted fetch is claimed again so its waiters still get an
        outcome.
        """
        crash, self._crash = self._crash, None
        if crash is not None:  # a fetch outside the actor's task crashed: crash here
            raise crash
        if self._fetch is not None and not self._fetch.outside:  # a crash interrupted it
            interrupted, self._fetch = self._fetch, None
            if self._pending is None:
                self._pending = interrupted.reply
            else:
                interrupted.reply.set_error(QueryCancelledError("the query's actor restarted"))
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                try:
                    await self._loop()
                finally:
                    self._nursery = None
        except BaseException as exc:
            if not isinstance(exc, Exception):
                # Cancelled: the client is closing and this task ends for good.
                # Callers and streams outside the client must not wait forever.
                self.stop()
            raise

    def stop(self) -> None:
        """The client is closing: wake every waiter with ``ClientClosedError``; end streams.

        Also reaches an actor whose crash escalated (no task runs it any more),
        so that nobody outside the client waits on it forever.
        """
        self._fail_waiters(ClientClosedError("the query client closed before the fetch finished"))
        for observer in list(self.observers):
            observer.on_close()

    def _fail_waiters(self, error: Exception) -> None:
        fetch, self._fetch = self._fetch, None
        pending, self._pending = self._pending, None
        self._pending_previous = None
        replies = [fetch.reply if fetch is not None else None, pending]
        while True:
            try:
                message = self.mailbox.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                break
            if not isinstance(message, Wake):
                replies.append(message.reply)
        for reply in replies:
            if reply is not None and not reply.is_set:
                reply.set_error(error)

    async def _loop(self) -> None:
        while True:
            self._start_pending_fetch()
            if self._fetch is None and not self.observers and self.mailbox.empty():
                return
            if self._next_refetch_at == math.inf:  # no refetch interval: no cancel scope
                message = await self.mailbox.receive()
            else:
                with trio.move_on_at(self._next_refetch_at) as interval:
                    message = await self.mailbox.receive()
                if interval.cancelled_caught:
                    self._on_refetch_interval()
                    continue
            try:
                self._handle(message)
            except Exception as exc:
                # A bug: the supervisor restarts the actor, and the asker
                # must not wait forever for a reply that will never come.
                if not isinstance(message, Wake) and not message.reply.is_set:
                    message.reply.set_error(exc)
                raise

    def _handle(self, message: Message) -> None:
        if isinstance(message, Wake):
            self._wake_sent = False
        elif isinstance(message, Invalidate):
            self._invalidate(message.refetch, persist=message.persist)
            message.reply.set_value(None)
        elif isinstance(message, ApplyEntry):
            tier = self._tier
            if tier is not None and tier.apply_entry(self.key_hash, message.entry) is not None:
                self.notify()
            message.reply.set_value(None)
        elif isinstance(message, SetData):
            try:
                snap = self._cache.set_data(
                    self.key_hash, message.updater, message.updated_at, self.options
                )
            except Exception as exc:
                message.reply.set_error(exc)
            else:
                self._persist(snap)
                message.reply.set_value(snap.data)
                self.notify()
        elif isinstance(message, Cancel):
            self._cancel_fetch(revert=message.revert, why="cancel_queries")
            message.reply.set_value(None)
        elif isinstance(message, Remove):
            self._cancel_fetch(revert=False, why="remove_queries")
            self._drop(delete_l2=message.delete_l2)
            self.notify()
            message.reply.set_value(None)
        elif isinstance(message, Reset):
            self._cancel_fetch(revert=False, why="reset_queries")
            self._drop(delete_l2=False)
            error: Exception | None = None
            observed = self.observed_options()
            if observed is not None:  # unobserved, the key is simply gone, as if passivated
                # Published, not only created: that arms the key's gc timer.
                try:
                    self._cache.publish(self._cache.create(observed))
                except Exception as exc:  # initial_data raised: the caller's error, not a crash
                    error = exc
                    self._cache.publish(
                        self._cache.create_for_key(
                            self.key_hash, stale_time=observed.stale_time, gc_time=observed.gc_time
                        )
                    )
                self.notify()
                # Reset means asking the origin again: not reading L2's copy back.
                self._skip_l2 = True
                self.claim_fetch(observed)
            if error is not None:
                message.reply.set_error(error)
            else:
                message.reply.set_value(None)
        else:  # pragma: no cover - exhaustive
            raise AssertionError(f"unknown message {message!r}")

    def observed_options(self) -> QueryOptions[Any] | None:
        """The options of the first enabled observer (what a refetch uses), or ``None``."""
        for observer in self.observers:
            if observer.options.enabled:
                return observer.options
        return None

    def _invalidate(self, refetch: bool, *, persist: bool = True) -> None:
        snap = self._cache.mark_invalidated(self.key_hash)
        if snap is not None:
            if persist:
                self._persist(snap)
            self.notify()
        if self._fetch is not None:
            self._fetch.invalidated = True
        opts = self.observed_options()
        if refetch and opts is not None:
            # After the fetch in flight (a caller's cold L2 read included): the
            # refetch is owed even if data is set before that fetch ends.
            if self._fetch is not None or self._cold_read_out():
                self._refetch_after = True
            else:
                self.claim_fetch(opts)

    def _on_refetch_interval(self) -> None:
        asked = [
            self._cache.refetch_interval(o.options)
            for o in self.observers
            if o.options.enabled and o.options.refetch_interval is not None
        ]
        intervals = [interval for interval in asked if interval is not None]
        if not intervals:
            self._next_refetch_at = math.inf
            return
        self._next_refetch_at = trio.current_time() + min(intervals)
        if not self.is_fetching and not self._cold_read_out():
            opts = self.observed_options()
            if opts is not None:
                self.claim_fetch(opts)

    def _resume_polling(self) -> None:
        """Data landed while no observer polls: a ``refetch_interval`` function may want to again.

        (A number never stops polling; a function that said ``None`` is asked again here.)
        """
        if self._next_refetch_at != math.inf or not self.observers:
            return
        for observer in self.observers:
            opts = observer.options
            if opts.enabled and callable(opts.refetch_interval):
                interval = self._cache.refetch_interval(opts)
                if interval is not None:
                    self._next_refetch_at = min(
                        self._next_refetch_at, trio.current_time() + interval
                    )

    def notify(self) -> None:
        """Tell every observer the key's current state; an observer never raises."""
        if not self.observers:
            return  # most fetches have none: build no state for nobody
        state = self._cache.state(self.key_hash)
        for observer in list(self.observers):
            observer.on_state(state)

    # -- the fetch --------------------------------------------------------------

    def _start_pending_fetch(self) -> None:
        outside = self._nursery is None
        if self._pending is None or self._fetch is not None or (outside and self._spawn is None):
            return
        reply, self._pending = self._pending, None
        options = self.options
        assert options is not None
        cache = self._cache
        snap = cache.snapshots.get(self.key_hash)
        previous, self._pending_previous = self._pending_previous, None
        skip_l2, self._skip_l2 = self._skip_l2, False
        if previous is not None and snap is not None:  # a caller's L2 read came first
            fetch = _Fetch(reply=reply, options=options, previous=previous, l2_read=True)
        else:
            if snap is None:
                try:
                    # Made fetching at once.  It serves as the snapshot from before the
                    # fetch too: what cancel_queries puts back is the same in both.
                    previous = cache.create(options, fetching=True)
                except Exception as exc:  # initial_data raised: this fetch's error, not a crash
                    reply.set_error(exc)
                    return
            else:
                previous = snap
                cache.publish(_state.fetching(snap, now=cache.now()))
            fetch = _Fetch(reply=reply, options=options, previous=previous, l2_read=skip_l2)
        self._fetch = fetch
        self.fetch_count += 1
        if self.observers:
            self.notify()
        if outside:
            assert self._spawn is not None
            fetch.outside = True
            lanes = self._lanes
            # In a lane only without L2: a lease must be ended (awaited) after a cancel.
            if lanes is not None and self._tier is None:
                fetch.lane = lanes.start_soon(self._run_fetch_outside, fetch)
                if fetch.lane is not None:
                    return
            fetch.scope = trio.CancelScope()
            # A str name: trio makes one of anything else, at a cost (a repr).
            self._spawn(self._run_fetch_outside, fetch, name="stackquery-fetch " + self.key_hash)
        else:
            assert self._nursery is not None
            fetch.scope = trio.CancelScope()
            self._nursery.start_soon(self._run_fetch, fetch)

    async def _run_fetch_outside(self, fetch: _Fetch) -> None:
        """:meth:`_run_fetch` in a task of the client's nursery (or in a lane, one of its
        tasks), which it must never crash.

        A bug is handed to the actor's own task, started for it, which
        raises it: the supervisor restarts the actor as after any crash (or
        escalates), and the fetch, claimed again, reruns for its waiters.
        Cancellation (the client closing) wakes them with
        ``ClientClosedError``, as the actor's own task does when cancelled.
        """
        try:
            # The tasks started alongside the claim (a @bg refresh loop's first
            # refetch beside its first call) run in the batch after it, where this
            # fetch starts: they must find it in flight, or landed, and join it.
            options = fetch.options
            # Without L2, and its landing runs no code but the cache's own (no callbacks,
            # no event listeners) that could start a task, which a landing joined until
            # the next batch would let see it and claim the key again before that batch.
            if (
                self._tier is None
                and options.on_success is None
                and options.on_error is None
                and options.on_settled is None
                and not self._cache.events.listening
            ):
                # Its origin is called at once, and may return in this very batch:
                # then its landing is joined as the fetch in flight would be (see
                # claim_fetch) until the next batch, ended there by the first waiter
                # to resume (before it sees the outcome) or else by this task.  A cold
                # key's caller so wakes in the batch after next: two batches, not three.
                fetch.early = True
                await self._run_fetch(fetch)
                if fetch.close_landing:
                    await trio.lowlevel.cancel_shielded_checkpoint()
                    self._end_landing(fetch.reply)
            else:
                # It lands no sooner than the batch after next, as it does when the
                # actor's task starts it.
                await trio.lowlevel.checkpoint()
                await self._run_fetch(fetch)
        except Exception as exc:
            self._landed = None  # the actor's task starts, below
            if self._fetch is fetch:
                self._fetch = None
                if self._pending is None:
                    self._pending = fetch.reply
                else:
                    fetch.reply.set_error(QueryCancelledError("the query's actor restarted"))
            self._crash = exc
            assert self._registry is not None  # only a registry's actors fetch outside
            self._registry.activate(self.key_hash)
        except BaseException:
            self._landed = None  # the actor leaves the registry, below
            registry = self._registry
            if registry is not None and not registry.is_hosted(self.key_hash):
                if self._fetch is fetch:
                    self.stop()
                registry.release(self.key_hash, self)  # cancelled for good: as a task would
            raise
        if fetch.lane is None and self._lanes is not None and self._tier is None:
            # It ended well in a task of its own: a lane for the fetches that follow.
            self._lanes.add_lane()

    def _end_landing(self, reply: Reply[Any]) -> None:
        """The batch ``reply``'s fetch landed in has ended: a claim starts a fetch again, and the
        actor, reserved and left with nothing to do, leaves the registry."""
        landed = self._landed
        if landed is not None and landed[0] is reply:
            self._landed = None
            self._wake()

    async def _run_fetch(self, fetch: _Fetch) -> None:
        """One fetch, top-down: L2 (a cold key), the fleet's lease, the origin, then publish."""
        cache = self._cache
        lease: Lease | None = None
        if fetch.scope is None:  # in a lane, so no L2: the origin (a cancel ends the task)
            options = fetch.options
            # Most fetches: a plain call (_plain_call written out), here, one coroutine less
            # than _attempts.
            if (
                options.is_async
                and options.timeout is None
                and options.circuit is None
                and not options.takes_context
            ):
                try:
                    ok, result = True, await options.query_fn()
                except Exception as exc:
                    ok, result = await self._attempts(fetch, exc)
            else:
                ok, result = await self._attempts(fetch)
        else:
            with fetch.scope:
                if self._tier is not None:  # without L2 (and so without a fleet): the origin
                    cold = not fetch.previous.has_data and not fetch.l2_read
                    if cold and await self._load_from_l2(fetch):
                        return
                    got = await self._lease(fetch)
                    if isinstance(got, StoredEntry):
                        self._settle_from_fleet(fetch, got)
                        return
                    lease = got
                    if fetch.invalidated:
                        # Invalidated while waiting for another process's value: the
                        # origin call that follows starts after the invalidation.
                        fetch.invalidated = False
                        self._refetch_after = False
                if lease is None:
                    ok, result = await self._attempts(fetch)
                else:
                    ok, result = await self._attempts_holding(fetch, lease)
        if self._fetch is not fetch:
            if lease is not None:
                await self._end_lease(lease, None)
            return  # cancelled or removed: whoever did it settled the waiters
        self._fetch = None
        options = fetch.options
        snap = cache.snapshots.get(self.key_hash)
        if snap is None:
            snap = cache.create(options)
        now = cache.now()
        # The calls only where they can change anything: each fetch lands here.
        if ok and result is NOT_MODIFIED:
            ok, result = settle_not_modified(snap, ok, result, options)
        kept = ok and (options.cache_if is None or cacheable(options, result))
        # The first waiter to resume ends the landing's window (see _run_fetch_outside).
        ended = self._end_landing if fetch.early else None
        if kept:
            if fetch.invalidated:
                snap = cache.with_data(snap, result, fetch.options, updated_at=now)
                snap = _state.idle(_state.invalidated(snap, now=now), now=now)
            else:  # one snapshot made for the landing
                snap = cache.with_data(
                    snap, result, fetch.options, updated_at=now, idle=True, now=now
                )
            snap = cache.publish(snap)
            if lease is None and self._tier is not None:
                self._tier.persist(snap)
            woke = fetch.reply.set_value(result, ended)
        elif ok:  # cache_if refused it: the waiters get it, L1 and L2 do not
            snap = cache.publish(_state.idle(snap, now=now))
            woke = fetch.reply.set_value(result, ended)
        else:
            # A failed fetch: the error is remembered for error_ttl first (reads in that
            # window get it, or servable data, without calling the origin or asking its
            # circuit breaker; a CircuitOpenError is remembered like any other error), then
            # stale_if_error decides what this fetch's waiters get: the last good data while
            # it is within stale_if_error of the moment it stopped being servable.
            snap = cache.publish(self._failed(fetch, snap, result, now))
            if serve_stale_if_error(cache, snap, fetch.options, fetch.reply.waiters):
                woke = fetch.reply.set_value(snap.data, ended)
            else:
                woke = fetch.reply.set_error(result, ended)
        if fetch.early and not self.observers and not self._refetch_after:
            # Observed, its landing is not joined: an observer may ask again on seeing it.
            self._landed = (fetch.reply, snap)
            fetch.close_landing = not woke
        if self.observers:
            self.notify()
        if not fetch.early:  # an early fetch's options have no callbacks
            run_callbacks(options, ok, result)
        if self.observers:
            self._resume_polling()
        if self._refetch_after:
            self._claim_refetch_after()
        if self._landed is None:  # else the landing's end does (see _end_landing)
            self._wake()
        if lease is not None:
            await self._end_lease(lease, snap if kept else None)

    def _failed(
        self, fetch: _Fetch, snap: _state.Snapshot, error: Any, now: float
    ) -> _state.Snapshot:
        """The key after its fetch failed for good; the error remembered for ``error_ttl``
        (unless the key was invalidated meanwhile: then the next read asks again)."""
        cache = self._cache
        snap = _state.failed(snap, error, now=now, now_wall=cache.clock.wall(now))
        error_ttl = fetch.options.error_ttl
        if error_ttl is not None and not fetch.invalidated:
            snap = _state.error_remembered(snap, until=now + error_ttl)
        return snap

    def _claim_refetch_after(self) -> None:
        """The fetch that was in flight when the key was invalidated ended: refetch if observed."""
        if self._refetch_after:
            self._refetch_after = False
            opts = self.observed_options()
            if opts is not None:
                self.claim_fetch(opts)

    async def _lease(self, fetch: _Fetch) -> Lease | StoredEntry | None:
        """Take the fleet-wide lease of the key, or the value of whoever holds it."""
        leases, tier = self._leases, self._tier
        if leases is None or tier is None or not leases.single_flight(fetch.options):
            return None
        snap = self._cache.get(self.key_hash)
        seen = snap.data_updated_at if snap is not None else None
        return await leases.acquire_or_wait(
            self.key_hash,
            seen,
            lambda: tier.l2.read(self.key_hash),
            query_timeout=fetch.options.timeout,
        )

    async def _end_lease(self, lease: Lease, snap: _state.Snapshot | None) -> None:
        assert self._leases is not None  # only the fleet's leases hand out leases
        await self._leases.end_lease(lease, snap)

    async def _attempts_holding(self, fetch: _Fetch, lease: Lease) -> tuple[bool, Any]:
        leases = self._leases
        assert leases is not None  # only the fleet's leases hand out leases
        try:
            async with trio.open_nursery() as keeper:
                keeper.start_soon(leases.keep, lease)
                outcome = await self._attempts(fetch)
                keeper.cancel_scope.cancel()
            return outcome
        except BaseException:
            await self._end_lease(lease, None)
            raise

    def _settle_from_fleet(self, fetch: _Fetch, entry: StoredEntry) -> None:
        """Another process fetched the key: take its value instead of calling the origin."""
        self._fetch = None
        cache = self._cache
        if self._tier is not None:
            self._tier.apply_entry(self.key_hash, entry)
        snap = cache.get(self.key_hash)
        now = trio.current_time()
        if snap is not None:
            if fetch.invalidated:  # told of an invalidation while waiting: not fresh
                snap = _state.invalidated(snap, now=now)
            cache.publish(_state.idle(snap, now=now))
        fetch.reply.set_value(entry.value)
        self.notify()
        self._claim_refetch_after()
        self._wake()

    async def _load_from_l2(self, fetch: _Fetch) -> bool:
        """Load a cold key from L2 first; return whether that settled the fetch.

        Fresh data in L2 settles the fetch without calling ``query_fn``.
        Stale data is handed to the waiters at once and the fetch goes on as
        a background refresh.
        """
        tier = self._tier
        assert tier is not None
        cache = self._cache
        entry = await tier.read(self.key_hash)
        snap = cache.get(self.key_hash)
        if snap is None:
            return False
        # None: L1 holds data as new as the entry's (set while L2 was read).
        landed = tier.apply_entry(self.key_hash, entry) if entry is not None else None
        snap = landed or snap
        if not cache.servable(snap, fetch.options):
            return False
        owed = False
        if fetch.invalidated:
            # Invalidated while L2 was read: the stored data lands, but not as
            # fresh; the origin call that follows starts after the invalidation,
            # so it is the refetch the invalidation asked for: no second one.
            # Data set meanwhile is newer than the invalidation, and stays valid;
            # the refetch asked for still happens (TanStack starts it at once, and
            # a later setQueryData does not stop it).
            fetch.invalidated = False
            owed, self._refetch_after = self._refetch_after, False
            if landed is not None and not snap.is_invalidated:
                # L2 is told too, as the invalidation would have told it had the
                # entry been in L1: a failed refetch must not leave it fresh there.
                snap = cache.publish(_state.invalidated(snap, now=trio.current_time()))
                self._persist(snap)
        data = snap.data
        if cache.is_fresh(snap, fetch.options) and not (owed and self.observed_options()):
            self._fetch = None
            cache.publish(_state.idle(snap, now=trio.current_time()))
            fetch.reply.set_value(data)
            self.notify()
            self._wake()
            return True
        fetch.reply.set_value(data)
        fetch.reply = Reply()
        self.notify()
        return False

    async def _attempts(self, fetch: _Fetch, first: Exception | None = None) -> tuple[bool, Any]:
        """The fetch's attempts: the origin called with its retries; ``first``: the first
        attempt, a plain call, was made already and raised this."""
        options = fetch.options
        if first is None and _plain_call(options):
            # A plain call, made straight away (most fetches need no other):
            # the retry rule and the attempt function are for a failure.
            try:
                return True, await options.query_fn()
            except Exception as exc:
                first = exc
        rule = options.retry_rule.over(self._config.retry_rule)
        assert rule.should_retry is not None and rule.delay is not None  # the config has both

        def failed_attempt(_failures: int, _error: Exception) -> None:
            snap = self._cache.get(self.key_hash)
            if snap is not None:
                self._cache.publish(_state.attempt_failed(snap, now=trio.current_time()))

        return await call_with_retries(
            origin_attempt(options, self._cache),
            should_retry=rule.should_retry,
            delay=rule.delay,
            on_failed_attempt=failed_attempt,
            first_error=first,
        )

    def _cancel_fetch(self, *, revert: bool, why: str) -> None:
        error = QueryCancelledError(f"query fetch cancelled by {why}")
        # A refetch the invalidation of the cancelled fetch asked for goes with it.
        self._refetch_after = False
        if self._pending is not None:
            self._pending.set_error(error)
            self._pending = None
            self._pending_previous = None
        fetch, self._fetch = self._fetch, None
        if fetch is None:
            return
        fetch.cancel()
        snap = self._cache.get(self.key_hash)
        now = trio.current_time()
        if snap is not None:
            new = (
                _state.restored(snap, fetch.previous, now=now)
                if revert
                else _state.idle(snap, now=now)
            )
            self._cache.publish(new)
        fetch.reply.set_error(error)
        self.notify()

    # -- L1 and L2 together -----------------------------------------------------

    def _persist(self, snap: _state.Snapshot | None) -> None:
        if self._tier is not None:
            self._tier.persist(snap)

    def _drop(self, *, delete_l2: bool) -> None:
        self._cache.drop(self.key_hash)
        if delete_l2 and self._tier is not None:
            self._tier.delete_soon(self.key_hash)
