"""Specification of the ``actors`` package surface and its dependencies."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import attrs
import pytest

import actors

PACKAGE_DIR = Path(actors.__file__).parent
SOURCES = sorted(PACKAGE_DIR.glob("*.py"))
PUBLIC_NAMES = [
    "Actor",
    "Mailbox",
    "MailboxClosed",
    "MailboxFull",
    "MailboxStatistics",
    "Registry",
    "RegistryStatistics",
    "Reply",
    "ReplyAlreadySet",
    "RestartIntensity",
    "Supervisor",
    "SupervisorStatistics",
    "ask",
]


def imported_top_level_modules(source: Path) -> set[str]:
    """Return the top-level names of the absolute imports in ``source``."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"), str(source))):
        if isinstance(node, ast.Import):
            names.update(alias.name.partition(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.partition(".")[0])
    return names


class TestExports:
    def test_exports(self) -> None:
        """actors.__all__ lists exactly the public names, once each."""
        assert actors.__all__ == PUBLIC_NAMES

    def test_no_public_name_is_left_out_of_all(self) -> None:
        """Every public attribute of the package is in __all__."""
        assert {name for name in dir(actors) if not name.startswith("_")} == set(PUBLIC_NAMES)

    @pytest.mark.parametrize("name", PUBLIC_NAMES)
    def test_each_export_is_importable_from_the_package(self, name: str) -> None:
        """`from actors import <name>` works and gives the object defined in a private module."""
        namespace: dict[str, object] = {}
        exec(f"from actors import {name}", namespace)
        exported = namespace[name]
        assert exported is getattr(actors, name)
        module = getattr(exported, "__module__", "")
        assert module.startswith("actors._")
        assert getattr(importlib.import_module(module), name) is exported

    @pytest.mark.parametrize(
        "snapshot",
        [
            actors.MailboxStatistics(queued=0, capacity=1, senders_waiting=0, delivered=0),
            actors.SupervisorStatistics(running=0, started=0, restarts=0),
            actors.RegistryStatistics(active=0, activations=0, passivations=0),
            actors.RestartIntensity(),
        ],
        ids=lambda snapshot: type(snapshot).__name__,
    )
    def test_value_objects_are_frozen(self, snapshot: object) -> None:
        """Statistics and the restart intensity are frozen attrs instances."""
        field = attrs.fields(type(snapshot))[0].name  # type: ignore[arg-type]
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            setattr(snapshot, field, 1)

    def test_package_is_typed(self) -> None:
        """The package ships a py.typed marker."""
        assert (PACKAGE_DIR / "py.typed").is_file()


class TestDependencies:
    def test_sources_are_found(self) -> None:
        """The scan below covers the package's modules."""
        assert [path.name for path in SOURCES] == [
            "__init__.py",
            "_mailbox.py",
            "_registry.py",
            "_reply.py",
            "_supervisor.py",
        ]

    @pytest.mark.parametrize("source", SOURCES, ids=[path.name for path in SOURCES])
    def test_actors_never_imports_stackquery(self, source: Path) -> None:
        """No module of actors imports stackquery (or backends) in any form."""
        assert imported_top_level_modules(source).isdisjoint({"stackquery", "backends"})

    @pytest.mark.parametrize("source", SOURCES, ids=[path.name for path in SOURCES])
    def test_actors_depends_on_trio_attrs_and_the_standard_library_only(self, source: Path) -> None:
        """actors imports trio (and outcome, trio's wake-up values), attrs and the stdlib only."""
        third_party = imported_top_level_modules(source) - set(sys.stdlib_module_names)
        assert third_party <= {"trio", "outcome", "attrs"}

    def test_importing_actors_loads_no_stackquery_module(self) -> None:
        """A fresh interpreter that imports actors has no stackquery or backends module loaded."""
        code = (
            "import sys, actors\n"
            "print(sorted(m for m in sys.modules"
            " if m.partition('.')[0] in ('stackquery', 'backends')))"
        )
        result = subprocess.run(
            [sys.executable, "-c", code],
            cwd=PACKAGE_DIR.parent,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        assert result.stdout == "[]\n"
