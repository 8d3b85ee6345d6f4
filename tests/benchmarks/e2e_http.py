"""End-to-end benchmark: the HTTP daemon example under load from a separate process.

The server is ``examples/http_daemon.py``'s ``UserApp`` served by hypercorn's
trio worker, in its own process, with its slow origin (200 ms a call) behind
either the stackquery client (``cache``) or a plain dict in its place
(``dict``: no single flight, no expiry, the floor a cache can reach).  The
load comes from another process: ``--connections`` keep-alive HTTP/1.1
connections (asyncio, raw sockets), each sending ``GET /users/<id>`` one
after another for ``--seconds``, the ids drawn from a Zipf law over
``--users`` ids (exponent ``--zipf``), the same sequence for both servers.

Printed per server, medians over ``--rounds`` (min-max): requests/s, p50
and p99 latency, origin calls, and stackquery's share of the server's busy
CPU time.  The share comes from a sampling thread in the server (every
millisecond, the main thread's stack): samples with a frame of
``stackquery/``, ``actors/`` or ``backends/`` on the stack, over samples
where the main thread was not waiting for I/O.  Target: at most 5 %.

Run from the repository root (needs hypercorn, the ``examples`` extra)::

    python tests/benchmarks/e2e_http.py [--rounds 3] [--seconds 5] [--connections 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

TARGET_SHARE = 0.05
OURS = tuple(str(ROOT / name) + os.sep for name in ("stackquery", "actors", "backends"))


# -- the server process ------------------------------------------------------------------


class Sampler:
    """Samples the main thread's stack every millisecond from a daemon thread."""

    def __init__(self) -> None:
        self.busy = 0
        self.ours = 0
        self._main = threading.main_thread().ident
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.0005):
            frame = sys._current_frames().get(self._main)
            if frame is None or frame.f_code.co_name == "get_events":
                continue  # waiting for I/O (trio's epoll wait): not busy
            self.busy += 1
            while frame is not None:
                if frame.f_code.co_filename.startswith(OURS):
                    self.ours += 1
                    break
                frame = frame.f_back


def serve(mode: str) -> None:
    """Serve the example app (``cache`` or ``dict``) until SIGTERM; print stats as JSON."""
    import hypercorn
    import trio
    from hypercorn.trio import serve as hypercorn_serve

    import stackquery as sq
    from examples.http_daemon import USER_PATH, UserApp

    class DictApp(UserApp):
        """The same app with a plain dict in place of the cache."""

        def __init__(self) -> None:
            self.origin_calls = 0
            self.table: dict[int, Any] = {}

        async def handle(self, method: str, path: str, query: str = "") -> tuple[int, object]:
            if method == "GET" and (match := USER_PATH.fullmatch(path)):
                user_id = int(match[1])
                try:
                    user = self.table[user_id]
                except KeyError:
                    user = self.table[user_id] = await self.load_user(user_id)
                return (200, user) if user is not None else (404, {"error": "no user"})
            return 404, {"error": "no route"}

    sampler = Sampler()
    # The sampler runs when the main thread lets go of the GIL: at most every
    # switch interval (5 ms by default) while it is busy.  1 ms: more samples.
    sys.setswitchinterval(0.001)

    async def main() -> None:
        config = hypercorn.Config()
        config.bind = ["127.0.0.1:0"]
        config.loglevel = "WARNING"
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:

            async def shutdown_trigger() -> None:
                async for _ in signals:
                    return

            async with sq.open_query_client(sq.QueryClientConfig(stale_time=30.0)) as client:
                app = UserApp(client) if mode == "cache" else DictApp()
                async with trio.open_nursery() as nursery:
                    run = partial(hypercorn_serve, app, config, shutdown_trigger=shutdown_trigger)
                    urls: list[str] = await nursery.start(run)
                    sampler.start()
                    print(urls[0], flush=True)
                sampler.stop()
                stats = {"origin_calls": app.origin_calls, "busy": sampler.busy}
                print(json.dumps({**stats, "ours": sampler.ours}), flush=True)

    trio.run(main)


# -- the load process -------------------------------------------------------------------------


def zipf_ids(users: int, exponent: float, count: int, seed: int) -> list[int]:
    weights = [1.0 / (rank**exponent) for rank in range(1, users + 1)]
    return random.Random(seed).choices(range(users), weights=weights, k=count)


async def _connection(
    host: str, port: int, ids: list[int], deadline: float, latencies: list[float]
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        i = 0
        while time.perf_counter() < deadline:
            request = f"GET /users/{ids[i % len(ids)]} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
            i += 1
            start = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - start)
    finally:
        writer.close()


def load(url: str, connections: int, seconds: float, ids: list[int]) -> None:
    """Drive the server for ``seconds``; print requests/s, p50, p99 as JSON."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    latencies: list[float] = []

    async def main() -> float:
        start = time.perf_counter()
        deadline = start + seconds
        step = max(1, len(ids) // connections)
        await asyncio.gather(
            *(
                _connection(host, int(port), ids[n * step :] + ids[: n * step], deadline, latencies)
                for n in range(connections)
            )
        )
        return time.perf_counter() - start

    elapsed = asyncio.run(main())
    latencies.sort()
    print(
        json.dumps(
            {
                "rps": len(latencies) / elapsed,
                "p50": latencies[len(latencies) // 2],
                "p99": latencies[int(len(latencies) * 0.99)],
            }
        )
    )


# -- the driver -------------------------------------------------------------------------------


def one_run(mode: str, args: argparse.Namespace, ids_file: str) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", mode], stdout=subprocess.PIPE, text=True, env=env
    )
    stopped = False
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        loaded = subprocess.run(
            [
                sys.executable,
                __file__,
                "--load",
                url,
                "--ids-file",
                ids_file,
                "--connections",
                str(args.connections),
                "--seconds",
                str(args.seconds),
            ],
            capture_output=True,
            text=True,
            check=True,
            env=env,
        )
        server.send_signal(signal.SIGTERM)
        stopped = True
        served = json.loads(server.stdout.readline())
    finally:
        # On any failure (the load generator's, or this driver stopped) the server goes too:
        # left running, it would hold this driver's pipe and keep a port and a core.
        if not stopped and server.poll() is None:
            server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    result = json.loads(loaded.stdout)
    result["origin_calls"] = served["origin_calls"]
    result["share"] = served["ours"] / max(1, served["busy"])
    result["samples"] = served["busy"]
    return result


def describe(values: list[float], scale: float, unit: str, digits: int = 0) -> str:
    def fmt(v: float) -> str:
        return f"{v * scale:.{digits}f}"

    return f"{fmt(statistics.median(values))} {unit} ({fmt(min(values))}-{fmt(max(values))})"


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--zipf", type=float, default=1.1)
    parser.add_argument("--serve", choices=("cache", "dict"), help=argparse.SUPPRESS)
    parser.add_argument("--load", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--ids-file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return 0
    if args.load:
        ids = json.loads(Path(args.ids_file).read_text())
        load(args.load, args.connections, args.seconds, ids)
        return 0

    import tempfile

    results: dict[str, list[dict[str, float]]] = {"cache": [], "dict": []}
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as ids_file:
        json.dump(zipf_ids(args.users, args.zipf, 200_000, seed=12), ids_file)
    try:
        for _ in range(args.rounds):
            for mode in ("cache", "dict"):  # interleaved: machine noise hits both alike
                results[mode].append(one_run(mode, args, ids_file.name))
    finally:
        os.unlink(ids_file.name)
    print(
        f"{args.rounds} rounds x {args.seconds:g} s, {args.connections} connections,"
        f" Zipf({args.zipf:g}) over {args.users} ids; median (min-max)"
    )
    for mode, label in (("cache", "stackquery client"), ("dict", "plain dict")):
        runs = results[mode]
        print(f"\n{label}")
        print(f"  requests/s    {describe([r['rps'] for r in runs], 1, '')}")
        print(f"  p50           {describe([r['p50'] for r in runs], 1e3, 'ms', 2)}")
        print(f"  p99           {describe([r['p99'] for r in runs], 1e3, 'ms', 2)}")
        print(f"  origin calls  {describe([r['origin_calls'] for r in runs], 1, '')}")
        if mode == "cache":
            shares = describe([r["share"] for r in runs], 100, "%", 1)
            samples = statistics.median(r["samples"] for r in runs)
            print(f"  stackquery's share of busy CPU  {shares}  ({samples:.0f} busy samples)")
    share = statistics.median(r["share"] for r in results["cache"])
    ratio = statistics.median(
        c["rps"] / d["rps"] for c, d in zip(results["cache"], results["dict"], strict=True)
    )
    print(f"\nrequests/s, cache / dict: {ratio:.2f}x")
    ok = share <= TARGET_SHARE
    print(f"verdict: {'PASS' if ok else 'FAIL'}: stackquery's share {share:.1%} (target <= 5 %)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
