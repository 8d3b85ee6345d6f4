"""Specification of ``actors.Registry``: activation on first message, passivation when idle."""

from __future__ import annotations

from collections.abc import AsyncIterator, Hashable

import attrs
import pytest
import trio
import trio.testing

from actors import (
    Mailbox,
    MailboxClosed,
    MailboxFull,
    Registry,
    RegistryStatistics,
    Reply,
    RestartIntensity,
    Supervisor,
    SupervisorStatistics,
)


class Crash(Exception):
    """A bug in the test actor."""


class Refused(Exception):
    """An error the test actor replies with (state, not a crash)."""


@attrs.frozen
class Append:
    """Append ``item`` to the key's journal."""

    item: str


@attrs.frozen
class Read:
    """Reply with a copy of the key's journal."""

    reply: Reply[list[str]]


@attrs.frozen
class Refuse:
    """Reply with a :class:`Refused` error."""

    reason: str
    reply: Reply[list[str]]


@attrs.frozen
class Explode:
    """Raise :class:`Crash` out of ``run()``."""

    reason: str


@attrs.frozen
class Echo:
    """Append ``item``, tell the same key ``Append(item + "'")`` and return from ``run()``."""

    item: str


@attrs.frozen
class Hold:
    """Wait for ``gate``, then return from ``run()`` without looking at the mailbox."""

    gate: trio.Event


Message = Append | Read | Refuse | Explode | Echo | Hold


@attrs.define(eq=False)
class World:
    """What the test actors share: the state they publish and counters of their life."""

    capacity: int = 16
    published: dict[Hashable, list[str]] = attrs.field(factory=dict)
    made: list[Journal] = attrs.field(factory=list)
    live: int = 0
    runs: int = 0
    registry: Registry[Hashable, Journal] | None = None

    def make(self, key: Hashable) -> Journal:
        """The registry's factory: a journal actor that resumes from the published state."""
        if key == "forbidden":
            raise ValueError("forbidden key")
        actor = Journal(key, self, Mailbox(self.capacity), list(self.published.get(key, [])))
        self.made.append(actor)
        return actor

    def tell(self, key: Hashable, message: Message) -> None:
        assert self.registry is not None
        self.registry.tell_nowait(key, message)


@attrs.define(eq=False)
class Journal:
    """A test actor: keeps a list of items per key and publishes it after every change."""

    key: Hashable
    world: World
    mailbox: Mailbox[Message]
    items: list[str]

    async def run(self) -> None:
        self.world.live += 1
        self.world.runs += 1
        try:
            while True:
                try:
                    message = self.mailbox.receive_nowait()
                except trio.WouldBlock:
                    return
                if await self.handle(message) == "return":
                    return
                await trio.lowlevel.checkpoint()
        finally:
            self.world.live -= 1

    async def handle(self, message: Message) -> str:
        if isinstance(message, Append):
            self.items.append(message.item)
            self.world.published[self.key] = list(self.items)
        elif isinstance(message, Read):
            message.reply.set_value(list(self.items))
        elif isinstance(message, Refuse):
            message.reply.set_error(Refused(message.reason))
        elif isinstance(message, Explode):
            raise Crash(message.reason)
        elif isinstance(message, Echo):
            await self.handle(Append(message.item))
            self.world.tell(self.key, Append(message.item + "'"))
            return "return"
        else:
            await message.gate.wait()
            return "return"
        return "continue"


@attrs.define(eq=False)
class Setup:
    """A registry of journals running in its own nursery."""

    world: World
    nursery: trio.Nursery
    supervisor: Supervisor
    registry: Registry[Hashable, Journal]


@pytest.fixture
async def setup() -> AsyncIterator[Setup]:
    world = World()
    async with trio.open_nursery() as nursery:
        supervisor = Supervisor(nursery, RestartIntensity(max_restarts=3, within=10.0))
        registry: Registry[Hashable, Journal] = Registry(supervisor, world.make)
        world.registry = registry
        yield Setup(world, nursery, supervisor, registry)
        nursery.cancel_scope.cancel()


class TestActivation:
    async def test_first_message_spawns_exactly_one_actor(self, setup: Setup) -> None:
        """Messages told to a cold key make one actor, which handles them all."""
        registry, world = setup.registry, setup.world
        with trio.testing.assert_no_checkpoints():
            for item in ["a", "b", "c"]:
                registry.tell_nowait("k", Append(item))
        assert len(world.made) == 1
        assert registry.get("k") is world.made[0]
        assert "k" in registry
        assert registry.statistics() == RegistryStatistics(active=1, activations=1, passivations=0)
        await trio.testing.wait_all_tasks_blocked()
        assert world.published == {"k": ["a", "b", "c"]}
        assert len(world.made) == 1
        assert world.runs == 1

    async def test_activate_returns_the_running_actor(self, setup: Setup) -> None:
        """activate spawns on the first call and returns the same actor afterwards."""
        registry, world = setup.registry, setup.world
        first = registry.activate("k")
        assert registry.activate("k") is first
        assert world.made == [first]
        assert setup.supervisor.statistics().started == 1

    async def test_get_never_spawns(self, setup: Setup) -> None:
        """get on a cold key returns None and makes no actor."""
        assert setup.registry.get("k") is None
        assert setup.world.made == []
        assert setup.registry.statistics() == RegistryStatistics(
            active=0, activations=0, passivations=0
        )

    async def test_messages_are_handled_in_order(self, setup: Setup) -> None:
        """Messages told to one key are handled in the order they were told."""
        setup.world.capacity = 200
        items = [str(n) for n in range(200)]
        for item in items:
            setup.registry.tell_nowait("k", Append(item))
        await trio.testing.wait_all_tasks_blocked()
        assert setup.world.published == {"k": items}

    async def test_keys_get_separate_actors(self, setup: Setup) -> None:
        """Each key gets its own actor and its own journal."""
        setup.registry.tell_nowait("x", Append("1"))
        setup.registry.tell_nowait("y", Append("2"))
        setup.registry.tell_nowait("x", Append("3"))
        assert [actor.key for actor in setup.world.made] == ["x", "y"]
        assert list(setup.registry) == ["x", "y"]
        assert [key for key, _ in setup.registry.items()] == ["x", "y"]
        await trio.testing.wait_all_tasks_blocked()
        assert setup.world.published == {"x": ["1", "3"], "y": ["2"]}

    async def test_factory_error_registers_nothing(self, setup: Setup) -> None:
        """A factory that raises propagates its error and leaves the registry unchanged."""
        with pytest.raises(ValueError, match=r"^forbidden key$"):
            setup.registry.tell_nowait("forbidden", Append("x"))
        assert "forbidden" not in setup.registry
        assert setup.registry.statistics() == RegistryStatistics(
            active=0, activations=0, passivations=0
        )
        assert setup.supervisor.statistics().started == 0

    async def test_tell_nowait_to_a_full_mailbox_raises_mailbox_full(self, setup: Setup) -> None:
        """tell_nowait to an actor whose mailbox is full raises MailboxFull, the actor stays."""
        setup.world.capacity = 2
        setup.registry.tell_nowait("k", Append("a"))
        setup.registry.tell_nowait("k", Append("b"))
        with pytest.raises(MailboxFull, match=r"^mailbox full \(2 messages queued\)$"):
            setup.registry.tell_nowait("k", Append("c"))
        assert len(setup.world.made) == 1
        await trio.testing.wait_all_tasks_blocked()
        assert setup.world.published == {"k": ["a", "b"]}


class TestReservation:
    async def test_reserve_makes_the_actor_without_its_task(self, setup: Setup) -> None:
        """A reserved actor is registered (in, busy) but runs nothing until activated (hosted)."""
        registry, world = setup.registry, setup.world
        actor = registry.reserve("k")
        assert registry.reserve("k") is actor
        assert "k" in registry and not registry.is_hosted("k")
        assert "k" not in registry.hosted
        await trio.testing.wait_all_tasks_blocked()
        assert (len(world.made), world.runs) == (1, 0)
        actor.mailbox.tell_nowait(Append("a"))
        assert registry.activate("k") is actor
        assert registry.is_hosted("k") and "k" in registry.hosted
        await trio.testing.wait_all_tasks_blocked()
        assert (world.published, world.runs, len(world.made)) == ({"k": ["a"]}, 1, 1)
        assert "k" not in registry and "k" not in registry.hosted  # it passivated
        assert registry.statistics() == RegistryStatistics(active=0, activations=1, passivations=1)

    async def test_release_drops_only_an_idle_reserved_actor(self, setup: Setup) -> None:
        """release refuses a hosted actor, one with mail, or one that is not the key's."""
        registry = setup.registry
        actor = registry.reserve("k")
        actor.mailbox.tell_nowait(Append("a"))
        assert not registry.release("k", actor)  # mail waiting
        actor.mailbox.receive_nowait()
        assert not registry.release("other", actor)
        assert registry.release("k", actor)
        assert "k" not in registry
        with pytest.raises(MailboxClosed):
            actor.mailbox.tell_nowait(Append("b"))
        hosted = registry.activate("h")
        assert not registry.release("h", hosted)  # its task passivates it
        assert registry.statistics().passivations == 1


class TestPassivation:
    async def test_idle_actor_is_passivated(self, setup: Setup) -> None:
        """An actor whose run() returns with an empty mailbox ends its task and leaves."""
        registry, world = setup.registry, setup.world
        registry.tell_nowait("k", Append("a"))
        actor = world.made[0]
        await trio.testing.wait_all_tasks_blocked()
        assert registry.get("k") is None
        assert "k" not in registry
        assert len(registry) == 0
        assert registry.statistics() == RegistryStatistics(active=0, activations=1, passivations=1)
        assert world.live == 0
        assert len(setup.nursery.child_tasks) == 0
        assert setup.supervisor.statistics() == SupervisorStatistics(
            running=0, started=1, restarts=0
        )
        with pytest.raises(MailboxClosed, match=r"^mailbox is closed$"):
            actor.mailbox.tell_nowait(Append("too late"))

    async def test_next_message_activates_a_new_actor_from_published_state(
        self, setup: Setup
    ) -> None:
        """After passivation the next message makes a new actor, which resumes the journal."""
        registry, world = setup.registry, setup.world
        registry.tell_nowait("k", Append("a"))
        await trio.testing.wait_all_tasks_blocked()
        registry.tell_nowait("k", Append("b"))
        assert len(world.made) == 2
        assert world.made[0] is not world.made[1]
        assert registry.get("k") is world.made[1]
        assert await registry.ask("k", Read) == ["a", "b"]
        await trio.testing.wait_all_tasks_blocked()
        assert world.published == {"k": ["a", "b"]}
        assert registry.statistics() == RegistryStatistics(active=0, activations=2, passivations=2)

    async def test_message_told_by_the_returning_actor_is_not_lost(self, setup: Setup) -> None:
        """An actor that tells its own key and returns is run again, not passivated."""
        registry, world = setup.registry, setup.world
        registry.tell_nowait("k", Echo("a"))
        await trio.testing.wait_all_tasks_blocked()
        assert world.published == {"k": ["a", "a'"]}
        assert len(world.made) == 1
        assert world.runs == 2
        assert registry.statistics() == RegistryStatistics(active=0, activations=1, passivations=1)

    async def test_message_told_while_the_actor_is_returning_is_not_lost(
        self, setup: Setup
    ) -> None:
        """A message that arrives while run() is on its way out makes the registry run it again."""
        registry, world = setup.registry, setup.world
        gate = trio.Event()
        registry.tell_nowait("k", Hold(gate))
        await trio.testing.wait_all_tasks_blocked()
        assert world.live == 1
        registry.tell_nowait("k", Append("late"))
        assert len(world.made) == 1
        gate.set()
        await trio.testing.wait_all_tasks_blocked()
        assert world.published == {"k": ["late"]}
        assert len(world.made) == 1
        assert world.runs == 2
        assert registry.statistics() == RegistryStatistics(active=0, activations=1, passivations=1)

    async def test_ten_thousand_keys_activate_and_all_passivate(self, setup: Setup) -> None:
        """10,000 cold keys make 10,000 actors, and every one of them passivates."""
        registry, world = setup.registry, setup.world
        for n in range(10_000):
            registry.tell_nowait(n, Append(str(n)))
        assert len(registry) == 10_000
        assert setup.supervisor.statistics().running == 10_000
        await trio.testing.wait_all_tasks_blocked()
        assert len(registry) == 0
        assert registry.statistics() == RegistryStatistics(
            active=0, activations=10_000, passivations=10_000
        )
        assert world.live == 0
        assert len(setup.nursery.child_tasks) == 0
        assert setup.supervisor.statistics() == SupervisorStatistics(
            running=0, started=10_000, restarts=0
        )
        assert len(world.published) == 10_000
        assert world.published[9_999] == ["9999"]


class TestCrash:
    async def test_crashed_actor_restarts_with_its_mailbox_intact(self, setup: Setup) -> None:
        """A crash in run() is restarted by the supervisor; messages queued behind it still run."""
        registry, world = setup.registry, setup.world
        for message in [Append("a"), Explode("bug"), Append("b"), Append("c")]:
            registry.tell_nowait("k", message)
        await trio.testing.wait_all_tasks_blocked()
        assert world.published == {"k": ["a", "b", "c"]}
        assert len(world.made) == 1
        assert world.runs == 2
        assert world.live == 0
        assert setup.supervisor.statistics() == SupervisorStatistics(
            running=0, started=1, restarts=1
        )
        assert registry.statistics() == RegistryStatistics(active=0, activations=1, passivations=1)

    async def test_crashes_past_the_intensity_escalate(self) -> None:
        """An actor crashing more than max_restarts times fails the nursery with its crash."""
        world = World()
        with pytest.RaisesGroup(pytest.RaisesExc(Crash, match=r"^bug 2$")):
            async with trio.open_nursery() as nursery:
                supervisor = Supervisor(nursery, RestartIntensity(max_restarts=1, within=10.0))
                registry: Registry[Hashable, Journal] = Registry(supervisor, world.make)
                for message in [Explode("bug 1"), Explode("bug 2"), Append("never")]:
                    registry.tell_nowait("k", message)
        assert world.published == {}
        assert supervisor.statistics() == SupervisorStatistics(running=0, started=1, restarts=1)


class TestAsk:
    async def test_ask_activates_and_returns_the_reply(self, setup: Setup) -> None:
        """ask on a cold key activates its actor and returns the actor's reply."""
        setup.registry.tell_nowait("k", Append("a"))
        assert await setup.registry.ask("k", Read) == ["a"]
        assert await setup.registry.ask("other", Read) == []
        assert len(setup.world.made) == 2

    async def test_ask_raises_the_actors_error(self, setup: Setup) -> None:
        """An error the actor replies with is raised in the asker; the actor carries on."""
        with pytest.raises(Refused, match=r"^no$"):
            await setup.registry.ask("k", lambda reply: Refuse("no", reply))
        setup.registry.tell_nowait("k", Append("a"))
        assert await setup.registry.ask("k", Read) == ["a"]
        assert setup.supervisor.statistics().restarts == 0

    async def test_tell_waits_for_room_in_a_full_mailbox(self, setup: Setup) -> None:
        """await tell on a full actor mailbox waits until the actor makes room, then delivers."""
        setup.world.capacity = 1
        gate = trio.Event()
        setup.registry.tell_nowait("k", Hold(gate))
        await trio.testing.wait_all_tasks_blocked()
        setup.registry.tell_nowait("k", Append("queued"))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(setup.registry.tell, "k", Append("waited"))
            await trio.testing.wait_all_tasks_blocked()
            assert setup.world.made[0].mailbox.statistics().senders_waiting == 1
            gate.set()
        await trio.testing.wait_all_tasks_blocked()
        assert setup.world.published == {"k": ["queued", "waited"]}
        assert len(setup.world.made) == 1

    async def test_tell_cancelled_while_waiting_for_room_delivers_nothing(
        self, setup: Setup
    ) -> None:
        """await tell cancelled while the actor's mailbox is full delivered nothing."""
        setup.world.capacity = 1
        gate = trio.Event()
        setup.registry.tell_nowait("k", Hold(gate))
        await trio.testing.wait_all_tasks_blocked()
        setup.registry.tell_nowait("k", Append("queued"))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(setup.registry.tell, "k", Append("cancelled"))
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
        assert setup.world.made[0].mailbox.statistics().senders_waiting == 0
        gate.set()
        await trio.testing.wait_all_tasks_blocked()
        assert setup.world.published == {"k": ["queued"]}


class TestStatistics:
    async def test_statistics_count_activations_and_passivations(self, setup: Setup) -> None:
        """active, activations and passivations follow each actor's life exactly."""
        registry = setup.registry
        gate = trio.Event()
        registry.tell_nowait("a", Append("1"))
        registry.tell_nowait("b", Append("1"))
        registry.tell_nowait("c", Hold(gate))
        assert registry.statistics() == RegistryStatistics(active=3, activations=3, passivations=0)
        assert repr(registry) == "<Registry active=3>"
        await trio.testing.wait_all_tasks_blocked()
        assert registry.statistics() == RegistryStatistics(active=1, activations=3, passivations=2)
        assert list(registry) == ["c"]
        registry.tell_nowait("a", Append("2"))
        assert registry.statistics() == RegistryStatistics(active=2, activations=4, passivations=2)
        gate.set()
        await trio.testing.wait_all_tasks_blocked()
        assert registry.statistics() == RegistryStatistics(active=0, activations=4, passivations=4)
        assert repr(registry) == "<Registry active=0>"


class TestShutdown:
    async def test_cancelled_actors_leave_the_registry(self) -> None:
        """Cancelling the nursery removes its running actors and closes their mailboxes."""
        world = World()
        gate = trio.Event()
        async with trio.open_nursery() as nursery:
            registry: Registry[Hashable, Journal] = Registry(Supervisor(nursery), world.make)
            registry.tell_nowait("k", Hold(gate))
            registry.tell_nowait("k", Append("queued"))
            await trio.testing.wait_all_tasks_blocked()
            assert world.live == 1
            nursery.cancel_scope.cancel()
        assert world.live == 0
        assert len(registry) == 0
        assert registry.statistics() == RegistryStatistics(active=0, activations=1, passivations=0)
        with pytest.raises(MailboxClosed, match=r"^mailbox is closed$"):
            world.made[0].mailbox.tell_nowait(Append("after shutdown"))

    async def test_tell_after_shutdown_raises(self) -> None:
        """tell_nowait to a key whose actor was cancelled raises rather than queue forever."""
        world = World()
        gate = trio.Event()
        async with trio.open_nursery() as nursery:
            registry: Registry[Hashable, Journal] = Registry(Supervisor(nursery), world.make)
            registry.tell_nowait("k", Hold(gate))
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
        with pytest.raises(RuntimeError, match=r"^Nursery is closed to new arrivals$"):
            registry.tell_nowait("k", Append("lost?"))
        assert registry.statistics() == RegistryStatistics(active=0, activations=1, passivations=0)
