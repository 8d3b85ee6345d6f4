"""A trio run that a hypothesis ``RuleBasedStateMachine`` drives one rule at a time.

Hypothesis calls a state machine's rules synchronously, one after another,
while the system under test (a client, its actors, the callers parked on
its fetches) must stay alive in one ``trio.run`` between them.  So the run
lives in a thread of its own: :class:`TrioSession` starts it, each rule
hands it a coroutine with :meth:`TrioSession.run` (``trio.from_thread.run``)
and gets its result or its error back, and :meth:`TrioSession.close` lets
the run end and re-raises what it ended with.

The clock is a ``MockClock`` with rate 0 and no autojump while the rules
run, so trio time moves only when a rule jumps it; trio's scheduling
shuffle is seeded, so a hypothesis example replays the same way while it is
shrunk.  Hypothesis's thread waits while trio runs a step: the two never
run at the same time, and the model needs no lock.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import trio
import trio.testing
from trio.testing import wait_all_tasks_blocked

from tests.model.harness import manual_clock, run_deterministic

STEP_TIMEOUT = 60.0
"""Real seconds a step may take before it counts as never settling."""

Setup = Callable[[trio.Nursery], contextlib.AbstractAsyncContextManager[Any]]
"""What a session holds open between rules, given the nursery its callers run in."""


class TrioSession:
    """One ``trio.run`` in a thread, holding ``setup(nursery)`` open until :meth:`close`."""

    def __init__(self, setup: Setup, *, seed: int = 0) -> None:
        self.clock = manual_clock()
        self.nursery: trio.Nursery | None = None
        """Where the callers of the rules run (inside the trio thread)."""
        self.value: Any = None
        """What ``setup`` yielded (a client)."""
        self._setup = setup
        self._seed = seed
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="trio-session", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error

    def run(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        """Run ``fn(*args)`` in the trio thread, then wait until every task is parked.

        Returns what ``fn`` returned; raises what it raised.
        """

        async def step() -> Any:
            result = await fn(*args)
            await wait_all_tasks_blocked()
            return result

        token = self._token
        assert token is not None, "the session is closed"
        # From a thread of its own, so that a step that never settles (a task
        # that keeps running: a busy loop) fails the example instead of hanging it.
        box: list[Any] = []

        def call() -> None:
            try:
                box.append((True, trio.from_thread.run(step, trio_token=token)))
            except BaseException as exc:
                box.append((False, exc))

        caller = threading.Thread(target=call, name="trio-session-step", daemon=True)
        caller.start()
        caller.join(STEP_TIMEOUT)
        if not box:
            self._token = None  # the run is stuck: close() must not wait for it
            raise AssertionError(f"a step did not settle in {STEP_TIMEOUT} s (a busy loop?)")
        ok, result = box[0]
        if not ok:
            raise result
        return result

    def settle(self) -> None:
        """Wait until every task of the run is parked."""
        self.run(trio.lowlevel.checkpoint)

    def jump(self, seconds: float) -> None:
        """Move trio time forward by ``seconds``, then let every woken task run until parked."""
        self.clock.jump(seconds)
        self.settle()

    def close(self, timeout: float = 30.0) -> None:
        """End the run (time autojumps from now on: shutdown timeouts pass); re-raise its error."""
        token, stop = self._token, self._stop
        if token is not None and stop is not None:
            self.clock.autojump_threshold = 0
            with contextlib.suppress(trio.RunFinishedError):
                trio.from_thread.run_sync(stop.set, trio_token=token)
        if token is None:
            return  # stuck (see run): the daemon thread is left behind
        self._thread.join(timeout)
        self._token = None
        if self._thread.is_alive():
            raise AssertionError("the trio run did not end (a task outlived the client?)")
        if self._error is not None:
            raise self._error

    def _main(self) -> None:
        try:
            run_deterministic(self._session, clock=self.clock, seed=self._seed)
        except BaseException as exc:  # handed to hypothesis's thread by close()
            self._error = exc
        finally:
            self._ready.set()

    async def _session(self) -> None:
        self._stop = trio.Event()
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            async with self._setup(nursery) as value:
                self.value = value
                self._token = trio.lowlevel.current_trio_token()
                self._ready.set()
                await self._stop.wait()
            nursery.cancel_scope.cancel()  # callers still parked once the client closed


@contextlib.asynccontextmanager
async def nothing(_nursery: trio.Nursery) -> AsyncIterator[None]:
    """A setup that holds nothing open."""
    yield None


__all__ = ["Setup", "TrioSession", "nothing"]
