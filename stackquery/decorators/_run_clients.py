"""Which query client a decorated function runs on, and the clients hosted for a trio run.

A decorated function runs on the client given by ``client=``; else, with
``store=``, on the run's client for that store; else on the innermost client
open in the current context; else on the run's default client.  The run's
clients (the default one, one per store) are opened on first use and live
until the ``trio.run`` ends: each is hosted by a trio *system task*, which
trio cancels only once the main task has returned.  Closing them then still
lets their pending L2 writes land (bounded by ``shutdown_timeout``): the host
is shielded and closes its client when a second system task, the watcher,
sees the run end.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from typing import final

import attrs
import trio

from .._client import QueryClient, current_client
from .._current import CALL_CLIENT
from .._options import QueryClientConfig

ClientResolver = Callable[[], QueryClient | None]
"""Returns the client a call runs on if it is open already, else ``None``."""


@final
@attrs.frozen
class ClientLookups:
    """Without ``client=``: the hot path's two tries to find a call's client, cheapest first.

    Each returns ``None`` when it finds nothing; the next is tried then.
    """

    first: ClientResolver
    """The client calls in this context use (:data:`CALL_CLIENT`: the innermost client open
    in it, else the run's default once adopted; a C call); with ``store=``, the store's."""
    last: ClientResolver
    """The run's default client of this thread, adopted by the context (a Python call,
    once per task)."""


@attrs.define(eq=False)
class _Hosted:
    """One client hosted for the rest of the run, and whether it is open."""

    client: QueryClient
    ready: trio.Event = attrs.field(factory=trio.Event)
    open: bool = False
    """Whether the client is open (``ready`` is set then): a flag for the hot path."""


@attrs.define(eq=False)
class _RunClients:
    """The clients hosted for one ``trio.run``."""

    closing: trio.Event = attrs.field(factory=trio.Event)
    default: _Hosted | None = None
    by_store: dict[int, tuple[object, _Hosted]] = attrs.field(factory=dict)
    """Keyed by ``id(store)``; the store is kept alive beside its client."""


_RUN_CLIENTS: trio.lowlevel.RunVar[_RunClients] = trio.lowlevel.RunVar("stackquery_run_clients")


@final
@attrs.frozen
class ClientChoice:
    """How a decorated function picks its client: ``client=``, ``store=``, or the context."""

    client: QueryClient | None = None
    store: object | None = None

    def resolver(self) -> ClientResolver:
        """Return the synchronous, allocation-free lookup the hot path calls."""
        if self.client is not None:
            # A C-level callable: the hit pays no Python frame to find its client.
            return itertools.repeat(self.client).__next__
        if self.store is not None:
            store_id = id(self.store)

            def store_client() -> QueryClient | None:
                hosted = _THREAD_CLIENTS.stores.get(store_id)
                return hosted.client if hosted is not None and hosted.open else None

            return store_client
        return _context_or_default

    def lookups(self) -> ClientLookups:
        """Without ``client=``: how the hot path finds the client (see :class:`ClientLookups`)."""
        if self.store is not None:
            return ClientLookups(self.resolver(), _none)
        return ClientLookups(read_call_client, adopt_run_default)

    async def open(self) -> QueryClient:
        """Return the client, opening the run's default or store client if needed.

        Raises:
            RuntimeError: called outside ``trio.run``.
        """
        if self.client is not None:
            await trio.lowlevel.checkpoint()
            return self.client
        if self.store is None:
            client = current_client()
            if client is not None:
                await trio.lowlevel.checkpoint()
                return client
        return await open_run_client(self.store)


class _ThreadClients(threading.local):
    """The default and store clients of the trio run in this thread, once open.

    The hot path reads it instead of the RunVar (a RunVar lookup costs about
    as much as the whole hit), once per task: :func:`adopt_run_default` then
    puts the default client in the task's context.  Sound because a thread
    runs one trio.run at a time and a run's default client is withdrawn
    before its run returns; a later run in the thread finds none and looks
    again (its tasks' contexts are new: nothing adopted in the earlier run).
    """

    hosted: _Hosted | None = None
    client: QueryClient | None = None
    """``hosted.client`` while it is open, else ``None``: one attribute read for the hot path."""
    stores: dict[int, _Hosted]
    """The run's open store clients, by ``id(store)``."""

    def __init__(self) -> None:
        self.stores = {}


_THREAD_CLIENTS = _ThreadClients()


read_call_client: ClientResolver = CALL_CLIENT.get
"""The client a decorated call in this context uses, as a C call (see :data:`CALL_CLIENT`)."""

_none: ClientResolver = itertools.repeat(None).__next__


def adopt_run_default() -> QueryClient | None:
    """Return the run's default client if it is open, and let this context read it by a C call.

    The thread's slot is sound because a thread runs one ``trio.run`` at a
    time; setting :data:`CALL_CLIENT` in the calling task's context
    makes that task's next calls (and its children's) skip the thread-local
    read, which costs about as much as the rest of a hit.
    """
    client = _THREAD_CLIENTS.client
    if client is not None:
        CALL_CLIENT.set(client)
    return client


def _context_or_default() -> QueryClient | None:
    client = read_call_client()
    if client is None:
        client = adopt_run_default()
    return client


async def open_run_client(store: object | None) -> QueryClient:
    """Return the run's client for ``store`` (``None``: the default client), opening it once.

    The client lives until the ``trio.run`` ends.  Concurrent first callers
    share one client.  Cancelled while the client opens, the caller stops
    waiting; the client still opens.

    Raises:
        RuntimeError: called outside ``trio.run``.
    """
    try:
        run = _RUN_CLIENTS.get()
    except LookupError:
        run = _RunClients()
        _RUN_CLIENTS.set(run)
        trio.lowlevel.spawn_system_task(
            _watch_run_end, run.closing, name="stackquery-run-end-watcher"
        )
    except RuntimeError:
        raise RuntimeError(
            "stackquery decorators run under trio: call them inside trio.run"
        ) from None
    if store is None:
        hosted = run.default
        if hosted is None:
            hosted = run.default = _start_host(QueryClientConfig(), run.closing, "default")
    else:
        pair = run.by_store.get(id(store))
        if pair is None:
            name = f"store {type(store).__name__}"
            pair = (store, _start_host(QueryClientConfig(storage=store), run.closing, name))
            run.by_store[id(store)] = pair
        hosted = pair[1]
    await hosted.ready.wait()
    return hosted.client


def _start_host(config: QueryClientConfig, closing: trio.Event, name: str) -> _Hosted:
    hosted = _Hosted(QueryClient(config))
    trio.lowlevel.spawn_system_task(
        _host, hosted, closing, config.storage, name=f"stackquery-{name}-client"
    )
    return hosted


async def _host(hosted: _Hosted, closing: trio.Event, store: object | None) -> None:
    # Shielded: the run's end must not cancel the client's shutdown, which
    # flushes pending L2 writes; the watcher says when to close instead.
    with trio.CancelScope(shield=True):
        try:
            async with hosted.client:
                hosted.open = True
                _publish_to_thread(hosted, store)
                hosted.ready.set()
                await closing.wait()
        finally:
            hosted.open = False
            _withdraw_from_thread(hosted, store)
            hosted.ready.set()  # a client that failed to open: waiters see it closed


def _publish_to_thread(hosted: _Hosted, store: object | None) -> None:
    if store is None:
        _THREAD_CLIENTS.hosted = hosted
        _THREAD_CLIENTS.client = hosted.client
    else:
        _THREAD_CLIENTS.stores[id(store)] = hosted


def _withdraw_from_thread(hosted: _Hosted, store: object | None) -> None:
    # Dropped, not just marked closed: a closed client (and its table) is not
    # kept alive by the thread.
    if store is None:
        if _THREAD_CLIENTS.hosted is hosted:
            _THREAD_CLIENTS.hosted = None
            _THREAD_CLIENTS.client = None
    elif _THREAD_CLIENTS.stores.get(id(store)) is hosted:
        del _THREAD_CLIENTS.stores[id(store)]


async def _watch_run_end(closing: trio.Event) -> None:
    try:
        await trio.sleep_forever()
    finally:
        closing.set()
