"""Where a Redis server is, how to log in, and opening a ready stream to it."""

from __future__ import annotations

import ssl
from typing import Any

import attrs
import trio

from ._redis_connection import HandshakeRefused
from ._resp import NOT_ENOUGH_DATA, CommandArg, new_reply_reader, pack_command

_TLS_QUERY_OPTIONS = frozenset({"ssl_cert_reqs", "ssl_ca_certs", "ssl_check_hostname"})
_CERT_REQS = {
    "none": ssl.CERT_NONE,
    "optional": ssl.CERT_OPTIONAL,
    "required": ssl.CERT_REQUIRED,
}


@attrs.frozen
class RedisAddress:
    """Where a Redis server listens and how to open a session on it."""

    host: str = "127.0.0.1"
    """Host name or IP address (ignored when ``path`` is set)."""
    port: int = 6379
    """TCP port (ignored when ``path`` is set)."""
    path: str | None = None
    """Unix socket path; ``None`` for TCP."""
    db: int = 0
    """Database number, selected on every new connection."""
    username: str | None = None
    """ACL user name for ``AUTH`` (``None``: the default user)."""
    password: str | None = attrs.field(default=None, repr=False)
    """Password for ``AUTH`` (``None``: no ``AUTH``)."""
    ssl_context: ssl.SSLContext | None = attrs.field(default=None, repr=False, eq=False)
    """TLS settings; ``None`` for a plain connection."""

    @classmethod
    def from_url(cls, url: str, *, ssl_context: ssl.SSLContext | None = None) -> RedisAddress:
        """Parse a URL the way redis-py does.

        ``redis://[[user]:password@]host[:port][/db]``, ``rediss://`` (TLS) and
        ``unix://[[user]:password@]/path?db=N``.  Query options understood:
        ``db``, and for ``rediss://`` ``ssl_cert_reqs`` (none|optional|required),
        ``ssl_ca_certs`` and ``ssl_check_hostname``.

        Args:
            url: the server's URL.
            ssl_context: TLS settings for ``rediss://``, used instead of the
                URL's ``ssl_*`` options.

        Raises:
            ValueError: the URL has another scheme, a bad value, or an option
                this client does not support.
        """
        from redis.connection import SSLConnection, UnixDomainSocketConnection, parse_url

        options: dict[str, Any] = parse_url(url)  # type: ignore[no-untyped-call]
        connection_class = options.pop("connection_class", None)
        tls = connection_class is SSLConnection
        tls_options = {name: options.pop(name) for name in _TLS_QUERY_OPTIONS & options.keys()}
        address_options = {
            name: options.pop(name)
            for name in ("host", "port", "path", "db", "username", "password")
            if name in options
        }
        if options:
            raise ValueError(f"unsupported option(s) in redis URL: {', '.join(sorted(options))}")
        if tls_options and not tls:
            raise ValueError("ssl_* options in a redis URL need the rediss:// scheme")
        if connection_class is UnixDomainSocketConnection and "path" not in address_options:
            raise ValueError("a unix:// redis URL needs a socket path")
        if tls and ssl_context is None:
            ssl_context = _context_from_options(tls_options)
        return cls(**address_options, ssl_context=ssl_context if tls else None)

    def handshake_commands(self) -> list[tuple[CommandArg, ...]]:
        """The commands that set up a new connection (``AUTH``, ``SELECT``)."""
        commands: list[tuple[CommandArg, ...]] = []
        if self.password is not None:
            if self.username is not None:
                commands.append(("AUTH", self.username, self.password))
            else:
                commands.append(("AUTH", self.password))
        if self.db != 0:
            commands.append(("SELECT", self.db))
        return commands


def _context_from_options(options: dict[str, Any]) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=options.get("ssl_ca_certs"))
    reqs = options.get("ssl_cert_reqs", "required")
    if isinstance(reqs, str):
        if reqs.lower() not in _CERT_REQS:
            raise ValueError(f"ssl_cert_reqs must be none, optional or required, not {reqs!r}")
        reqs = _CERT_REQS[reqs.lower()]
    context.check_hostname = bool(options.get("ssl_check_hostname", reqs != ssl.CERT_NONE))
    context.verify_mode = reqs
    return context


async def open_redis_stream(address: RedisAddress, *, use_hiredis: bool = True) -> trio.abc.Stream:
    """Connect to ``address``, start TLS, authenticate and select the database.

    Cancelled, it closes whatever it had opened.

    Raises:
        OSError: the server could not be reached.
        trio.BrokenResourceError: the connection or the TLS handshake failed.
        HandshakeRefused: the server answered ``AUTH`` or ``SELECT`` with an error.
    """
    stream: trio.abc.Stream
    if address.path is not None:
        stream = await trio.open_unix_socket(address.path)
    else:
        stream = await trio.open_tcp_stream(address.host, address.port)
    try:
        if address.ssl_context is not None:
            tls_stream = trio.SSLStream(stream, address.ssl_context, server_hostname=address.host)
            await tls_stream.do_handshake()
            stream = tls_stream
        commands = address.handshake_commands()
        if commands:
            await _run_handshake(stream, commands, use_hiredis=use_hiredis)
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return stream


async def _run_handshake(
    stream: trio.abc.Stream, commands: list[tuple[CommandArg, ...]], *, use_hiredis: bool
) -> None:
    await stream.send_all(b"".join(pack_command(command) for command in commands))
    reader = new_reply_reader(use_hiredis=use_hiredis)
    for command in commands:
        while (reply := reader.gets()) is NOT_ENOUGH_DATA:
            data = await stream.receive_some()
            if not data:
                raise ConnectionResetError("redis closed the connection during the handshake")
            reader.feed(data)
        if isinstance(reply, Exception):  # an error reply
            raise HandshakeRefused(f"{command[0]!s} failed: {reply}") from reply
