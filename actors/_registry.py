"""Key -> actor, with activation on first message and passivation when idle."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, KeysView
from collections.abc import Set as AbstractSet
from typing import Any, Generic, Protocol, TypeVar, final

import attrs

from ._mailbox import Mailbox
from ._reply import Reply
from ._supervisor import Supervisor

K = TypeVar("K", bound=Hashable)
M = TypeVar("M")
T = TypeVar("T")


class Actor(Protocol):
    """What a :class:`Registry` hosts: a mailbox and a message loop.

    ``run`` receives and handles messages; it returns when the actor has
    nothing left to do (no work in flight, nothing it must watch).  The
    registry then passivates the actor if, at that very moment, its mailbox is
    empty, and calls ``run`` again otherwise.  ``run`` may be called again
    after a crash too (see :class:`Supervisor`), so an actor keeps the state it
    must not lose outside the call.
    """

    @property
    def mailbox(self) -> Mailbox[Any]: ...

    async def run(self) -> None: ...


A = TypeVar("A", bound=Actor)


@attrs.frozen
class RegistryStatistics:
    """A point-in-time view of a registry."""

    active: int
    """Actors whose task is running."""
    activations: int
    """Actors spawned since the registry was made."""
    passivations: int
    """Actors that ended their task because they were idle."""


@final
class Registry(Generic[K, A]):
    """Hosts one actor per key, spawning it on demand and dropping it when idle.

    An idle actor costs a task and its channels (a few KB); an idle key in a
    cache should cost a snapshot only.  So actors end their task when they have
    nothing to do (passivation) and :meth:`activate` spawns a fresh one from
    ``factory`` on the next message (activation).  Whatever state must
    survive passivation the actor publishes elsewhere before it returns.

    Passivation is race-free without locks: the check that the mailbox is
    empty and the removal from the registry happen with no checkpoint in
    between, so a message is either in the old actor's mailbox (and the actor
    keeps running) or is sent after the removal (and activates a new one).

    Args:
        supervisor: runs and restarts the actors' tasks.
        factory: makes the actor for a key.
    """

    def __init__(self, supervisor: Supervisor, factory: Callable[[K], A]) -> None:
        self._supervisor = supervisor
        self._factory = factory
        self._actors: dict[K, A] = {}
        self._hosted: set[K] = set()
        """Keys whose actor's task is running (or about to start)."""
        self.hosted: AbstractSet[K] = self._hosted
        """The keys whose actor's task is running (or about to start), to read: ``key in
        registry.hosted`` is a C-level test where :meth:`is_hosted` is a Python call (an
        actor without a task asks at each step).  Only the registry changes it."""
        self._activations = 0
        self._passivations = 0

    def get(self, key: K) -> A | None:
        """Return the running actor for ``key``, or ``None``; never spawns."""
        return self._actors.get(key)

    def keys(self) -> KeysView[K]:
        """The keys with a running actor: a live view (``key in registry.keys()`` is a
        C-level test, for many keys at once; ``key in registry`` is a Python call)."""
        return self._actors.keys()

    def activate(self, key: K) -> A:
        """Return the running actor for ``key``, spawning it if there is none.

        Synchronous: a spawned actor's task starts at the next scheduling
        point, and messages sent to it before then wait in its mailbox.

        Raises:
            RuntimeError: the supervisor's nursery is closed.
        """
        actor = self._actors.get(key)
        if actor is None:
            actor = self._factory(key)
            # First: a closed nursery raises before anything is registered.
            self._supervisor.start_soon(lambda: self._host(key, actor), name=("actor", key))
            self._actors[key] = actor
            self._activations += 1
        elif key not in self._hosted:  # reserved, without a task until now
            self._supervisor.start_soon(lambda: self._host(key, actor), name=("actor", key))
        self._hosted.add(key)
        return actor

    def reserve(self, key: K) -> A:
        """Return the actor for ``key``, making one without starting its task if there is none.

        Synchronous.  For an actor that can do its first piece of work from
        its caller's task (a task spawned for that work alone costs less than
        the actor's own task and mailbox loop): it starts its task later with
        :meth:`activate` if it must, or leaves with :meth:`release`.
        """
        actor = self._actors.get(key)
        if actor is None:
            actor = self._factory(key)
            self._actors[key] = actor
            self._activations += 1
        return actor

    def is_hosted(self, key: K) -> bool:
        """Whether the actor for ``key`` has its task running (or about to start)."""
        return key in self._hosted

    def release(self, key: K, actor: A) -> bool:
        """Drop ``actor``, reserved and idle, as if it had passivated; synchronous.

        Returns whether it was dropped: not if its task runs (it passivates
        itself), if its mailbox holds a message, or if it is no longer the
        actor for ``key``.
        """
        if key in self._hosted or self._actors.get(key) is not actor:
            return False
        mailbox = actor.mailbox
        if not mailbox.empty():
            return False
        # _remove written out (the key is not hosted, the actor is its): each cold key
        # of a client ends here.
        del self._actors[key]
        mailbox.close()
        self._passivations += 1
        return True

    def tell_nowait(self, key: K, message: Any) -> None:
        """Deliver ``message`` to the actor for ``key``, activating it if needed.

        Raises:
            MailboxFull: the actor's mailbox is at capacity.
        """
        self.activate(key).mailbox.tell_nowait(message)

    async def tell(self, key: K, message: Any) -> None:
        """Deliver ``message``, waiting for room in a full mailbox.

        Cancelled while waiting for room, nothing was delivered.
        """
        await self.activate(key).mailbox.tell(message)

    async def ask(self, key: K, make_message: Callable[[Reply[T]], Any]) -> T:
        """Send ``make_message(reply)`` to the actor for ``key`` and wait for the reply.

        See :func:`actors.ask` for what happens under cancellation.
        """
        return await ask(self.activate(key).mailbox, make_message)

    async def _host(self, key: K, actor: A) -> None:
        while True:
            try:
                await actor.run()
            except BaseException as exc:
                # A crash (an Exception) is restarted by the supervisor with the
                # mailbox intact.  Cancellation ends this task for good: the
                # actor must not stay registered with a mailbox nobody reads.
                if not isinstance(exc, Exception):
                    self._remove(key, actor)
                raise
            # No checkpoint between run() returning and this test: a message
            # cannot slip in between "mailbox empty" and "removed".
            if actor.mailbox.empty():
                self._remove(key, actor)
                self._passivations += 1
                return

    def _remove(self, key: K, actor: A) -> None:
        if self._actors.get(key) is actor:
            del self._actors[key]
            self._hosted.discard(key)
        actor.mailbox.close()

    def __contains__(self, key: object) -> bool:
        return key in self._actors

    def __len__(self) -> int:
        return len(self._actors)

    def __iter__(self) -> Iterator[K]:
        return iter(list(self._actors))

    def items(self) -> list[tuple[K, A]]:
        """Return a list of the active (key, actor) pairs."""
        return list(self._actors.items())

    def statistics(self) -> RegistryStatistics:
        """Return the registry's current :class:`RegistryStatistics`."""
        return RegistryStatistics(
            active=len(self._actors),
            activations=self._activations,
            passivations=self._passivations,
        )

    def __repr__(self) -> str:
        return f"<Registry active={len(self._actors)}>"


async def ask(mailbox: Mailbox[M], make_message: Callable[[Reply[T]], M]) -> T:
    """Send ``make_message(reply)`` to ``mailbox`` and wait for the reply.

    Under cancellation, ``ask`` is atomic in the way trio's channel operations
    are: cancelled before the message was delivered (including while waiting
    for room in a full mailbox), nothing was sent; once delivered, the actor
    handles the message in full, and a cancelled asker only stops waiting for
    the reply, which is then dropped.  No reply channel is allocated.

    Raises:
        MailboxClosed: the mailbox was closed.
        BaseException: whatever the actor delivered with ``Reply.set_error``.
    """
    reply: Reply[T] = Reply()
    await mailbox.tell(make_message(reply))
    return await reply.wait()
