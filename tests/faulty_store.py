"""A store wrapper that misbehaves on a seeded random plan, for the fault-injection suite.

``FaultyStore(inner, seed=...)`` wraps any ``StorageBackend``.  Each call
draws one :class:`Fault` from its own ``random.Random(seed)``:

* reads (``get``, ``get_many``): answer normally, raise, hang until
  cancelled, return garbage bytes, return the stored value as ``str``
  (allowed by the protocol: it must work), or return a wrong type (an
  ``int``, a ``dict``, a list of the wrong length);
* writes (``set``, ``set_many``, ``delete``): answer normally, raise, hang,
  store garbage bytes instead of the value, or (``set_many``) store part of
  the items and then raise.

It records, per key, the bytes of the last write that landed intact, or that
the last write to the key was faulted (``last_write``), so a durability check
knows which keys must read back what.  ``enabled = False`` makes it a plain
pass-through.
"""

from __future__ import annotations

import enum
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import trio


class StoreFault(Exception):
    """What a faulty store raises."""


class Fault(enum.Enum):
    OK = "ok"
    RAISE = "raise"
    HANG = "hang"
    GARBAGE = "garbage"
    TEXT = "text"
    WRONG_TYPE = "wrong type"
    PARTIAL = "partial"


READ_FAULTS = (Fault.RAISE, Fault.HANG, Fault.GARBAGE, Fault.TEXT, Fault.WRONG_TYPE)
WRITE_FAULTS = (Fault.RAISE, Fault.HANG, Fault.GARBAGE, Fault.PARTIAL)

FAULTED = None
"""``last_write[key]`` when the key's last write did not land intact."""


class FaultyStore:
    """Wraps a store; each call misbehaves with probability ``rate``, chosen by a seeded plan.

    Attributes:
        enabled: while false, every call goes through untouched.
        faults: how many calls got each fault.
        last_write: per full store key, the bytes its last write stored intact, or
            ``FAULTED`` (``None``) if that write raised, hung, stored garbage or was cut
            short; deletes that landed record ``b""``.
    """

    def __init__(self, inner: Any, *, seed: int, rate: float = 0.3) -> None:
        self.inner = inner
        self.rate = rate
        self.enabled = True
        self.faults: Counter[Fault] = Counter()
        self.last_write: dict[str, bytes | None] = {}
        self._plan = random.Random(seed)

    def _draw(self, choices: tuple[Fault, ...]) -> Fault:
        if not self.enabled or self._plan.random() >= self.rate:
            return Fault.OK
        fault = self._plan.choice(choices)
        self.faults[fault] += 1
        return fault

    def _garbage(self) -> bytes:
        return self._plan.randbytes(self._plan.randint(0, 40))

    async def _misbehave(self, fault: Fault, operation: str) -> None:
        """Raise or hang for the faults that do; return for the others."""
        if fault is Fault.RAISE:
            await trio.lowlevel.checkpoint()
            raise StoreFault(f"{operation} failed (injected)")
        if fault is Fault.HANG:
            await trio.sleep_forever()

    # -- reads -------------------------------------------------------------------------------

    async def get(self, key: str) -> Any:
        """The value, or a fault."""
        fault = self._draw(READ_FAULTS)
        await self._misbehave(fault, "get")
        if fault is Fault.GARBAGE:
            return self._garbage()
        if fault is Fault.WRONG_TYPE:
            return 42
        value = await self.inner.get(key)
        return _text(value) if fault is Fault.TEXT else value

    async def get_many(self, keys: Sequence[str]) -> Any:
        fault = self._draw(READ_FAULTS)
        await self._misbehave(fault, "get_many")
        if fault is Fault.GARBAGE:
            return [self._garbage() for _ in keys]
        if fault is Fault.WRONG_TYPE:
            return self._plan.choice([{key: b"" for key in keys}, [None] * (len(keys) + 1), 7])
        values = list(await self.inner.get_many(keys))
        if fault is Fault.TEXT:
            return [
                v.decode("utf-8", errors="replace") if isinstance(v, bytes) else v for v in values
            ]
        return values

    # -- writes ------------------------------------------------------------------------------

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        await self.set_many({key: value}, ttl)

    async def set_many(self, items: Mapping[str, bytes], ttl: float | None = None) -> None:
        fault = self._draw(WRITE_FAULTS)
        for key in items:  # until it lands intact, the write counts as faulted
            self.last_write[key] = FAULTED
        await self._misbehave(fault, "set_many")
        if fault is Fault.GARBAGE:
            await self.inner.set_many({key: self._garbage() for key in items}, ttl)
            return
        if fault is Fault.PARTIAL:
            kept = dict(list(items.items())[: len(items) // 2])
            await self.inner.set_many(kept, ttl)
            self.last_write.update(kept)
            raise StoreFault("set_many failed half way (injected)")
        await self.inner.set_many(items, ttl)
        self.last_write.update(items)

    async def delete(self, key: str) -> None:
        fault = self._draw((Fault.RAISE, Fault.HANG))
        self.last_write[key] = FAULTED
        await self._misbehave(fault, "delete")
        await self.inner.delete(key)
        self.last_write[key] = b""

    # -- the rest goes through -----------------------------------------------------------------

    async def delete_prefix(self, prefix: str) -> int:
        count: int = await self.inner.delete_prefix(prefix)
        return count

    async def aclose(self) -> None:
        await self.inner.aclose()


def _text(value: Any) -> Any:
    """A stored value as ``str`` (what a text-only store returns); ``None`` stays."""
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value
