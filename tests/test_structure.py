"""The shape of the code: one-way dependencies, no import cycles, no reaching into privates.

These read the source (``ast``), not the running program, so an import made
only for type checking or inside a function counts as much as any other.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("stackquery", "actors", "backends")


def _modules(package: str) -> dict[str, Path]:
    found = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = {name: path for package in PACKAGES for name, path in _modules(package).items()}


def _imports(module: str, path: Path) -> Iterator[str]:
    """Every module ``module`` imports, wherever the import stands."""
    is_package = path.name == "__init__.py"
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            yield target
            for alias in node.names:  # `from . import _state` imports a module
                if f"{target}.{alias.name}" in MODULES:
                    yield f"{target}.{alias.name}"


def _graph(package: str) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        if module.split(".")[0] != package:
            continue
        graph[module] = set()
        for target in _imports(module, path):
            # Importing a.b.c runs a/__init__ and a/b/__init__ too.
            parts = target.split(".")
            for i in range(1, len(parts) + 1):
                name = ".".join(parts[:i])
                # A package's own modules run inside its __init__: not an edge back to it.
                ancestor = module.startswith(name + ".")
                inside = name.split(".")[0] == package
                if name in MODULES and name != module and inside and not ancestor:
                    graph[module].add(name)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle in ``graph``, as the list of modules around it, or ``None``."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)) is not None:
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)) is not None:
            return found
    return None


class TestDependencies:
    @pytest.mark.parametrize("package", PACKAGES)
    def test_no_import_cycle_within_a_package(self, package: str) -> None:
        """No module imports itself through others, counting TYPE_CHECKING and lazy imports."""
        assert _cycle(_graph(package)) is None

    @pytest.mark.parametrize("package", ["actors", "backends"])
    def test_actors_and_backends_never_import_stackquery(self, package: str) -> None:
        """Dependencies point one way: stackquery uses actors and backends, never the reverse."""
        offenders = [
            f"{module} imports {target}"
            for module, path in MODULES.items()
            if module.split(".")[0] == package
            for target in _imports(module, path)
            if target.split(".")[0] == "stackquery"
        ]
        assert offenders == []

    def test_actors_never_import_backends(self) -> None:
        """The actor runtime knows nothing about storage."""
        offenders = [
            f"{module} imports {target}"
            for module, path in MODULES.items()
            if module.split(".")[0] == "actors"
            for target in _imports(module, path)
            if target.split(".")[0] == "backends"
        ]
        assert offenders == []

    def test_the_cycle_finder_finds_a_cycle(self) -> None:
        """The check above can fail: a two-module loop is reported with its path."""
        assert _cycle({"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]
        assert _cycle({"a": {"b"}, "b": set()}) is None


def _private_reaches(path: Path) -> Iterator[str]:
    """``x._name`` where ``x`` is not ``self`` or ``cls`` (dunders and ``_`` alone excepted)."""
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        attr = node.attr
        if not attr.startswith("_") or attr.startswith("__") or attr == "_":
            continue
        owner = node.value
        if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
            continue
        yield f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}"


FRIENDS = {
    # EventHub and EventStream are one object in two halves, as trio's
    # channel state and its handles are, and live in one module.
    ("stackquery/_events.py", "stream._close"),
    ("stackquery/_events.py", "stream._put"),
    # Merging another histogram of the same class.
    ("stackquery/metrics/_histogram.py", "other._buckets"),
    ("stackquery/metrics/_histogram.py", "other._zeros"),
    # A standard-library type named in an annotation; namedtuple's public method.
    ("stackquery/cli/_commands.py", "argparse._MutuallyExclusiveGroup"),
    ("stackquery/cli/_redis_invalidate.py", "argparse._MutuallyExclusiveGroup"),
    ("stackquery/cli/_stores.py", "parts._replace"),
    # A Subscription and the function that opens it, in one module.
    ("backends/_redis_subscription.py", "subscription._start"),
    ("backends/_redis_subscription.py", "subscription._track"),
    # redis-py's parser reads from `_buffer` and has no public way to be given one.
    ("backends/_resp.py", "self._parser._buffer"),
}
"""Reaches into another object's privates that are allowed, each for the reason above it."""


def _where_and_what(reach: str) -> tuple[str, str]:
    where, what = reach.split(": ", 1)
    return where.rsplit(":", 1)[0], what


class TestEncapsulation:
    def test_nothing_reaches_into_the_client_outside_its_module(self) -> None:
        """No ``client._x`` or ``self._client._x`` outside ``stackquery/_client.py``."""
        offenders = [
            reach
            for module, path in MODULES.items()
            if module.startswith("stackquery") and module != "stackquery._client"
            for reach in _private_reaches(path)
            if "client._" in reach.split(": ", 1)[1]
        ]
        assert offenders == []

    @pytest.mark.parametrize("package", PACKAGES)
    def test_no_module_touches_another_objects_private_attributes(self, package: str) -> None:
        """Objects are used through their public names only (``self._x`` is the owner's own)."""
        offenders = [
            reach
            for module, path in MODULES.items()
            if module.split(".")[0] == package
            for reach in _private_reaches(path)
            if _where_and_what(reach) not in FRIENDS
        ]
        assert offenders == []
