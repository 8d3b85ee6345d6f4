"""``examples/bg_reader.py`` and ``bg_writer.py`` when the other side, or Redis, is not there.

Real processes on a private redis-server; every wait is bounded.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import trio

from tests.redis_server import RedisServer, free_loopback_port
from tests.test_examples import ENV, EXAMPLES, TIMEOUT, rates_line, run_example

pytestmark = pytest.mark.slow


async def run_failing(script: str, *args: str) -> tuple[int, str, str]:
    """Run an example that is expected to fail (bounded); return status, stdout, stderr."""
    with trio.fail_after(TIMEOUT):
        done = await trio.run_process(
            [sys.executable, str(EXAMPLES / script), *args],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env=ENV,
        )
    return done.returncode, done.stdout.decode(), done.stderr.decode()


async def test_a_reader_started_before_any_writer_says_so_and_waits(redis_url: str) -> None:
    """It prints that it waits, then the writer's values once one runs; no traceback."""
    command = [sys.executable, str(EXAMPLES / "bg_reader.py"), "--redis", redis_url]
    process = await trio.lowlevel.open_process(
        [*command, "--until", "2", "--poll", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=ENV,
    )
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
            rest = b""
            while chunk := await process.stdout.receive_some():
                rest += chunk
            errors = b""
            while chunk := await process.stderr.receive_some():
                errors += chunk
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
    status, out, err = await run_failing("bg_writer.py", "--redis", url, "--count", "2")
    assert (status, out) == (1, "")
    assert err.startswith(f"cannot publish: Redis at {url} is unreachable: ")
    assert err.count("\n") == 1


async def test_a_writer_whose_redis_dies_stops_claiming_to_publish(
    redis_server: RedisServer,
) -> None:
    """Values published while Redis is up; the first one after it died is reported, exit 1."""
    url = redis_server.url
    command = [sys.executable, str(EXAMPLES / "bg_writer.py"), "--redis", url]
    process = await trio.lowlevel.open_process(
        [*command, "--interval", "0.2", "--count", "1000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=ENV,
    )
    assert process.stdout is not None and process.stderr is not None
    try:
        with trio.fail_after(TIMEOUT):
            out = b""
            while b"\n" not in out:
                out += await process.stdout.receive_some()
            redis_server.kill()
            while chunk := await process.stdout.receive_some():
                out += chunk
            err = b""
            while chunk := await process.stderr.receive_some():
                err += chunk
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
