"""An HTTP daemon on trio whose answers come from a stackquery client.

It shows a hand-written ASGI app served by hypercorn's trio worker, with a
slow origin behind ``fetch_query``: concurrent requests for a cold user share
one origin call, later ones are cache hits, an invalidated user is served at
once (stale) while one refetch runs behind it, and with ``--storage`` the
cache outlives the process.  SIGINT (Ctrl+C) or SIGTERM shuts it down
gracefully.  Needs the ``examples`` extra (hypercorn)::

    python examples/http_daemon.py --port 8000 --storage sqlite:/tmp/users.sqlite3
    curl localhost:8000/users/7                   # 200 ms the first time, instant after
    curl -X POST localhost:8000/users/7/invalidate
    curl localhost:8000/users/7                   # the old value at once; a refetch behind it
    curl 'localhost:8000/users?ids=1,2,3'         # many users: one batch call for the cold ones
    curl localhost:8000/stats

With ``--admin-socket PATH`` (or ``STACKQUERY_ADMIN_SOCKET=PATH``) the client also
serves its attach endpoint there, for operators::

    python examples/http_daemon.py --admin-socket /tmp/users.sock &
    stackquery top --attach /tmp/users.sock
    stackquery invalidate --attach /tmp/users.sock '["user"]'

The first line on stdout is the URL it listens on (``--port 0``: a free port).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
from functools import partial
from typing import Any
from urllib.parse import parse_qs

import attrs
import hypercorn
import trio
from hypercorn.trio import serve
from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, Scope

import stackquery as sq
from backends import MemoryStorage, RedisStorage, SQLiteStorage

USER_PATH = re.compile(r"/users/(\d+)")
USER_IDS = re.compile(r"\d+(?:,\d+)*")
MAX_IDS = 1000
"""Most ids one ``/users?ids=`` request may ask for."""
INVALIDATE_PATH = re.compile(r"/users/(\d+)/invalidate")


class UserApp:
    """The ASGI app: users from a slow origin, through the cache."""

    def __init__(self, client: sq.QueryClient) -> None:
        self.client = client
        self.origin_calls = 0
        self.batch_calls = 0

        # The origin's batch endpoint, behind a batch loader: the ids of one request (and of
        # concurrent requests in the same scheduling tick) that are not cached go out in one
        # call; each id is cached on its own, under its own key, for 30 s.
        @sq.cache.batch(30, key="user:{}", client=client, max_batch=100)
        async def load_users(ids: list[int]) -> dict[int, dict[str, Any]]:
            self.batch_calls += 1
            call = self.batch_calls
            await trio.sleep(0.2)
            return {i: {"id": i, "batch_call": call} for i in ids if i < 100}  # unknown: None

        self.get_users = load_users

    async def load_user(self, user_id: int) -> dict[str, Any] | None:
        """The origin (a database, an API): slow, and None for an unknown user."""
        self.origin_calls += 1
        call = self.origin_calls
        await trio.sleep(0.2)
        return {"id": user_id, "origin_call": call} if user_id < 100 else None

    def user_query(self, user_id: int) -> sq.QueryOptions[dict[str, Any] | None]:
        return sq.QueryOptions(
            query_key=("user", user_id), query_fn=partial(self.load_user, user_id)
        )

    async def handle(self, method: str, path: str, query: str = "") -> tuple[int, object]:
        if method == "GET" and path == "/users":
            ids = parse_qs(query).get("ids", [""])[-1]
            if not USER_IDS.fullmatch(ids) or ids.count(",") >= MAX_IDS:
                return 400, {"error": f"expected ?ids=1,2,3 (at most {MAX_IDS} ids)"}
            return 200, {"users": await self.get_users.many(int(i) for i in ids.split(","))}
        if method == "GET" and (match := USER_PATH.fullmatch(path)):
            user = await self.client.fetch_query(self.user_query(int(match[1])))
            return (200, user) if user is not None else (404, {"error": f"no user {match[1]}"})
        if method == "POST" and (match := INVALIDATE_PATH.fullmatch(path)):
            count = await self.client.invalidate_queries(("user", int(match[1])), exact=True)
            return 200, {"invalidated": count}
        if method == "GET" and path == "/stats":
            l2 = self.client.l2_statistics()
            return 200, {
                "origin_calls": self.origin_calls,
                "batch_calls": self.batch_calls,
                "client": attrs.asdict(self.client.statistics()),
                "l2": attrs.asdict(l2) if l2 is not None else None,
                "queries": [
                    {"key": list(q.key), "status": q.status.value, "stale": q.is_stale}
                    for q in self.client.snapshot()
                ],
            }
        return 404, {"error": f"no route for {method} {path}"}

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] == "lifespan":
            await receive()  # startup: nothing to set up, the client is open already
            await send({"type": "lifespan.startup.complete"})
            await receive()  # shutdown
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return  # no websockets here
        query = scope["query_string"].decode("latin-1")
        status, payload = await self.handle(scope["method"], scope["path"], query)
        body = json.dumps(payload).encode()
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})


def storage(spec: str) -> MemoryStorage | SQLiteStorage | RedisStorage:
    """the L2 store: memory, sqlite:PATH or redis:URL"""
    kind, _, where = spec.partition(":")
    if spec == "memory":
        return MemoryStorage()
    if kind == "sqlite" and where:
        return SQLiteStorage(where)
    if kind == "redis" and where:
        return RedisStorage(where)
    raise argparse.ArgumentTypeError(f"expected memory, sqlite:PATH or redis:URL, got {spec!r}")


async def main(
    port: int, store: MemoryStorage | SQLiteStorage | RedisStorage, admin_socket: str | None
) -> None:
    server = hypercorn.Config()
    server.bind = [f"127.0.0.1:{port}"]
    server.loglevel = "WARNING"
    # Installed first: a signal that comes while the server starts waits here, it does not kill us.
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:

        async def shutdown_trigger() -> None:
            async for _ in signals:
                return

        config = sq.QueryClientConfig(stale_time=30.0, storage=store, admin_socket=admin_socket)
        async with (
            store,  # closed last, once the client has flushed its writes to it
            sq.open_query_client(config) as client,
            trio.open_nursery() as nursery,
        ):
            serving = partial(serve, UserApp(client), server, shutdown_trigger=shutdown_trigger)
            urls: list[str] = await nursery.start(serving)
            print(urls[0], flush=True)
    print("stopped", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8000, help="0: any free port")
    parser.add_argument("--storage", default="memory", type=storage, help=storage.__doc__)
    parser.add_argument(
        "--admin-socket",
        metavar="PATH",
        default=os.environ.get("STACKQUERY_ADMIN_SOCKET") or None,
        help="serve the client's attach endpoint at this Unix socket "
        "(default: $STACKQUERY_ADMIN_SOCKET; none without it)",
    )
    args = parser.parse_args()
    trio.run(main, args.port, args.storage, args.admin_socket)
