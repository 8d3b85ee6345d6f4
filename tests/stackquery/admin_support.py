"""Helpers for the attach endpoint's tests: a short socket path and a raw peer."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import orjson
import pytest
import trio


@pytest.fixture
def socket_path() -> Iterator[Path]:
    """A socket path in a fresh directory under /tmp (pytest's tmp_path can be too long)."""
    directory = tempfile.mkdtemp(prefix="sqa", dir="/tmp")
    try:
        yield Path(directory) / "admin.sock"
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@attrs.define(eq=False)
class Peer:
    """A raw connection to the endpoint: bytes out, reply lines in."""

    stream: trio.SocketStream
    buffer: bytearray = attrs.field(factory=bytearray)

    @classmethod
    async def connect(cls, path: Path) -> Peer:
        return cls(await trio.open_unix_socket(str(path)))

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        """Send one request, return the decoded reply."""
        await self.send(orjson.dumps(request) + b"\n")
        reply = await self.reply()
        assert reply is not None, "the endpoint closed the connection"
        return reply

    async def reply(self) -> dict[str, Any] | None:
        """The next reply line decoded, or ``None`` once the endpoint closed the connection.

        A connection closed with our bytes unread arrives as a reset: closed too.
        """
        while b"\n" not in self.buffer:
            try:
                chunk = await self.stream.receive_some(65536)
            except trio.BrokenResourceError:
                return None
            if not chunk:
                return None
            self.buffer += chunk
        line, _, rest = bytes(self.buffer).partition(b"\n")
        self.buffer = bytearray(rest)
        decoded: dict[str, Any] = orjson.loads(line)
        return decoded

    async def aclose(self) -> None:
        await self.stream.aclose()


def error(code: str, message: str) -> dict[str, Any]:
    """An error reply, as the endpoint sends it (no id)."""
    return {"ok": False, "error": {"code": code, "message": message}}
