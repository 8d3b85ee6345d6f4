"""A throwaway ``redis-server`` on a free loopback port, for tests and benchmarks.

Never the system Redis: the port is picked by the kernel and 6379 is refused,
and the data directory is a fresh temporary directory with persistence off.
Starting takes a few milliseconds, so every test can have its own server.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

REDIS_SERVER_BINARY = "/usr/bin/redis-server"
SYSTEM_REDIS_PORT = 6379
_START_TIMEOUT = 10.0
_START_ATTEMPTS = 3


class RedisServerError(RuntimeError):
    """The redis-server process could not be started or did not answer."""


def free_loopback_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago (never 6379)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port: int = probe.getsockname()[1]
        if port != SYSTEM_REDIS_PORT:
            return port


class RedisServer:
    """One ``redis-server`` child process listening on ``127.0.0.1:<port>``.

    Args:
        extra_args: more ``redis-server`` options, e.g. ``("--requirepass", "s3cret")``.
        unix_socket: also listen on a unix socket in the data directory
            (see :attr:`unix_url`).
        binary: the ``redis-server`` executable.

    Use it as a context manager, or call :meth:`start` and :meth:`stop`.
    """

    def __init__(
        self,
        extra_args: Sequence[str] = (),
        *,
        unix_socket: bool = False,
        binary: str = REDIS_SERVER_BINARY,
    ) -> None:
        self.extra_args = tuple(extra_args)
        self.binary = binary
        self.port = 0
        self.directory = Path(tempfile.mkdtemp(prefix="sq-redis-"))
        self.socket_path = self.directory / "redis.sock" if unix_socket else None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The ``redis://`` URL of the server (database 0, no credentials)."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def unix_url(self) -> str:
        """The ``unix://`` URL of the server's unix socket."""
        if self.socket_path is None:
            raise RedisServerError("this server was started without unix_socket=True")
        return f"unix://{self.socket_path}?db=0"

    @property
    def pid(self) -> int:
        """The process id of the running server."""
        return self._running().pid

    def start(self) -> None:
        """Start the server on a free port and wait until it answers PING.

        Raises:
            RedisServerError: the binary is missing, or three attempts on fresh
                ports failed (another process took the port first).
        """
        if not os.path.exists(self.binary):
            raise RedisServerError(f"redis-server binary not found at {self.binary}")
        for _ in range(_START_ATTEMPTS):
            self.port = free_loopback_port()
            if self._spawn_and_wait():
                return
        raise RedisServerError(f"redis-server did not start after {_START_ATTEMPTS} attempts")

    def restart(self) -> None:
        """Start the server again on the same port after :meth:`kill` or :meth:`stop`.

        The data set starts empty (persistence is off).

        Raises:
            RedisServerError: the server did not come back on its port.
        """
        self._reap()
        if not self._spawn_and_wait():
            raise RedisServerError(f"redis-server did not restart on port {self.port}")

    def kill(self) -> None:
        """Kill the server with SIGKILL (no goodbye to its clients) and reap it."""
        process = self._running()
        process.kill()  # SIGKILL ends a paused (stopped) process too, without running it
        process.wait()
        self._process = None

    def pause(self) -> None:
        """Freeze the server with SIGSTOP: connections stay open, nothing answers."""
        self._running().send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Unfreeze a server frozen by :meth:`pause` (SIGCONT)."""
        self._running().send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """Kill the server if it runs and remove its data directory; idempotent."""
        self._reap()
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _command(self) -> list[str]:
        command = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.directory),
            "--loglevel", "warning",
        ]  # fmt: skip
        if self.socket_path is not None:
            command += ["--unixsocket", str(self.socket_path), "--unixsocketperm", "700"]
        return command + list(self.extra_args)

    def _spawn_and_wait(self) -> bool:
        """Spawn the process; True once it answers PING, False if it exited."""
        process = subprocess.Popen(
            self._command(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._process = process
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if process.poll() is not None:
                self._process = None
                return False
            if self._answers_ping():
                return True
            time.sleep(0.002)
        self._reap()
        raise RedisServerError(f"redis-server on port {self.port} did not answer PING in time")

    def _answers_ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as conn:
                conn.sendall(b"PING\r\n")
                reply = conn.recv(64)
        except OSError:
            return False
        # -NOAUTH means the server is up but wants a password: it is answering.
        return reply.startswith((b"+PONG", b"-NOAUTH"))

    def _running(self) -> subprocess.Popen[bytes]:
        if self._process is None:
            raise RedisServerError("redis-server is not running")
        return self._process

    def _reap(self) -> None:
        if self._process is not None:
            self.kill()
