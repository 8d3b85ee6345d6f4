"""Importing stackquery changes nothing outside it (DESIGN.md, failure rules)."""

from __future__ import annotations

from tests.fresh_interpreter import UNTOUCHED_ASYNCIO, after


class TestImport:
    def test_loads_no_optional_module(self) -> None:
        """`import stackquery` loads neither redis-py, trio-asyncio nor a cloud or metrics SDK."""
        assert after("import stackquery")["loaded"] == []

    def test_loads_no_module_it_needs_only_later(self) -> None:
        """`import stackquery` loads no store, attach endpoint or fleet it does not use yet."""
        watched = (
            "importlib.metadata",
            "email",
            "backends._sqlite",
            "backends._file",
            "stackquery.admin._server",
            "stackquery.fleet._fleet",
        )
        assert after("import stackquery", watched)["loaded"] == []

    def test_a_lazily_imported_store_is_there_when_named(self) -> None:
        """sq.SQLiteStorage and backends.FileStorage import their module when first named."""
        code = "import stackquery as sq, backends; sq.SQLiteStorage; backends.FileStorage"
        watched = ("backends._sqlite", "backends._file")
        assert after(code, watched)["loaded"] == ["backends._file", "backends._sqlite"]

    def test_leaves_asyncio_alone(self) -> None:
        """After `import stackquery`, asyncio keeps its default policy and runs its own loop."""
        assert after("import stackquery")["asyncio"] == UNTOUCHED_ASYNCIO
