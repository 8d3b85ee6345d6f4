"""``examples/bg_reader.py`` and ``bg_writer.py`` when the other side, or Redis, is not there.

Real processes on a private redis-server; every wait is bounded.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import trio

from tests.redis_server import RedisServer, free_loopback_port
from tests.test_examples import ENV, EXAMPLES, TIMEOUT, finished_example, rates_line, run_example

pytestmark = pytest.mark.slow


async def read_to_end(stream: trio.abc.ReceiveStream) -> bytes:
    """Everything a child process writes to ``stream`` until it closes it."""
    data = b""
    while chunk := await stream.receive_some():
        data += chunk
    return data


async def start_example(script: str, *args: str) -> trio.Process:
    """Start an example with its stdout and stderr piped to us."""
    return await trio.lowlevel.open_process(
        [sys.executable, str(EXAMPLES / script), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=ENV,
    )


async def test_a_reader_started_before_any_writer_says_so_and_waits(redis_url: str) -> None:
    """It prints that it waits, then the writer's values once one runs; no traceback."""
    process = await start_example("bg_reader.py", "--redis", redis_url, "--until", "2")
    assert process.stdout is not None and process.stderr is not None
    waiting = f"no rates in {redis_url} yet: waiting for a writer (bg_writer.py)\n".encode()
    try:
        with trio.fail_after(TIMEOUT):
            first = b""
            while b"\n" not in first:
                first += await process.stdout.receive_some()
            assert first == waiting
            writer = await run_example(
                "bg_writer.py", "--redis", redis_url, "--interval", "0.2", "--count", "2"
            )
            rest = await read_to_end(process.stdout)
            errors = await read_to_end(process.stderr)
            await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
    assert writer.splitlines() == [rates_line("published", n) for n in (1, 2)]
    assert (process.returncode, errors) == (0, b"")
    assert rest.decode().splitlines()[-1] == rates_line("read", 2)


async def test_a_writer_without_redis_says_it_cannot_publish() -> None:
    """Exit 1, nothing claimed as published, and why on stderr."""
    url = f"redis://127.0.0.1:{free_loopback_port()}/0"
    done = await finished_example("bg_writer.py", "--redis", url, "--count", "2")
    err = done.stderr.decode()
    assert (done.returncode, done.stdout) == (1, b"")
    assert err.startswith(f"cannot publish: Redis at {url} is unreachable: ")
    assert err.count("\n") == 1


async def test_a_writer_whose_redis_dies_stops_claiming_to_publish(
    redis_server: RedisServer,
) -> None:
    """Values published while Redis is up; the first one after it died is reported, exit 1."""
    url = redis_server.url
    args = ("--redis", url, "--interval", "0.2", "--count", "1000")
    process = await start_example("bg_writer.py", *args)
    assert process.stdout is not None and process.stderr is not None
    try:
        with trio.fail_after(TIMEOUT):
            out = b""
            while b"\n" not in out:
                out += await process.stdout.receive_some()
            redis_server.kill()
            out += await read_to_end(process.stdout)
            err = await read_to_end(process.stderr)
            await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
    lines = out.decode().splitlines()
    assert lines == [rates_line("published", n) for n in range(1, len(lines) + 1)]
    assert process.returncode == 1
    refused = [line for line in err.decode().splitlines() if line.startswith("cannot publish {")]
    assert len(refused) == 1
    assert f"'refresh': {len(lines) + 1}" in refused[0]
    assert f": Redis at {url} " in refused[0]
