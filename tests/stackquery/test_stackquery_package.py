"""The stackquery package's public surface and the direction of its dependencies."""

from __future__ import annotations

import ast
import pathlib

import stackquery as sq

ROOT = pathlib.Path(__file__).resolve().parents[2]


class TestExports:
    def test_every_name_in_all_is_importable(self) -> None:
        """Each name in stackquery.__all__ is an attribute of the package."""
        missing = [name for name in sq.__all__ if not hasattr(sq, name)]
        assert missing == []

    def test_all_has_no_duplicates(self) -> None:
        """__all__ lists each public name once."""
        assert len(sq.__all__) == len(set(sq.__all__))

    def test_the_design_contract_names_are_exported(self) -> None:
        """The names DESIGN.md promises are importable from stackquery."""
        promised = {
            "open_query_client", "QueryClient", "QueryClientConfig", "QueryOptions",
            "QueryState", "QueryObserver", "MutationOptions", "cache", "bg", "serializers",
            "InMemoryMetrics", "MemoryStorage", "FileStorage", "SQLiteStorage",
            "RedisStorage", "ChainStorage", "InstrumentedStorage", "S3Storage", "GCSStorage",
            "StorageBackend", "pack_entry", "unpack_entry",
        }  # fmt: skip
        assert promised - set(sq.__all__) == set()


class TestDependencies:
    def test_actors_and_backends_never_import_stackquery(self) -> None:
        """actors/ and backends/ depend on nothing of stackquery (the arrow points one way)."""
        offenders = []
        for package in ("actors", "backends"):
            for path in sorted((ROOT / package).glob("*.py")):
                tree = ast.parse(path.read_text(encoding="utf-8"))
                for node in ast.walk(tree):
                    names: list[str] = []
                    if isinstance(node, ast.Import):
                        names = [alias.name for alias in node.names]
                    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                        names = [node.module]
                    if any(n == "stackquery" or n.startswith("stackquery.") for n in names):
                        offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
        assert offenders == []
