"""The backends package surface: its exports, and that it never imports stackquery."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
from pathlib import Path

import backends
from backends import _protocol

PACKAGE_DIR = Path(backends.__file__).parent

EXPECTED_EXPORTS = {
    "BatchStorageBackend",
    "ChainStorage",
    "FileStorage",
    "GCSStorage",
    "InstrumentedStorage",
    "MemoryStorage",
    "MemoryStorageStatistics",
    "S3Storage",
    "SQLiteStorage",
    "StorageBackend",
    "StorageClosedError",
    "StorageError",
    "StorageMetrics",
    "StorageUnavailableError",
    "StorageUnsupportedError",
    "TTLStorageBackend",
    "map_storage_errors",
    "ops",
}


def imported_top_level_modules(source: str) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules.update(alias.name.partition(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module.partition(".")[0])
    return modules


class TestExports:
    def test_all_names_exist(self) -> None:
        """Every name in __all__ is an attribute of the package."""
        assert [name for name in backends.__all__ if not hasattr(backends, name)] == []

    def test_expected_names_are_exported(self) -> None:
        """The documented public names are all in __all__ (Redis may add more)."""
        assert EXPECTED_EXPORTS - set(backends.__all__) == set()

    def test_all_is_sorted_without_duplicates(self) -> None:
        """__all__ lists each name once, sorted."""
        assert backends.__all__ == sorted(set(backends.__all__))

    def test_public_classes_come_from_private_modules(self) -> None:
        """Each exported class lives in a private module of the package."""
        for name in backends.__all__:
            value = getattr(backends, name)
            if inspect.isclass(value):
                module = value.__module__
                assert module.startswith("backends._"), (name, module)

    def test_stores_have_every_optional_operation(self) -> None:
        """Every store class has the batch and TTL operations of the protocols."""
        members = [
            name
            for protocol in (_protocol.BatchStorageBackend, _protocol.TTLStorageBackend)
            for name, _ in inspect.getmembers(protocol, inspect.isfunction)
            if not name.startswith("_")
        ]
        assert sorted(set(members)) == [
            "aclose",
            "delete",
            "delete_prefix",
            "get",
            "get_many",
            "get_many_with_ttl",
            "get_with_ttl",
            "set",
            "set_many",
        ]
        for cls in (
            backends.MemoryStorage,
            backends.FileStorage,
            backends.SQLiteStorage,
            backends.ChainStorage,
            backends.InstrumentedStorage,
            backends.S3Storage,
            backends.GCSStorage,
        ):
            missing = [
                name for name in members if not inspect.iscoroutinefunction(getattr(cls, name))
            ]
            assert missing == [], cls.__name__


class TestIndependence:
    def test_no_module_imports_stackquery(self) -> None:
        """No module of backends imports stackquery (or actors)."""
        for path in sorted(PACKAGE_DIR.glob("*.py")):
            imported = imported_top_level_modules(path.read_text(encoding="utf-8"))
            assert imported.isdisjoint({"stackquery", "actors"}), path.name

    def test_import_loads_no_cloud_sdk(self) -> None:
        """Importing backends in a fresh interpreter loads neither stackquery nor an SDK."""
        code = (
            "import sys, backends; "
            "print(sorted(m for m in sys.modules "
            "if m.partition('.')[0] in ('stackquery', 'actors', 'boto3', 'botocore', 'google')))"
        )
        result = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            cwd=PACKAGE_DIR.parent,
        )
        assert result.stdout.strip() == "[]"
