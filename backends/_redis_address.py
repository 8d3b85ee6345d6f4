"""Where a Redis server is, how to log in, and opening ready connections to it."""

from __future__ import annotations

import contextlib
import functools
import ssl
from typing import Any, Final

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


KEEPALIVE_IDLE: Final = 15
"""Seconds a TCP connection may be silent before the OS starts probing it."""
KEEPALIVE_INTERVAL: Final = 5
"""Seconds between two unanswered keepalive probes."""
KEEPALIVE_COUNT: Final = 3
"""Unanswered probes after which the OS declares the connection dead (after 30 s in all)."""

LIB_NAME: Final = "stackquery"
"""The library name announced with ``CLIENT SETINFO lib-name``."""


@functools.cache
def lib_version() -> str:
    """The installed stackquery version for ``CLIENT SETINFO lib-ver``; "0" if unknown."""
    import importlib.metadata  # here: it costs 5 ms of start-up (email, csv, zipfile ...)

    try:
        return importlib.metadata.version(LIB_NAME)
    except importlib.metadata.PackageNotFoundError:
        return "0"


def enable_keepalive(sock: trio.socket.SocketType) -> None:
    """Turn on TCP keepalive, with this module's timings where the platform lets us set them.

    A peer that vanished without closing (a half-open connection) is then
    found by the OS even while nothing is sent.
    """
    sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_KEEPALIVE, 1)
    # macOS calls the idle time TCP_KEEPALIVE.
    idle = getattr(trio.socket, "TCP_KEEPIDLE", None) or getattr(trio.socket, "TCP_KEEPALIVE", None)
    timings = (
        (idle, KEEPALIVE_IDLE),
        (getattr(trio.socket, "TCP_KEEPINTVL", None), KEEPALIVE_INTERVAL),
        (getattr(trio.socket, "TCP_KEEPCNT", None), KEEPALIVE_COUNT),
    )
    for option, value in timings:
        if option is not None:
            # A platform that names an option but refuses it keeps its own timing.
            with contextlib.suppress(OSError):
                sock.setsockopt(trio.socket.IPPROTO_TCP, option, value)


@attrs.define(eq=False)
class RedisConnector:
    """Opens ready connections to one server, remembering what the server taught it.

    Each connection gets TCP keepalive, TLS, ``AUTH``, ``SELECT`` and
    ``CLIENT SETINFO`` (all commands written together, one round trip).  A
    server that refuses ``CLIENT SETINFO`` (older than Redis 7.2, or an ACL
    that forbids it) is not asked again; a TLS certificate that failed
    verification is kept in :attr:`certificate_failure` and not tried again.
    """

    address: RedisAddress
    """Where to connect."""
    use_hiredis: bool = True
    """Parse the handshake's replies with hiredis when it is installed."""
    announce: bool = attrs.field(default=True, init=False)
    """Send ``CLIENT SETINFO`` on the next connection (False once the server refused it)."""
    certificate_failure: ssl.SSLCertVerificationError | None = attrs.field(default=None, init=False)
    """Why the server's certificate was rejected, once it was; ``None`` before."""

    async def open_stream(self) -> trio.abc.Stream:
        """Connect, start TLS, authenticate, select the database and announce the library.

        Cancelled, it closes whatever it had opened.

        Raises:
            OSError: the server could not be reached.
            ssl.SSLCertVerificationError: the server's certificate or host name
                failed verification (also kept in :attr:`certificate_failure`).
            trio.BrokenResourceError: the connection or the TLS handshake failed.
            HandshakeRefused: the server answered ``AUTH`` or ``SELECT`` with an error.
        """
        address = self.address
        stream: trio.abc.Stream
        if address.path is not None:
            stream = await trio.open_unix_socket(address.path)
        else:
            tcp_stream = await trio.open_tcp_stream(address.host, address.port)
            enable_keepalive(tcp_stream.socket)
            stream = tcp_stream
        try:
            if address.ssl_context is not None:
                stream = await self._start_tls(stream, address.ssl_context)
            optional: list[tuple[CommandArg, ...]] = []
            if self.announce:
                optional = [
                    ("CLIENT", "SETINFO", "lib-name", LIB_NAME),
                    ("CLIENT", "SETINFO", "lib-ver", lib_version()),
                ]
            required = address.handshake_commands()
            if required or optional:
                accepted = await _run_handshake(
                    stream, required, optional, use_hiredis=self.use_hiredis
                )
                self.announce = self.announce and accepted
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        return stream

    async def _start_tls(
        self, stream: trio.abc.Stream, context: ssl.SSLContext
    ) -> trio.SSLStream[trio.abc.Stream]:
        tls_stream = trio.SSLStream(stream, context, server_hostname=self.address.host)
        try:
            await tls_stream.do_handshake()
        except trio.BrokenResourceError as exc:
            if not isinstance(exc.__cause__, ssl.SSLCertVerificationError):
                raise
            failure = exc.__cause__
        else:
            return tls_stream
        # Raised on its own (outside the except block), so that it is not
        # chained back to the BrokenResourceError that carries it.
        self.certificate_failure = failure
        raise failure


async def _run_handshake(
    stream: trio.abc.Stream,
    required: list[tuple[CommandArg, ...]],
    optional: list[tuple[CommandArg, ...]],
    *,
    use_hiredis: bool,
) -> bool:
    """Run ``required`` then ``optional`` commands in one write; True if no optional one failed.

    Raises:
        HandshakeRefused: a required command failed.
    """
    commands = required + optional
    await stream.send_all(b"".join(pack_command(command) for command in commands))
    reader = new_reply_reader(use_hiredis=use_hiredis)
    accepted = True
    for position, command in enumerate(commands):
        while (reply := reader.gets()) is NOT_ENOUGH_DATA:
            data = await stream.receive_some()
            if not data:
                raise ConnectionResetError("redis closed the connection during the handshake")
            reader.feed(data)
        if isinstance(reply, Exception):
            if position < len(required):
                raise HandshakeRefused(f"{command[0]!s} failed: {reply}") from reply
            accepted = False
    return accepted
