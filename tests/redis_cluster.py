"""A throwaway Redis Cluster (masters + replicas) on free loopback ports, for tests and benchmarks.

Each node is a :class:`~tests.redis_server.RedisServer` with ``cluster-enabled
yes`` and its own config file in its temporary directory.  The cluster is
made with ``redis-cli --cluster create`` and is ready once every node reports
``cluster_state:ok`` and agrees on who owns all 16384 slots.  Never the
system Redis: every port is picked by the kernel.
"""

from __future__ import annotations

import socket
import subprocess
import time
from types import TracebackType

from tests.redis_server import RedisServer, RedisServerError, free_loopback_port

REDIS_CLI_BINARY = "/usr/bin/redis-cli"
_READY_TIMEOUT = 20.0
NODE_TIMEOUT_MS = 1000
"""``cluster-node-timeout``: a dead master is failed over about two of these after it died."""


def command(port: int, *args: str | int | bytes, timeout: float = 5.0) -> object:
    """Run one command on 127.0.0.1:``port`` synchronously and return its parsed reply.

    For test set-up and checks only (a plain socket, RESP parsed by redis-py's parser).

    Raises:
        RedisServerError: the node did not answer in time or answered with an error.
    """
    from backends._resp import NOT_ENOUGH_DATA, PythonReplyReader, pack_command

    reader = PythonReplyReader()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
            conn.sendall(pack_command(args))
            while True:
                reply = reader.gets()
                if reply is not NOT_ENOUGH_DATA:
                    break
                data = conn.recv(65536)
                if not data:
                    raise RedisServerError(f"node {port} closed the connection")
                reader.feed(data)
    except OSError as exc:
        raise RedisServerError(f"node {port}: {exc!r}") from exc
    if isinstance(reply, Exception):
        raise RedisServerError(f"node {port}: {' '.join(map(str, args))}: {reply}")
    return reply


def info(port: int, section: str) -> dict[str, str]:
    """``INFO section`` (or ``CLUSTER INFO`` for ``section="cluster-info"``) as a dict."""
    raw = (
        command(port, "CLUSTER", "INFO")
        if section == "cluster-info"
        else command(port, "INFO", section)
    )
    assert isinstance(raw, bytes)
    pairs = (line.split(":", 1) for line in raw.decode().splitlines() if ":" in line)
    return {name: value for name, value in pairs}


def tracking_ids(port: int) -> list[bytes]:
    """The ids of the connections with tracking on (flag ``t``) on the node at ``port``."""
    reply = command(port, "CLIENT", "LIST")
    assert isinstance(reply, bytes)
    fields = [dict(f.split(b"=", 1) for f in line.split()) for line in reply.splitlines()]
    return [f[b"id"] for f in fields if b"t" in f[b"flags"]]


class RedisCluster:
    """``masters`` masters with ``replicas`` replicas each, on loopback.

    Use it as a context manager, or call :meth:`start` and :meth:`stop`.
    """

    def __init__(self, masters: int = 3, replicas: int = 1) -> None:
        self.masters = masters
        self.replicas = replicas
        self.nodes = [
            RedisServer(
                (
                    "--cluster-enabled", "yes",
                    "--cluster-config-file", "nodes.conf",
                    "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
                    # The bus defaults to port + 10000, past 65535 for a high free port.
                    "--cluster-port", str(free_loopback_port()),
                    # A replica with a stale link still stands for election: tests
                    # kill masters right after writing.
                    "--cluster-replica-validity-factor", "0",
                    "--appendonly", "no",
                )
            )
            for _ in range(masters * (1 + replicas))
        ]  # fmt: skip

    @property
    def url(self) -> str:
        """``redis+cluster://`` with every node's address."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)

    @property
    def ports(self) -> list[int]:
        """Every node's port, dead or alive."""
        return [node.port for node in self.nodes]

    def start(self) -> None:
        """Start every node, create the cluster and wait until it is ready.

        Raises:
            RedisServerError: a node did not start, or the cluster did not
                become ready within 20 s.
        """
        try:
            for node in self.nodes:
                node.start()
            if self.masters == 1 and self.replicas == 0:
                command(self.nodes[0].port, "CLUSTER", "ADDSLOTSRANGE", 0, 16383)
            else:
                addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
                subprocess.run(
                    [REDIS_CLI_BINARY, "--cluster", "create", *addresses,
                     "--cluster-replicas", str(self.replicas), "--cluster-yes"],
                    check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=30,
                )  # fmt: skip
            self.wait_ready()
        except BaseException:
            self.stop()
            raise

    def wait_ready(self, timeout: float = _READY_TIMEOUT) -> None:
        """Wait until every live node says ``cluster_state:ok`` and sees ``masters`` masters.

        Raises:
            RedisServerError: not ready within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            try:
                states = [info(port, "cluster-info") for port in self.live_ports()]
                if (
                    all(
                        state.get("cluster_state") == "ok"
                        and state.get("cluster_slots_ok") == "16384"
                        and state.get("cluster_size") == str(self.masters)
                        for state in states
                    )
                    and self._replicas_linked()
                ):
                    return
                last = repr([state.get("cluster_state") for state in states])
            except RedisServerError as exc:
                last = str(exc)
            time.sleep(0.05)
        raise RedisServerError(f"the cluster was not ready within {timeout} s: {last}")

    def _replicas_linked(self) -> bool:
        for port in self.live_ports():
            replication = info(port, "replication")
            if replication.get("role") == "slave" and replication.get("master_link_status") != "up":
                return False
        return True

    def live_ports(self) -> list[int]:
        """Ports of the nodes that run."""
        return [node.port for node in self.nodes if node._process is not None]

    def masters_ports(self) -> list[int]:
        """Ports of the live nodes that are masters now."""
        return [port for port in self.live_ports() if info(port, "replication")["role"] == "master"]

    def node(self, port: int) -> RedisServer:
        """The node listening on ``port``."""
        return next(node for node in self.nodes if node.port == port)

    def replica_of(self, master_port: int) -> int:
        """The port of a live replica of the master on ``master_port``."""
        replication = info(master_port, "replication")
        for name, value in replication.items():
            if name.startswith("slave") and "port=" in value:
                fields = dict(part.split("=", 1) for part in value.split(","))
                return int(fields["port"])
        raise RedisServerError(f"the master on {master_port} has no replica")

    def owner_of(self, slot: int) -> int:
        """The port of the master that serves ``slot`` now (as the first live master sees it)."""
        reply = command(self.masters_ports()[0], "CLUSTER", "SLOTS")
        assert isinstance(reply, list)
        for start, end, master, *_ in reply:
            if start <= slot <= end:
                return int(master[1])
        raise RedisServerError(f"no master serves slot {slot}")

    def stop(self) -> None:
        """Kill every node and remove its directory; idempotent."""
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> RedisCluster:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
