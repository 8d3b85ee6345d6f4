"""The batch loader and scoped mutations (issue 15) checked against reference models.

Two hypothesis ``RuleBasedStateMachine``s, each driving a client in a trio
run of its own (:mod:`tests.model.trio_machine`), with a ``MockClock`` that
moves only when a rule jumps it.

**BatchMachine** drives ``@sq.cache.batch(10.5, stale=5.25, max_batch=,
missing=)`` over ids 0..4 (``max_batch`` 2 or 100 and ``missing`` drawn per
example; the origin never returns id 0).  A rule starts one to three callers
together (``f(id)`` or ``f.many(ids)``, ids repeated or not, the empty list
too); others cancel a waiting caller, hold / release / fail the origin,
``invalidate`` an id, ``clear()``, jump the clock.  After each rule the model
and the client agree on every caller's outcome, on each new origin call's
ids, and on ``f.statistics()``.  The rules:

* an id is *fresh* until ``fetched_at + ttl`` and *servable* until
  ``fetched_at + ttl + stale``; a fresh id is served with no call; a
  servable one is served at once and refreshed unless a fetch of it is in
  flight; any other id's caller waits on the id's fetch in flight, or starts one.
* **one window per rule**: the ids whose fetch starts during a rule (the
  callers of one rule start together) go to the origin together: exactly
  ``ceil(n / max_batch)`` calls whose ids partition them, none above
  ``max_batch``.  Ids asked for in a later rule go in another call.
* a call's value for an id is cached, fetched now; a call's error goes to
  every waiter of its ids (the client has ``retry=0``: the retries per call
  are the unit tests' business) and leaves their data as it was; an id the
  mapping leaves out is cached as ``None`` (``missing="none"``), fails its
  waiters with ``MissingIdError`` and is not cached (``"error"``), or
  gives its waiters ``None`` and is not cached (``"skip"``).
* ``many`` returns once all its ids settled: their values in order, or the
  first error in the order asked.
* a cancelled caller stops waiting; the calls go on and land in the cache.
* ``invalidate(id)`` forgets the id; the callers waiting on its fetch in
  flight start a new fetch (one call for that id); the call in flight still
  runs, and what it returns for that id is dropped.  ``clear()`` does that
  for every id.

Readings the model takes where the contract could be read two ways:

* After ``clear()`` the ids whose callers start new fetches are not promised
  to share a call (each caller finds out about the removal on its own): the
  model accepts any split of them into calls of at most ``max_batch`` ids.
* A caller whose fetch is removed *again* while it waits on the new fetch
  (a second ``invalidate`` or ``clear``) starts yet another one: "a call
  waiting on that id's fetch in flight starts a new fetch" holds each time.
* With ``missing="error"`` or ``"skip"`` a servable value of the id stays
  served (the miss is a failed refresh, as an error is).
* The model runs without a store.  With one, a cold id joins a window when
  its read ends, and reads started together are not always one ``get_many``
  (the first may go out alone), so ``f(3)`` and ``f.many([1, 2])`` started
  together make one or two calls as trio schedules them (the README says so);
  a store would only loosen the one-window rule.

**ScopeMachine** drives mutations with ``MutationOptions(scope=)`` (scopes
``"x"``, ``"y"`` and none): rules start calls (one to three together, in a
known call order), finish or fail a running call, cancel a waiting or a
running call.  The model: per scope a queue in call order whose head runs
(its ``on_mutate`` and ``mutation_fn`` start), calls without a scope run at
once; a call that returns, fails or is cancelled leaves the queue and the
next runs; ``client.is_mutating()`` counts the calls not yet returned.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator
from typing import Any

import attrs
import hypothesis.strategies as st
import trio
from hypothesis import settings, stateful

import stackquery as sq
from tests.model.harness import model_settings
from tests.model.trio_machine import TrioSession

IDS = (0, 1, 2, 3, 4)
TTL = 10.5
STALE = 5.25
OMITTED = 0


class Failure(Exception):
    """The batch origin's error."""


class BatchOrigin:
    """The decorated function's body: records each call; held or failing on demand."""

    def __init__(self) -> None:
        self.calls: list[list[Any]] = []
        self.failing = False
        self.gate: trio.Event | None = None

    async def __call__(self, ids: list[Any]) -> dict[Any, Any]:
        self.calls.append(list(ids))
        number = len(self.calls)
        fails, gate = self.failing, self.gate
        if gate is not None:
            await gate.wait()
        else:
            await trio.lowlevel.checkpoint()
        if fails:
            raise Failure(f"call {number}")
        return {i: f"{i}#{number}" for i in ids if i != OMITTED}

    def release(self) -> None:
        if self.gate is not None:
            self.gate.set()
            self.gate = None


# -- the batch model -----------------------------------------------------------------------


@attrs.define(eq=False)
class ModelCall:
    """One origin call the model expects: its ids, whether it waits for a release, fails."""

    number: int
    ids: list[Any]
    held: bool
    fails: bool


@attrs.define
class Caller:
    """One ``f(id)`` (``many=False``, one id) or ``f.many(ids)`` call."""

    ids: list[Any]
    many: bool
    results: dict[int, tuple[Any, ...]] = attrs.field(factory=dict)
    """Position -> ``("value", v)`` or ``("error", type, message)`` once settled."""
    seen: tuple[Any, ...] = ("waiting",)

    def settle(self, position: int, result: tuple[Any, ...]) -> None:
        if self.seen != ("waiting",):
            return
        self.results[position] = result
        if len(self.results) < len(self.ids):
            return
        if not self.many:
            self.seen = result
            return
        for index in range(len(self.ids)):
            if self.results[index][0] == "error":
                self.seen = self.results[index]
                return
        self.seen = ("value", [self.results[index][1] for index in range(len(self.ids))])


@attrs.define
class ModelId:
    value: Any = None
    fetched_at: float | None = None
    call: ModelCall | None = None
    """The call the id's fetch in flight waits on."""
    waiters: list[tuple[Caller, int]] = attrs.field(factory=list)
    pending_refetch: bool = False
    """Removed while its waiters waited: they start a new fetch (in the next window)."""


class BatchModel:
    def __init__(self, max_batch: int, missing: str) -> None:
        self.max_batch = max_batch
        self.missing = missing
        self.now = 0.0
        self.ids = {item_id: ModelId() for item_id in IDS}
        self.callers: list[Caller] = []
        self.calls: list[ModelCall] = []
        self.held = False
        self.failing = False
        self.window: list[Any] = []
        """Ids whose fetch started in this rule: they go out together."""
        self.free_split = False
        """Whether this rule's window may be split in any number of calls (after clear)."""
        self.missing_ids = 0

    def read(self, caller: Caller) -> None:
        """``caller`` reads its ids now (callers of one rule read at the same instant)."""
        self.callers.append(caller)
        for position, item_id in enumerate(caller.ids):
            state = self.ids[item_id]
            fetched_at = state.fetched_at
            if fetched_at is not None and self.now < fetched_at + TTL + STALE:
                if self.now >= fetched_at + TTL and state.call is None:
                    self._start(item_id)  # stale: a refresh behind the caller
                caller.settle(position, ("value", state.value))
                continue
            if state.call is None:
                self._start(item_id)
            state.waiters.append((caller, position))
        if not caller.ids:
            caller.seen = ("value", [])

    def _start(self, item_id: Any) -> None:
        if item_id not in self.window:
            self.window.append(item_id)
        self.ids[item_id].call = _OPENING

    def flush(self, got: list[list[Any]]) -> str | None:
        """The origin calls made for this rule's window were ``got``; ``None`` if they fit."""
        window, self.window = self.window, []
        if not window:
            return None if not got else f"no call expected, got {got}"
        if sorted(i for ids in got for i in ids) != sorted(window):
            return f"calls {got} do not partition the window {window}"
        if any(len(ids) > self.max_batch for ids in got):
            return f"calls {got} above max_batch {self.max_batch}"
        if not self.free_split and len(got) != math.ceil(len(window) / self.max_batch):
            return f"calls {got} for the window {window}: expected one per {self.max_batch} ids"
        self.free_split = False
        for ids in got:
            call = ModelCall(len(self.calls) + 1, list(ids), self.held, self.failing)
            self.calls.append(call)
            for item_id in ids:
                self.ids[item_id].call = call
        for call in self.calls[-len(got) :]:
            if not call.held:
                self.land(call)
        return None

    def land(self, call: ModelCall) -> None:
        for item_id in call.ids:
            state = self.ids[item_id]
            if item_id == OMITTED and not call.fails:
                self.missing_ids += 1
            if state.call is not call:
                continue  # removed meanwhile: what the call brings for it is dropped
            state.call = None
            waiters, state.waiters = state.waiters, []
            if call.fails:
                result: tuple[Any, ...] = ("error", "Failure", f"call {call.number}")
            elif item_id != OMITTED or self.missing == "none":
                value = None if item_id == OMITTED else f"{item_id}#{call.number}"
                state.value, state.fetched_at = value, self.now
                result = ("value", value)
            elif self.missing == "error":
                result = ("error", "MissingIdError", None)
            else:
                result = ("value", None)
            for caller, position in waiters:
                caller.settle(position, result)

    def release(self) -> None:
        self.held = False
        for call in self.calls:
            if call.held:
                call.held = False
                self.land(call)

    def cancel(self, caller: Caller) -> None:
        caller.seen = ("cancelled",)
        for state in self.ids.values():
            state.waiters = [(c, p) for c, p in state.waiters if c is not caller]

    def remove(self, item_id: Any) -> None:
        """``invalidate(id)``: forget it; its waiters start a new fetch."""
        state = self.ids[item_id]
        state.value, state.fetched_at = None, None
        if state.call is None:
            return
        state.call = None
        if state.waiters:
            self._start(item_id)


_OPENING = ModelCall(0, [], held=False, fails=False)
"""The call of an id whose fetch started in this rule, before the window is flushed."""


class BatchMachine(stateful.RuleBasedStateMachine):
    """Drives a batch function and the model side by side; see the module docstring."""

    def __init__(self) -> None:
        super().__init__()
        self.session: TrioSession | None = None
        self.trace: list[str] = []

    @stateful.initialize(
        max_batch=st.sampled_from([2, 100]), missing=st.sampled_from(["none", "error", "skip"])
    )
    def start(self, max_batch: int, missing: str) -> None:
        self.model = BatchModel(max_batch, missing)
        self.origin = origin = BatchOrigin()

        self.seen_calls = 0
        self.outcomes: list[list[tuple[Any, ...]]] = []
        self.scopes: list[trio.CancelScope] = []

        @contextlib.asynccontextmanager
        async def setup(_nursery: trio.Nursery) -> AsyncIterator[sq.QueryClient]:
            async with sq.open_query_client(sq.QueryClientConfig(retry=0)) as client:
                yield client

        self.session = TrioSession(setup)

        # On this client (the callers' tasks are not in its context): not the run's default one.
        @sq.cache.batch(
            TTL,
            key="user:{}",
            stale=STALE,
            max_batch=max_batch,
            missing=missing,
            client=self.session.value,
        )
        async def get_users(ids: list[int]) -> dict[int, Any]:
            return await origin(ids)

        self.f = get_users
        self.trace.append(f"max_batch={max_batch} missing={missing}")

    def teardown(self) -> None:
        if self.session is not None:
            self.session.close()

    # -- rules ---------------------------------------------------------------------

    requests = st.lists(
        st.one_of(
            st.sampled_from(IDS).map(lambda i: (False, [i])),
            st.lists(st.sampled_from(IDS), max_size=4).map(lambda ids: (True, ids)),
        ),
        min_size=1,
        max_size=3,
    )

    @stateful.rule(requests=requests)
    def call(self, requests: list[tuple[bool, list[Any]]]) -> None:
        assert self.session is not None
        self.trace.append(
            "call "
            + ", ".join(f"many({ids})" if many else f"f({ids[0]})" for many, ids in requests)
        )
        started = []
        for many, ids in requests:
            caller = Caller(list(ids), many)
            self.model.read(caller)
            started.append(caller)

        async def start() -> None:
            assert self.session is not None and self.session.nursery is not None
            for caller in started:
                outcome: list[tuple[Any, ...]] = [("waiting",)]
                self.outcomes.append(outcome)
                scope = trio.CancelScope()
                self.scopes.append(scope)
                self.session.nursery.start_soon(self._call, caller, outcome, scope)

        self.session.run(start)
        self.check()

    async def _call(
        self, caller: Caller, outcome: list[tuple[Any, ...]], scope: trio.CancelScope
    ) -> None:
        with scope:
            try:
                if caller.many:
                    value = await self.f.many(caller.ids)
                else:
                    value = await self.f(caller.ids[0])
            except Exception as exc:
                outcome[0] = ("error", type(exc).__name__, str(exc))
            else:
                outcome[0] = ("value", value)
            return
        outcome[0] = ("cancelled",)

    @stateful.rule(data=st.data())
    def cancel_caller(self, data: st.DataObject) -> None:
        assert self.session is not None
        waiting = [i for i, caller in enumerate(self.model.callers) if caller.seen == ("waiting",)]
        if not waiting:
            return
        index = data.draw(st.sampled_from(waiting), label="caller")
        self.trace.append(f"cancel caller {index}")
        self.model.cancel(self.model.callers[index])
        self.session.run(_sync(self.scopes[index].cancel))
        self.check()

    @stateful.rule()
    def hold(self) -> None:
        self.trace.append("hold")
        self.model.held = True
        if self.origin.gate is None:
            self.origin.gate = trio.Event()

    @stateful.rule()
    def release(self) -> None:
        assert self.session is not None
        self.trace.append("release")
        self.model.release()
        self.session.run(_sync(self.origin.release))
        self.check()

    @stateful.rule(failing=st.booleans())
    def fail(self, failing: bool) -> None:
        self.trace.append(f"failing={failing}")
        self.model.failing = self.origin.failing = failing

    @stateful.rule(item_id=st.sampled_from(IDS))
    def invalidate(self, item_id: Any) -> None:
        assert self.session is not None
        self.trace.append(f"invalidate({item_id})")
        self.model.remove(item_id)
        self.session.run(self.f.invalidate, item_id)
        self.check()

    @stateful.rule()
    def clear(self) -> None:
        assert self.session is not None
        self.trace.append("clear()")
        for item_id in IDS:
            self.model.remove(item_id)
        self.model.free_split = True
        self.session.run(self.f.clear)
        self.check()

    @stateful.rule(seconds=st.sampled_from([3, 7, 11]))
    def advance(self, seconds: int) -> None:
        assert self.session is not None
        self.trace.append(f"advance {seconds}")
        self.model.now += seconds
        self.session.jump(seconds)
        self.check()

    # -- comparing -----------------------------------------------------------------

    def fail_with(self, message: str) -> None:
        trace = "\n  ".join(self.trace)
        raise AssertionError(f"{message}\nrules so far:\n  {trace}")

    def check(self) -> None:
        model = self.model
        got = [sorted(ids) for ids in self.origin.calls[self.seen_calls :]]
        self.seen_calls = len(self.origin.calls)
        problem = model.flush(got)
        if problem is not None:
            self.fail_with(problem)
        for index, (caller, outcome) in enumerate(zip(model.callers, self.outcomes, strict=True)):
            seen = outcome[0]
            if seen[:1] == ("error",) and seen[1] == "MissingIdError":
                seen = ("error", "MissingIdError", None)
            if caller.seen != seen:
                self.fail_with(f"caller {index} {caller.ids}: model {caller.seen}, client {seen}")
        stats = self.f.statistics()
        if stats.origin_calls != len(model.calls) or stats.missing_ids != model.missing_ids:
            self.fail_with(
                f"statistics {stats}: model {len(model.calls)} calls, {model.missing_ids} missing"
            )


BatchMachine.TestCase.settings = settings(
    model_settings(default_ci=120, default_local=600), stateful_step_count=20
)
TestBatchModel = BatchMachine.TestCase


# -- scoped mutations ------------------------------------------------------------------------

SCOPES = ("x", "y", None)


@attrs.define(eq=False)
class MutationCall:
    scope: str | None
    state: str = "waiting"
    """waiting, running, returned, failed, cancelled."""
    ran: bool = False
    """Whether the model let it run (its ``on_mutate`` and ``mutation_fn`` started)."""


class ScopeMachine(stateful.RuleBasedStateMachine):
    """Drives scoped mutations and the model side by side; see the module docstring."""

    def __init__(self) -> None:
        super().__init__()
        self.trace: list[str] = []
        self.calls: list[MutationCall] = []
        self.started: list[int] = []
        """Calls whose on_mutate ran, in the order they ran."""
        self.ran: list[int] = []
        """Calls whose mutation_fn started."""
        self.gates: dict[int, trio.Event] = {}
        self.fails: set[int] = set()
        self.outcomes: dict[int, str] = {}
        self.scopes: dict[int, trio.CancelScope] = {}

        async def mutation_fn(index: int) -> str:
            self.ran.append(index)
            gate = self.gates[index] = trio.Event()
            await gate.wait()
            if index in self.fails:
                raise Failure(f"mutation {index}")
            return f"done {index}"

        def on_mutate(index: int) -> None:
            self.started.append(index)

        self.mutation_fn = mutation_fn
        self.on_mutate = on_mutate

        @contextlib.asynccontextmanager
        async def setup(_nursery: trio.Nursery) -> AsyncIterator[sq.QueryClient]:
            async with sq.open_query_client() as client:
                yield client

        self.session = TrioSession(setup)

    def teardown(self) -> None:
        self.session.close()

    def expected_running(self) -> list[int]:
        """The model: each scope's first call not ended, and every call without a scope."""
        running = []
        heads: set[str] = set()
        for index, call in enumerate(self.calls):
            if call.state not in ("waiting", "running"):
                continue
            if call.scope is None:
                running.append(index)
            elif call.scope not in heads:
                heads.add(call.scope)
                running.append(index)
        return running

    @stateful.rule(scopes=st.lists(st.sampled_from(SCOPES), min_size=1, max_size=3))
    def mutate(self, scopes: list[str | None]) -> None:
        self.trace.append(f"mutate {scopes}")
        client = self.session.value
        first = len(self.calls)
        self.calls.extend(MutationCall(scope) for scope in scopes)

        async def start() -> None:
            nursery = self.session.nursery
            assert nursery is not None
            for offset, scope in enumerate(scopes):
                index = first + offset
                cancel_scope = self.scopes[index] = trio.CancelScope()
                options = sq.MutationOptions(
                    mutation_fn=self.mutation_fn, on_mutate=self.on_mutate, scope=scope, retry=0
                )
                nursery.start_soon(self._mutate, client.mutation(options), index, cancel_scope)
                # one call at a time: the call order is this order
                await trio.testing.wait_all_tasks_blocked()

        self.session.run(start)
        self.check()

    async def _mutate(self, mutation: Any, index: int, cancel_scope: trio.CancelScope) -> None:
        with cancel_scope:
            try:
                self.outcomes[index] = await mutation.mutate(index)
            except Failure as exc:
                self.outcomes[index] = f"error {exc}"
            return
        self.outcomes[index] = "cancelled"

    @stateful.rule(data=st.data(), fails=st.booleans())
    def finish(self, data: st.DataObject, fails: bool) -> None:
        running = [i for i, call in enumerate(self.calls) if call.state == "running"]
        if not running:
            return
        index = data.draw(st.sampled_from(running), label="call")
        self.trace.append(f"finish {index} fails={fails}")
        if fails:
            self.fails.add(index)
        self.calls[index].state = "failed" if fails else "returned"
        self.session.run(_sync(self.gates[index].set))
        self.check()

    @stateful.rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        live = [i for i, call in enumerate(self.calls) if call.state in ("waiting", "running")]
        if not live:
            return
        index = data.draw(st.sampled_from(live), label="call")
        self.trace.append(f"cancel {index} ({self.calls[index].state})")
        self.calls[index].state = "cancelled"
        self.session.run(_sync(self.scopes[index].cancel))
        self.check()

    def check(self) -> None:
        running = self.expected_running()
        for index in running:
            self.calls[index].state = "running"
            self.calls[index].ran = True
        ran = set(self.ran)
        started_once = len(self.started) == len(set(self.started))
        should_have_run = {i for i, call in enumerate(self.calls) if call.ran}
        trace = "\n  ".join(self.trace)
        assert started_once, f"an on_mutate ran twice: {self.started}\n  {trace}"
        assert set(self.started) == ran, (
            f"on_mutate {self.started}, mutation_fn {self.ran}\n  {trace}"
        )
        assert ran == should_have_run, (
            f"mutation_fn ran for {sorted(ran)}, model {sorted(should_have_run)}\n  {trace}"
        )
        for index, call in enumerate(self.calls):
            want = {"returned": f"done {index}", "failed": f"error mutation {index}"}.get(
                call.state, "cancelled" if call.state == "cancelled" else None
            )
            assert self.outcomes.get(index) == want, (
                f"call {index}: {self.outcomes.get(index)}, model {want}\n  {trace}"
            )
        live = sum(call.state in ("waiting", "running") for call in self.calls)
        mutating = self.session.value.is_mutating()
        assert mutating == live, f"is_mutating() {mutating}, model {live}\n  {trace}"


ScopeMachine.TestCase.settings = settings(
    model_settings(default_ci=120, default_local=600), stateful_step_count=20
)
TestScopeModel = ScopeMachine.TestCase


def _sync(fn: Any) -> Any:
    async def call() -> None:
        fn()

    return call
