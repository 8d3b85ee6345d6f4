"""A trio daemon in front of a flaky HTTP upstream: ETags, a circuit breaker, stale-if-error.

The daemon answers one request per second for ``/rates`` from a query client.
Behind it, the upstream speaks a minimal HTTP/1.1 with ETags; it goes down
(503) for a while, and comes back with new rates later.  What the daemon
uses to protect it:

* **ETag revalidation**: the ``query_fn`` takes a ``sq.QueryContext``, sends
  the ETag of the data it holds as ``If-None-Match`` and returns
  ``sq.NOT_MODIFIED`` on a 304: the data is kept and fresh again, with no
  body sent.
* **A circuit breaker**: three failed upstream calls in a row open it; while
  open, no call reaches the upstream (no retry either), until a probe after
  ``recovery_time`` finds it back.
* **stale_if_error**: past its ``max_age`` the last good data is still
  served for ``stale_if_error`` seconds while refetches fail; after that the
  daemon answers 503 itself.

It runs a scripted scenario of 45 seconds on trio's ``MockClock`` (the
upstream is in the same process, over in-memory streams), so it finishes at
once and prints the same thing every time::

    python examples/flaky_upstream.py
"""

from __future__ import annotations

import json
from typing import Any

import trio
import trio.testing

import stackquery as sq

DOWN = (8.0, 26.0)
"""Seconds (from the start) during which the upstream answers 503."""
NEW_RATES_AT = 32.0
"""When the upstream's rates change (a new ETag)."""
LATENCY = 0.05
"""Seconds the upstream takes per request."""


class Upstream:
    """The flaky HTTP server: ``GET /rates`` with ETags, a 503 while down."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self.nursery = nursery
        self.answers = {200: 0, 304: 0, 503: 0}

    async def connect(self) -> trio.abc.Stream:
        """Open a connection to the server (an in-memory stream pair; sockets work the same)."""
        client_end, server_end = trio.testing.memory_stream_pair()
        self.nursery.start_soon(self.handle, server_end)
        return client_end

    async def handle(self, stream: trio.abc.Stream) -> None:
        async with stream:
            head = await read_head(stream)
            await trio.sleep(LATENCY)
            now = trio.current_time()
            version = "v2" if now >= NEW_RATES_AT else "v1"
            etag = f'"{version}"'
            if DOWN[0] <= now < DOWN[1]:
                status, headers, body = 503, {}, b"down for maintenance"
            elif head.get("if-none-match") == etag:
                status, headers, body = 304, {"etag": etag}, b""
            else:
                rates = {"v1": {"EUR": 1.08}, "v2": {"EUR": 1.11}}[version]
                status, headers, body = 200, {"etag": etag}, json.dumps(rates).encode()
            self.answers[status] += 1
            lines = [f"HTTP/1.1 {status} X", f"content-length: {len(body)}"]
            lines += [f"{name}: {value}" for name, value in headers.items()]
            await stream.send_all(("\r\n".join(lines) + "\r\n\r\n").encode() + body)


async def read_head(stream: trio.abc.Stream) -> dict[str, str]:
    """Read a request's head; return its headers (lower-case names)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some()
        if not chunk:
            break
        data += chunk
    lines = data.split(b"\r\n\r\n", 1)[0].decode().split("\r\n")[1:]
    return {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}


class UpstreamError(Exception):
    """The upstream answered with an error status."""


async def http_get(
    upstream: Upstream, path: str, etag: str | None
) -> tuple[int, dict[str, str], bytes]:
    """A minimal HTTP/1.1 GET (``Connection: close``); returns status, headers and body."""
    stream = await upstream.connect()
    async with stream:
        request = f"GET {path} HTTP/1.1\r\nhost: upstream\r\nconnection: close\r\n"
        if etag is not None:
            request += f"if-none-match: {etag}\r\n"
        await stream.send_all((request + "\r\n").encode())
        response = b""
        while chunk := await stream.receive_some():
            response += chunk
    head, body = response.split(b"\r\n\r\n", 1)
    status_line, *lines = head.decode().split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
    return int(status_line.split()[1]), headers, body


def rates_query(upstream: Upstream, breaker: sq.CircuitBreaker) -> sq.QueryOptions[Any]:
    async def load_rates(ctx: sq.QueryContext[dict[str, Any]]) -> Any:
        previous = ctx.previous_data if ctx.has_previous_data else None
        etag = previous["etag"] if previous is not None else None
        status, headers, body = await http_get(upstream, ctx.meta["path"], etag)
        if status == 304:
            return sq.NOT_MODIFIED  # keep what we have: fresh again, no body sent
        if status != 200:
            raise UpstreamError(f"upstream answered {status}")
        return {"etag": headers["etag"], "rates": json.loads(body)}

    return sq.QueryOptions(
        query_key=("rates",),
        query_fn=load_rates,
        meta={"path": "/rates"},
        stale_time=2.0,  # fresh for 2 s: then served at once while revalidated
        max_age=5.0,  # past 5 s a request waits for the revalidation ...
        stale_if_error=10.0,  # ... unless it fails: then the old rates, 10 s more
        retry=1,
        retry_delay=0.5,
        circuit=breaker,
    )


async def main() -> None:
    breaker = sq.CircuitBreaker(failure_threshold=3, recovery_time=6.0, name="upstream")
    async with trio.open_nursery() as nursery, sq.open_query_client() as client:
        upstream = Upstream(nursery)
        query = rates_query(upstream, breaker)
        for second in range(45):
            await trio.sleep_until(float(second))
            try:
                data = await client.fetch_query(query)
            except Exception as exc:
                answer = f"503 {type(exc).__name__}"
            else:
                answer = f"200 EUR={data['rates']['EUR']} etag={data['etag']}"
            state = client.get_query_state(("rates",))
            assert state is not None
            note = "fresh" if not state.is_stale else "stale"
            if state.error is not None and state.has_data:
                note += f", upstream failing ({type(state.error).__name__})"
            print(f"t={second:2d}s  {answer:<30} {note:<45} circuit={breaker.state.value}")
        nursery.cancel_scope.cancel()
    stats = client.statistics()
    print(
        f"upstream answers: {upstream.answers}; "
        f"refused by the circuit: {breaker.statistics().refused}; "
        f"stale-if-error serves: {stats.stale_if_error_served}"
    )


if __name__ == "__main__":
    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
