"""Specification of ``actors.Supervisor`` and ``actors.RestartIntensity``."""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable

import attrs
import pytest
import trio
import trio.testing

from actors import RestartIntensity, Supervisor, SupervisorStatistics


class Crash(Exception):
    """A bug in a child: what the supervisor restarts."""


class Fatal(BaseException):
    """Not an ``Exception``: the supervisor must never absorb it."""


@attrs.define(eq=False)
class Progress:
    """State a child keeps outside the call, so a restart resumes from it."""

    steps: int = 0
    calls: int = 0


class TestRestart:
    async def test_child_that_returns_is_not_restarted(self) -> None:
        """A child that returns normally runs once and is done."""
        progress = Progress()

        async def child() -> None:
            progress.calls += 1

        async with trio.open_nursery() as nursery:
            supervisor = Supervisor(nursery)
            supervisor.start_soon(child)
        assert progress.calls == 1
        assert supervisor.statistics() == SupervisorStatistics(running=0, started=1, restarts=0)

    async def test_crashed_child_is_restarted_and_resumes_from_outside_state(self) -> None:
        """A child that raises is called again and carries on from the state it kept."""
        progress = Progress()

        async def child() -> None:
            progress.calls += 1
            while progress.steps < 5:
                await trio.lowlevel.checkpoint()
                progress.steps += 1
                if progress.steps == 3 and progress.calls == 1:
                    raise Crash("bug at step 3")

        async with trio.open_nursery() as nursery:
            supervisor = Supervisor(nursery)
            supervisor.start_soon(child)
        assert (progress.steps, progress.calls) == (5, 2)
        assert supervisor.statistics() == SupervisorStatistics(running=0, started=1, restarts=1)

    async def test_restart_is_logged_with_the_crash(self, caplog: pytest.LogCaptureFixture) -> None:
        """Each absorbed crash is logged at WARNING on 'actors.supervisor' with its traceback."""
        progress = Progress()

        async def child() -> None:
            progress.calls += 1
            if progress.calls == 1:
                raise Crash("first call fails")

        with caplog.at_level(logging.WARNING, logger="actors.supervisor"):
            async with trio.open_nursery() as nursery:
                Supervisor(nursery).start_soon(child)
        assert len(caplog.records) == 1
        record = caplog.records[0]
        assert record.name == "actors.supervisor"
        assert record.levelno == logging.WARNING
        assert record.getMessage().endswith("crashed; restarting it")
        assert record.exc_info is not None
        assert isinstance(record.exc_info[1], Crash)
        assert str(record.exc_info[1]) == "first call fails"

    async def test_base_exception_is_never_absorbed(self) -> None:
        """A BaseException that is not an Exception propagates at once, unrestarted."""
        progress = Progress()

        async def child() -> None:
            progress.calls += 1
            raise Fatal("stop everything")

        with pytest.RaisesGroup(pytest.RaisesExc(Fatal, match=r"^stop everything$")):
            async with trio.open_nursery() as nursery:
                supervisor = Supervisor(nursery)
                supervisor.start_soon(child)
        assert progress.calls == 1
        assert supervisor.statistics() == SupervisorStatistics(running=0, started=1, restarts=0)

    async def test_cancellation_is_not_a_crash(self) -> None:
        """Cancelling the nursery ends children without restarting or counting them."""
        progress = Progress()

        async def child() -> None:
            progress.calls += 1
            await trio.sleep_forever()

        async with trio.open_nursery() as nursery:
            supervisor = Supervisor(nursery, RestartIntensity(max_restarts=0, within=1.0))
            supervisor.start_soon(child)
            supervisor.start_soon(child)
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
        assert progress.calls == 2
        assert supervisor.statistics() == SupervisorStatistics(running=0, started=2, restarts=0)

    async def test_start_soon_on_a_closed_nursery_raises_and_counts_nothing(self) -> None:
        """start_soon after the nursery closed raises RuntimeError and starts nothing."""
        async with trio.open_nursery() as nursery:
            supervisor = Supervisor(nursery)

        async def child() -> None:
            pytest.fail("a child ran after its nursery closed")

        with pytest.raises(RuntimeError, match=r"^Nursery is closed to new arrivals$"):
            supervisor.start_soon(child)
        assert supervisor.statistics() == SupervisorStatistics(running=0, started=0, restarts=0)


class TestStatistics:
    async def test_running_started_and_restarts_are_counted(self) -> None:
        """running counts live children; a restart adds to restarts, not to started."""
        progress = Progress()
        release = trio.Event()

        async def crashes_once() -> None:
            progress.calls += 1
            if progress.calls == 1:
                raise Crash("once")
            await release.wait()

        async def waits() -> None:
            await release.wait()

        async with trio.open_nursery() as nursery:
            supervisor = Supervisor(nursery)
            supervisor.start_soon(crashes_once, name="crashes once")
            supervisor.start_soon(waits, name="waits")
            assert supervisor.statistics() == SupervisorStatistics(running=2, started=2, restarts=0)
            await trio.testing.wait_all_tasks_blocked()
            assert supervisor.statistics() == SupervisorStatistics(running=2, started=2, restarts=1)
            assert repr(supervisor) == "<Supervisor running=2 restarts=1>"
            release.set()
        assert supervisor.statistics() == SupervisorStatistics(running=0, started=2, restarts=1)

    async def test_default_intensity(self) -> None:
        """A supervisor made without an intensity uses RestartIntensity()."""
        async with trio.open_nursery() as nursery:
            assert Supervisor(nursery).intensity == RestartIntensity(max_restarts=5, within=10.0)


class TestEscalation:
    async def test_too_many_crashes_escalate_the_original_exception(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Crash number max_restarts + 1 inside the window propagates, as itself, in a group."""
        raised: list[Crash] = []

        async def child() -> None:
            raised.append(Crash(f"crash {len(raised) + 1}"))
            raise raised[-1]

        with pytest.RaisesGroup(pytest.RaisesExc(Crash, match=r"^crash 3$")) as caught:
            async with trio.open_nursery() as nursery:
                supervisor = Supervisor(nursery, RestartIntensity(max_restarts=2, within=10.0))
                supervisor.start_soon(child)
        assert caught.value.exceptions[0] is raised[-1]
        assert len(raised) == 3
        assert supervisor.statistics() == SupervisorStatistics(running=0, started=1, restarts=2)

    async def test_escalation_cancels_the_other_children(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """An escalating crash cancels its siblings, and their cancellation is not a crash."""
        progress = Progress()

        async def bystander() -> None:
            progress.calls += 1
            await trio.sleep_forever()

        async def doomed() -> None:
            await trio.sleep(1.0)
            raise Crash("fatal bug")

        with pytest.RaisesGroup(pytest.RaisesExc(Crash, match=r"^fatal bug$")):
            async with trio.open_nursery() as nursery:
                supervisor = Supervisor(nursery, RestartIntensity(max_restarts=0, within=5.0))
                supervisor.start_soon(bystander)
                supervisor.start_soon(doomed)
        assert progress.calls == 1
        assert trio.current_time() == 1.0
        assert supervisor.statistics() == SupervisorStatistics(running=0, started=2, restarts=0)

    async def test_escalation_is_logged_as_an_error(
        self, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
    ) -> None:
        """The escalating crash is logged at ERROR with its traceback."""

        async def child() -> None:
            raise Crash("always")

        with (
            caplog.at_level(logging.WARNING, logger="actors.supervisor"),
            pytest.RaisesGroup(Crash),
        ):
            async with trio.open_nursery() as nursery:
                Supervisor(nursery, RestartIntensity(max_restarts=1, within=1.0)).start_soon(child)
        assert [r.levelno for r in caplog.records] == [logging.WARNING, logging.ERROR]
        error = caplog.records[1]
        assert error.getMessage().endswith("crashed 2 times within 1.0s: escalating")
        assert error.exc_info is not None
        assert isinstance(error.exc_info[1], Crash)

    async def test_crashes_spread_beyond_the_window_do_not_escalate(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Crashes further apart than the window are restarted forever."""
        progress = Progress()

        async def child() -> None:
            progress.calls += 1
            if progress.calls > 20:
                return
            await trio.sleep(10.5)
            raise Crash(f"crash at {trio.current_time()}")

        async with trio.open_nursery() as nursery:
            supervisor = Supervisor(nursery, RestartIntensity(max_restarts=1, within=10.0))
            supervisor.start_soon(child)
        assert progress.calls == 21
        assert trio.current_time() == 210.0
        assert supervisor.statistics() == SupervisorStatistics(running=0, started=1, restarts=20)

    async def test_crashes_that_left_the_window_no_longer_count(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Only crashes inside the sliding window count towards escalation."""
        progress = Progress()

        async def child() -> None:
            progress.calls += 1
            if progress.calls == 3:
                await trio.sleep(11.0)
            raise Crash(f"crash {progress.calls}")

        # Crashes 1 and 2 at t=0 fill the window; 3 and 4 at t=11 refill it
        # after the first two left; crash 5 at t=11 is the third inside it.
        with pytest.RaisesGroup(pytest.RaisesExc(Crash, match=r"^crash 5$")):
            async with trio.open_nursery() as nursery:
                supervisor = Supervisor(nursery, RestartIntensity(max_restarts=2, within=10.0))
                supervisor.start_soon(child)
        assert progress.calls == 5
        assert trio.current_time() == 11.0
        assert supervisor.statistics() == SupervisorStatistics(running=0, started=1, restarts=4)

    async def test_a_crash_exactly_one_window_later_still_counts(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """The window is closed: a crash exactly `within` seconds after another counts with it."""
        progress = Progress()

        async def child() -> None:
            progress.calls += 1
            if progress.calls == 2:
                await trio.sleep(10.0)
            raise Crash(f"crash {progress.calls}")

        with pytest.RaisesGroup(pytest.RaisesExc(Crash, match=r"^crash 2$")):
            async with trio.open_nursery() as nursery:
                Supervisor(nursery, RestartIntensity(max_restarts=1, within=10.0)).start_soon(child)
        assert trio.current_time() == 10.0

    async def test_intensity_is_shared_by_all_children(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Crashes of different children add up against one supervisor's intensity."""
        crashes: list[str] = []

        def crasher(name: str, delay: float) -> Callable[[], Awaitable[None]]:
            async def child() -> None:
                if name in crashes:
                    await trio.sleep_forever()
                await trio.sleep(delay)
                crashes.append(name)
                raise Crash(f"{name} crashed")

            return child

        with pytest.RaisesGroup(pytest.RaisesExc(Crash, match=r"^b crashed$")):
            async with trio.open_nursery() as nursery:
                supervisor = Supervisor(nursery, RestartIntensity(max_restarts=1, within=10.0))
                supervisor.start_soon(crasher("a", delay=1.0))
                supervisor.start_soon(crasher("b", delay=2.0))
        assert crashes == ["a", "b"]
        assert trio.current_time() == 2.0
        assert supervisor.statistics() == SupervisorStatistics(running=0, started=2, restarts=1)

    async def test_zero_restarts_escalates_the_first_crash(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """With max_restarts=0 the very first crash escalates."""
        progress = Progress()

        async def child() -> None:
            progress.calls += 1
            raise Crash("first")

        with pytest.RaisesGroup(pytest.RaisesExc(Crash, match=r"^first$")):
            async with trio.open_nursery() as nursery:
                supervisor = Supervisor(nursery, RestartIntensity(max_restarts=0, within=1.0))
                supervisor.start_soon(child)
        assert progress.calls == 1
        assert supervisor.statistics() == SupervisorStatistics(running=0, started=1, restarts=0)


class TestRestartIntensity:
    def test_defaults(self) -> None:
        """The default intensity is 5 restarts within 10 seconds."""
        intensity = RestartIntensity()
        assert (intensity.max_restarts, intensity.within) == (5, 10.0)

    def test_is_frozen(self) -> None:
        """An intensity cannot be changed after it is made."""
        intensity = RestartIntensity()
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            intensity.max_restarts = 1  # type: ignore[misc]

    def test_zero_restarts_and_integer_seconds_are_accepted(self) -> None:
        """max_restarts=0 and a whole number of seconds are valid."""
        assert RestartIntensity(max_restarts=0, within=3) == RestartIntensity(0, 3)

    @pytest.mark.parametrize(("value", "shown"), [(-1, "-1"), (1.5, "1.5"), ("5", "'5'")])
    def test_bad_max_restarts_is_refused(self, value: object, shown: str) -> None:
        """max_restarts that is not an int >= 0 raises ValueError naming the value."""
        with pytest.raises(ValueError, match=rf"^max_restarts must be an int >= 0, got {shown}$"):
            RestartIntensity(max_restarts=value)  # type: ignore[arg-type]

    @pytest.mark.parametrize(
        ("value", "shown"), [(0, "0"), (-1.0, "-1.0"), ("10", "'10'"), (None, "None")]
    )
    def test_bad_within_is_refused(self, value: object, shown: str) -> None:
        """within that is not a number of seconds > 0 raises ValueError naming the value."""
        with pytest.raises(
            ValueError, match=rf"^within must be a number of seconds > 0, got {shown}$"
        ):
            RestartIntensity(within=value)  # type: ignore[arg-type]

    def test_nan_within_is_refused(self) -> None:
        """within=nan is not a number of seconds > 0 and raises ValueError."""
        with pytest.raises(ValueError, match=r"^within must be a number of seconds > 0, got nan$"):
            RestartIntensity(within=math.nan)
