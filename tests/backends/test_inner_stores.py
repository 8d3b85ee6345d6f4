"""Wrappers name the stores they wrap (``inner_stores``); ``ops.stores_within`` walks them."""

from __future__ import annotations

import stackquery as sq
from backends import ChainStorage, InstrumentedStorage, MemoryStorage, ops


class TestStoresWithin:
    def test_a_plain_store_is_alone(self) -> None:
        """A store that wraps nothing is the only store within itself."""
        store = MemoryStorage()
        assert ops.stores_within(store) == [store]

    def test_wrappers_are_walked_outermost_first_depth_first(self) -> None:
        """Instrumented around a chain of two: the wrapper, the chain, then its levels in order."""
        fast, slow = MemoryStorage(), MemoryStorage()
        chain = ChainStorage(fast, slow)
        outer = InstrumentedStorage(chain, sq.InMemoryMetrics())
        assert outer.inner_stores == (chain,)
        assert chain.inner_stores == (fast, slow)
        assert ops.stores_within(outer) == [outer, chain, fast, slow]

    def test_a_store_reached_twice_is_listed_once(self) -> None:
        """The same store at two levels (or a wrapper that names itself) does not loop."""
        store = MemoryStorage()

        class Loop:
            def __init__(self) -> None:
                self.inner_stores = (store, self, store)

        loop = Loop()
        assert ops.stores_within(loop) == [loop, store]
