"""Redis Cluster's key space: which slot a command touches, and who serves each slot.

Pure functions and frozen values, no I/O: :mod:`backends._redis_cluster` asks
the servers and routes; this module reads their answers (``CLUSTER SHARDS``,
``CLUSTER SLOTS``), which come from the network and are checked as such.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final

import attrs

from ._resp import CommandArg, RedisReply

SLOTS: Final = 16384
"""Redis Cluster's hash slots."""

NodeAddress = tuple[str, int]
"""A node as ``(host, port)``."""

# Commands whose every argument after the name is a key.
_ALL_KEYS: Final = frozenset({"MGET", "DEL", "UNLINK", "EXISTS", "TOUCH", "WATCH"})
# Scripts and functions: ``EVAL script numkeys key... arg...``.
_NUMKEYS_AT_2: Final = frozenset({"EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO", "FCALL", "FCALL_RO"})
# Commands that name no key: they may run on any node.
_KEYLESS: Final = frozenset({
    "PING", "ECHO", "PUBLISH", "PUBSUB", "INFO", "CLUSTER", "SCRIPT", "FUNCTION", "TIME",
    "COMMAND", "CONFIG", "DBSIZE", "SCAN", "RANDOMKEY", "LASTSAVE", "MEMORY", "SLOWLOG",
    "LATENCY", "CLIENT", "ROLE", "LOLWUT", "HELLO", "WAIT",
})  # fmt: skip


class CrossSlotError(ValueError):
    """A command names keys in different hash slots: no single node can run it.

    Attributes:
        command: the command's name, upper case.
    """

    def __init__(self, command: str) -> None:
        super().__init__(
            f"{command} names keys in different hash slots; run one command per slot, "
            "or give the keys one hash tag ({tag})"
        )
        self.command = command


def key_slot(key: CommandArg) -> int:
    """The hash slot of ``key`` (honouring a ``{hash tag}``), as redis-py computes it."""
    global _crc_key_slot
    if _crc_key_slot is None:
        # Imported on first use: importing redis-py costs ~150 ms, which a
        # program that never talks to a cluster should not pay.
        from redis.crc import key_slot as crc_key_slot

        _crc_key_slot = crc_key_slot
    return _crc_key_slot(key if isinstance(key, bytes) else _as_bytes(key))


_crc_key_slot: Callable[[bytes], int] | None = None


def command_keys(name: str, args: Sequence[CommandArg]) -> Sequence[CommandArg]:
    """The keys ``args`` (a whole command, ``name`` its upper-cased name) touches.

    Empty for a command that names no key.  For a command not known here the
    first argument is taken as its key, which is right for every single-key
    command (``GET``, ``SET``, ``PTTL``, ``HSET`` ...).
    """
    if name in _KEYLESS or len(args) < 2:
        return ()
    if name in _ALL_KEYS:
        return args[1:]
    if name in _NUMKEYS_AT_2:
        count = _int(args[2]) if len(args) > 2 else 0
        return args[3 : 3 + max(0, count)]
    if name == "MSET" or name == "MSETNX":
        return args[1::2]
    return args[1:2]


def command_slot(name: str, args: Sequence[CommandArg]) -> int | None:
    """The one slot ``args`` touches, or ``None`` when it names no key.

    Raises:
        CrossSlotError: its keys are in different slots.
    """
    keys = command_keys(name, args)
    if not keys:
        return None
    slot = key_slot(keys[0])
    for key in keys[1:]:
        if key_slot(key) != slot:
            raise CrossSlotError(name)
    return slot


@attrs.frozen
class Shard:
    """One master, its replicas, and the slots it serves."""

    primary: NodeAddress
    replicas: tuple[NodeAddress, ...]
    ranges: tuple[tuple[int, int], ...]
    """Inclusive ``(first, last)`` slot ranges."""


@attrs.frozen
class SlotMap:
    """Who serves each slot: the cluster as one node saw it."""

    shards: tuple[Shard, ...]
    owners: tuple[NodeAddress | None, ...] = attrs.field(repr=False)
    """The master of each of the 16384 slots (``None``: nobody serves it)."""

    @classmethod
    def from_shards(cls, shards: Sequence[Shard]) -> SlotMap:
        """Build the map from its shards (a slot claimed twice goes to the last claim)."""
        owners: list[NodeAddress | None] = [None] * SLOTS
        for shard in shards:
            for first, last in shard.ranges:
                owners[first : last + 1] = [shard.primary] * (last - first + 1)
        return cls(tuple(shards), tuple(owners))

    @property
    def primaries(self) -> tuple[NodeAddress, ...]:
        """Every master that serves at least one slot, in shard order."""
        return tuple(shard.primary for shard in self.shards if shard.ranges)

    @property
    def nodes(self) -> tuple[NodeAddress, ...]:
        """Every node known: masters first, then replicas."""
        replicas = [replica for shard in self.shards for replica in shard.replicas]
        return tuple(dict.fromkeys([*self.primaries, *replicas]))

    @property
    def complete(self) -> bool:
        """True when every slot has a master."""
        return None not in self.owners

    def moved(self, slot: int, node: NodeAddress) -> SlotMap:
        """This map with ``slot`` served by ``node`` (what a ``MOVED`` reply says)."""
        owners = list(self.owners)
        owners[slot] = node
        return attrs.evolve(self, owners=tuple(owners))


class MalformedTopologyError(ValueError):
    """A node's ``CLUSTER SHARDS`` / ``CLUSTER SLOTS`` reply could not be read."""


def parse_shards(reply: RedisReply, *, default_host: str) -> SlotMap:
    """Read a ``CLUSTER SHARDS`` reply (Redis 7.0+) into a :class:`SlotMap`.

    Nodes whose ``health`` is ``fail`` are left out.  A replica ``loading``
    is kept: Redis 7.0 says so of every replica whose master took no write
    yet, and it serves pub/sub all the same.  An ``ip`` of ``""`` or ``?``
    means the node we asked (``default_host``).

    Raises:
        MalformedTopologyError: the reply is not a list of shards as documented.
    """
    if not isinstance(reply, list):
        raise MalformedTopologyError(f"CLUSTER SHARDS: not a list: {reply!r:.100}")
    shards: list[Shard] = []
    for raw in reply:
        fields = _pairs(raw, "shard")
        slots = fields.get("slots")
        nodes = fields.get("nodes")
        if not isinstance(slots, list) or not isinstance(nodes, list) or len(slots) % 2:
            raise MalformedTopologyError(f"CLUSTER SHARDS: bad shard {raw!r:.200}")
        ranges = tuple(_slot_range(slots[i], slots[i + 1]) for i in range(0, len(slots), 2))
        primary: NodeAddress | None = None
        replicas: list[NodeAddress] = []
        for raw_node in nodes:
            node = _pairs(raw_node, "node")
            if node.get("health") == b"fail":
                continue
            address = _node_address(node, default_host)
            if node.get("role") == b"master":
                primary = address
            else:
                replicas.append(address)
        if primary is not None:
            shards.append(Shard(primary, tuple(replicas), ranges))
    return SlotMap.from_shards(shards)


def parse_slots(reply: RedisReply, *, default_host: str) -> SlotMap:
    """Read a ``CLUSTER SLOTS`` reply into a :class:`SlotMap` (one shard per master).

    Raises:
        MalformedTopologyError: the reply is not a list of slot ranges as documented.
    """
    if not isinstance(reply, list):
        raise MalformedTopologyError(f"CLUSTER SLOTS: not a list: {reply!r:.100}")
    by_primary: dict[NodeAddress, tuple[list[tuple[int, int]], list[NodeAddress]]] = {}
    for entry in reply:
        if not isinstance(entry, list) or len(entry) < 3:
            raise MalformedTopologyError(f"CLUSTER SLOTS: bad entry {entry!r:.200}")
        first, last, *nodes = entry
        addresses = [_slots_node(node, default_host) for node in nodes]
        ranges, replicas = by_primary.setdefault(addresses[0], ([], []))
        ranges.append(_slot_range(first, last))
        replicas.extend(address for address in addresses[1:] if address not in replicas)
    return SlotMap.from_shards(
        [Shard(primary, tuple(replicas), tuple(ranges))
         for primary, (ranges, replicas) in by_primary.items()]
    )  # fmt: skip


def parse_redirect(message: str) -> tuple[int, NodeAddress] | None:
    """``(slot, (host, port))`` of a ``MOVED``/``ASK`` error's text (``3999 127.0.0.1:6381``).

    Returns ``None`` when the text does not read as one.
    """
    parts = message.split()
    if len(parts) < 2:
        return None
    slot_text, address = parts[-2], parts[-1]
    host, _, port_text = address.rpartition(":")
    if not (slot_text.isdigit() and port_text.isdigit() and host):
        return None
    slot, port = int(slot_text), int(port_text)
    if slot >= SLOTS or not 0 < port < 65536:
        return None
    return slot, (host.strip("[]"), port)


def _pairs(raw: RedisReply, what: str) -> dict[str, RedisReply]:
    if not isinstance(raw, list) or len(raw) % 2:
        raise MalformedTopologyError(f"CLUSTER SHARDS: bad {what} {raw!r:.200}")
    fields: dict[str, RedisReply] = {}
    for name, value in zip(raw[::2], raw[1::2], strict=True):
        if not isinstance(name, bytes):
            raise MalformedTopologyError(f"CLUSTER SHARDS: bad {what} field {name!r:.50}")
        fields[name.decode("ascii", "replace")] = value
    return fields


def _node_address(node: dict[str, RedisReply], default_host: str) -> NodeAddress:
    port = node.get("port", node.get("tls-port"))
    host = node.get("endpoint")
    if not isinstance(host, bytes) or host in (b"", b"?"):
        host = node.get("ip")
    return _address(host, port, default_host)


def _slots_node(node: RedisReply, default_host: str) -> NodeAddress:
    if not isinstance(node, list) or len(node) < 2:
        raise MalformedTopologyError(f"CLUSTER SLOTS: bad node {node!r:.100}")
    return _address(node[0], node[1], default_host)


def _address(host: RedisReply, port: RedisReply, default_host: str) -> NodeAddress:
    if not isinstance(port, int) or not 0 < port < 65536:
        raise MalformedTopologyError(f"bad node port {port!r:.50}")
    if host is None or host in (b"", b"?"):
        return default_host, port
    if not isinstance(host, bytes):
        raise MalformedTopologyError(f"bad node host {host!r:.50}")
    return host.decode("utf-8", "replace"), port


def _slot_range(first: RedisReply, last: RedisReply) -> tuple[int, int]:
    if not (isinstance(first, int) and isinstance(last, int) and 0 <= first <= last < SLOTS):
        raise MalformedTopologyError(f"bad slot range {first!r:.20}-{last!r:.20}")
    return first, last


def _as_bytes(arg: CommandArg) -> bytes:
    if isinstance(arg, bytes):
        return arg
    if isinstance(arg, str):
        return arg.encode()
    if isinstance(arg, bytearray | memoryview):
        return bytes(arg)
    return str(arg).encode()


def _int(arg: CommandArg) -> int:
    try:
        return int(_as_bytes(arg))
    except ValueError:
        return 0
