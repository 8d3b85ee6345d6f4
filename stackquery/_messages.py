"""What a key's actor receives: its messages, and what it needs of an observer.

Messages are frozen values sent with ``send_nowait`` (``Wake``) or asked
(every other kind carries the :class:`~actors.Reply` its sender waits on).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import attrs

from actors import Reply

from . import _state
from ._entry import StoredEntry
from ._options import QueryOptions


class Observer(Protocol):
    """What the actor needs of an observer (a :class:`~stackquery._observer.QueryObserver`)."""

    @property
    def options(self) -> QueryOptions[Any]: ...

    def on_state(self, state: _state.QueryState[Any]) -> None:
        """Take the key's new state; never raises."""

    def on_close(self) -> None:
        """The client closed: end the observer's update streams; never raises."""


@attrs.frozen
class Wake:
    """Look at pending work again (a fetch was claimed, an observer came or went)."""


WAKE = Wake()


@attrs.frozen
class Invalidate:
    """Mark the data invalidated; refetch if observed and ``refetch``; write L2 if ``persist``."""

    refetch: bool
    reply: Reply[None]
    persist: bool = True
    """False for another process's invalidation: L2 is that process's to write."""


@attrs.frozen
class ApplyEntry:
    """Take the data another process wrote to L2, unless L1 holds newer."""

    entry: StoredEntry
    reply: Reply[None]


@attrs.frozen
class SetData:
    """Replace the data with ``updater(old)`` (or a value), as of ``updated_at`` (wall)."""

    updater: Callable[[Any], Any]
    updated_at: float | None
    reply: Reply[Any]


@attrs.frozen
class Cancel:
    """Cancel the fetch in flight; put the previous state back if ``revert``."""

    revert: bool
    reply: Reply[None]


@attrs.frozen
class Remove:
    """Cancel any fetch and drop the key from L1 (and L2)."""

    reply: Reply[None]
    delete_l2: bool = True


@attrs.frozen
class Reset:
    """Cancel any fetch and put the key back to its initial state."""

    reply: Reply[None]


Message = Wake | Invalidate | ApplyEntry | SetData | Cancel | Remove | Reset


__all__ = [
    "WAKE",
    "ApplyEntry",
    "Cancel",
    "Invalidate",
    "Message",
    "Observer",
    "Remove",
    "Reset",
    "SetData",
    "Wake",
]
