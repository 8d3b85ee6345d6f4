"""The typed JSON serializer: ``serializers.json(types=[...])``.

The typed serializer writes values as plain JSON too, so that an entry stays
text a person (and ``stackquery inspect``) can read; what JSON cannot say is
written as a small tagged object::

    {"__sq__": "User", "v": {"id": 42, "joined": {"__sq__": "sq:date", "v": "2024-05-01"}}}

The tag names a *registered* type by the name it was registered under (or
one of the standard types, whose names start with ``sq:``), never a module
or class path: an entry read from a shared store is untrusted, and decoding
it may only build types this process chose.  An entry naming a type this
process did not register is a corrupt entry (a counted miss), never an
import.  A user dict that holds the tag key itself is escaped
(``{"__sq__": "sq:dict", "v": {...}}``), so any dict round-trips.  When a
value holds nothing to tag, its JSON is exactly the plain serializer's, and
the reader knows it from the top of the value alone (a tagged value is
always a tag object at the top), so plain values decode at orjson's speed.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import decimal
import enum
import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final, final

import attrs
import orjson

from ._core import (
    _JSON_OPTIONS,
    DeserializationError,
    SerializationError,
    _json_error,
    _type_name,
    check_finite,
)

TAG: Final = "__sq__"
"""The key of a tagged object: ``{TAG: type name, "v": encoded value}``."""
_VALUE: Final = "v"
_TREE: Final = "sq:tree"
"""Wraps a container that holds tagged values, so the reader sees a tag at the top."""
_DICT: Final = "sq:dict"
"""A user dict holding the tag key (escaped so it is not read as a tag)."""
_RESERVED_PREFIX: Final = "sq:"

_STANDARD: Final[Mapping[type, tuple[str, Callable[[Any], str]]]] = {
    _dt.datetime: ("sq:datetime", _dt.datetime.isoformat),
    _dt.date: ("sq:date", _dt.date.isoformat),
    uuid.UUID: ("sq:uuid", str),
    decimal.Decimal: ("sq:decimal", str),
}
"""The standard types always round-tripped, by exact type: name and how to write one."""

_UUID_TEXT: Final = re.compile(rb"-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-")
"""The middle of a UUID as orjson writes one (lowercase, hyphenated)."""

_JSON_BASES: Final = (dict, list, tuple, str, int, float)
"""Plain JSON types; a subclass that is no enum is written as its base."""

_PARSE: Final[Mapping[str, Callable[[str], Any]]] = {
    "sq:datetime": _dt.datetime.fromisoformat,
    "sq:date": _dt.date.fromisoformat,
    "sq:uuid": uuid.UUID,
    "sq:decimal": decimal.Decimal,
}


@attrs.frozen
class _Registered:
    """A registered type: its name, kind and (for attrs classes and dataclasses) its fields."""

    name: str
    cls: type
    kind: str
    """``"enum"`` or ``"fields"``."""
    fields: tuple[tuple[str, str], ...] = ()
    """(attribute, ``__init__`` argument) of each field set by ``__init__``."""


def _registration(name: str | None, cls: object) -> _Registered:
    if not isinstance(cls, type):
        raise TypeError(f"types must hold classes, got {_type_name(cls)}: {cls!r:.100}")
    name = cls.__qualname__ if name is None else name
    if not isinstance(name, str) or not name or name.startswith(_RESERVED_PREFIX):
        raise ValueError(
            f"a type's name must be a non-empty str not starting with {_RESERVED_PREFIX!r}, "
            f"got {name!r:.100} for {cls.__qualname__}"
        )
    if issubclass(cls, enum.Enum):
        return _Registered(name, cls, "enum")
    if attrs.has(cls):
        fields = tuple((f.name, f.alias) for f in attrs.fields(cls) if f.init)
        return _Registered(name, cls, "fields", fields)
    if dataclasses.is_dataclass(cls):
        fields = tuple((f.name, f.name) for f in dataclasses.fields(cls) if f.init)
        return _Registered(name, cls, "fields", fields)
    raise TypeError(f"{cls.__qualname__} is not an attrs class, a dataclass or an Enum")


@final
class TypedJsonSerializer:
    """JSON that brings back the types it was given, and ``datetime``, ``date``, ``UUID``,
    ``Decimal``; made by ``serializers.json(types=[User, Order, Status])``.

    ``types`` lists attrs classes, dataclasses and ``Enum`` classes, each
    written under its ``__qualname__``; a mapping ``{name: class}`` names
    them explicitly (two classes with one qualified name, or a name that
    must not change when a class is renamed).  Instances are written as their
    ``__init__`` fields (recursively, so fields may hold other registered
    values) and built again by calling the class with them; enum members as
    their value.  Exact types only: an unregistered subclass of a registered
    class is refused, not written as its base.  A timezone-aware
    ``datetime`` comes back with a fixed-offset ``tzinfo``.

    Everything the plain serializer round-trips is written as it writes it
    (tuples still come back as lists).  An unregistered attrs class,
    dataclass, enum member or other object raises :class:`SerializationError`
    naming it (a client keeps such a value in L1 and counts it in
    ``serialize_errors``), as do non-finite floats.

    Decoding an entry that names a type not registered here, or whose fields
    the class refuses, raises :class:`DeserializationError`: for a client,
    a corrupt entry, counted and treated as a miss.

    Raises (at construction):
        TypeError: ``types`` is not an iterable of classes (or a mapping of
            names to classes), or holds a class that is not an attrs class,
            a dataclass or an Enum.
        ValueError: two types under one name, one type twice, or a name that
            is empty or starts with ``"sq:"``.
    """

    name: Final = "json+types"

    def __init__(self, types: Iterable[type] | Mapping[str, type] = ()) -> None:
        if isinstance(types, str | bytes) or not isinstance(types, Iterable):
            raise TypeError(
                f"types must be an iterable of classes or a mapping of names to classes, "
                f"got {_type_name(types)}"
            )
        pairs: Iterable[tuple[str | None, Any]] = (
            types.items() if isinstance(types, Mapping) else ((None, cls) for cls in types)
        )
        self._by_name: dict[str, _Registered] = {}
        self._by_type: dict[type, _Registered] = {}
        for name, cls in pairs:
            registered = _registration(name, cls)
            if registered.cls in self._by_type:
                raise ValueError(f"{registered.cls.__qualname__} is registered twice")
            other = self._by_name.get(registered.name)
            if other is not None:
                raise ValueError(
                    f"two types are registered as {registered.name!r}: "
                    f"{_qualified(other.cls)} and {_qualified(registered.cls)}; "
                    "name them with a mapping, types={name: class}"
                )
            self._by_name[registered.name] = registered
            self._by_type[registered.cls] = registered
        self._enum_text = _enum_values_text(self._by_type.values())

    @property
    def types(self) -> dict[str, type]:
        """The registered types by name."""
        return {name: registered.cls for name, registered in self._by_name.items()}

    def dumps(self, value: Any) -> bytes:
        """Encode ``value`` as UTF-8 JSON, tagging what plain JSON would lose.

        Raises:
            SerializationError: an unregistered type, a non-str dict key, a
                non-finite float, an int past 64 bits.
        """
        if type(value) is not dict or TAG not in value:
            # The fast path: orjson refuses (with these options) datetimes,
            # dataclasses, attrs classes, Decimals and every other object, but
            # writes UUIDs and enum members itself; an output without their
            # traces is exactly right.  Anything else is walked.
            try:
                encoded = orjson.dumps(value, option=_JSON_OPTIONS)
            except orjson.JSONEncodeError:
                pass
            else:
                if not self._may_hide_types(encoded):
                    check_finite(value, encoded)
                    return encoded
        tree = self.to_json(value)
        try:
            encoded = orjson.dumps(tree, option=_JSON_OPTIONS)
        except orjson.JSONEncodeError as exc:
            raise _json_error(value, exc, self.name) from None
        check_finite(tree, encoded)
        return encoded

    def loads(self, data: bytes | bytearray | memoryview | str) -> Any:
        """Decode what :meth:`dumps` wrote.

        Raises:
            DeserializationError: not JSON, a malformed tag, a type not
                registered here, or fields its class refuses.
        """
        try:
            tree = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise DeserializationError(
                f"{self.name} cannot decode the data: {exc}", serializer=self.name
            ) from None
        return self.from_json(tree)

    def _may_hide_types(self, encoded: bytes) -> bool:
        """Whether orjson's output may hold a UUID or a registered enum member it wrote itself.

        False positives (a string shaped like a UUID, a number equal to an
        enum's value) only send the value down the walk, which tags exactly.
        """
        if encoded.count(b"-") >= 4 and _UUID_TEXT.search(encoded) is not None:
            return True
        return self._enum_text is not None and self._enum_text.search(encoded) is not None

    # -- the JSON tree ---------------------------------------------------------

    def to_json(self, value: Any) -> Any:
        """``value`` as plain JSON values with tags; ``value`` itself when nothing needs one.

        Raises:
            SerializationError: an unregistered type inside ``value``.
        """
        tree = self._encode(value, value)
        if tree is value or (type(tree) is dict and TAG in tree):
            return tree
        return {TAG: _TREE, _VALUE: tree}

    def from_json(self, tree: Any) -> Any:
        """The value :meth:`to_json` made ``tree`` from.

        Raises:
            DeserializationError: a malformed tag, a type not registered
                here, or fields its class refuses.
        """
        if type(tree) is not dict or TAG not in tree:
            return tree  # nothing tagged anywhere: the writer tags the top when it tags
        try:
            return self._decode(tree)
        except DeserializationError:
            raise
        except RecursionError:
            raise DeserializationError(
                f"{self.name}: the value is nested too deeply", serializer=self.name
            ) from None
        except Exception as exc:
            raise DeserializationError(
                f"{self.name} cannot rebuild the value: {exc!r:.300}", serializer=self.name
            ) from exc

    def _encode(self, value: Any, top: Any) -> Any:
        cls = type(value)
        if cls is str or cls is int or cls is float or cls is bool or value is None:
            return value
        if cls is dict:
            return self._encode_dict(value, top)
        if cls is list or cls is tuple:
            return self._encode_items(value, top)
        registered = self._by_type.get(cls)
        if registered is not None:
            if registered.kind == "enum":
                return {TAG: registered.name, _VALUE: self._encode(value.value, top)}
            return {
                TAG: registered.name,
                _VALUE: {
                    arg: self._encode(getattr(value, attr), top) for attr, arg in registered.fields
                },
            }
        standard = _STANDARD.get(cls)
        if standard is not None:
            name, write = standard
            return {TAG: name, _VALUE: write(value)}
        if isinstance(value, enum.Enum) or not isinstance(value, _JSON_BASES):
            raise self._refused(value, top)
        # A subclass of a plain JSON type (OrderedDict, a str subclass): as its base, as
        # the plain serializer writes it.
        if isinstance(value, dict):
            return self._encode_dict(value, top)
        if isinstance(value, list | tuple):
            return self._encode_items(value, top)
        return value

    def _encode_dict(self, value: dict[Any, Any], top: Any) -> Any:
        changed: dict[Any, Any] | None = None
        for key, item in value.items():
            new = self._encode(item, top)
            if new is not item:
                if changed is None:
                    changed = dict(value)
                changed[key] = new
        if TAG in value:
            return {TAG: _DICT, _VALUE: changed if changed is not None else dict(value)}
        return value if changed is None else changed

    def _encode_items(self, value: list[Any] | tuple[Any, ...], top: Any) -> Any:
        changed: list[Any] | None = None
        for index, item in enumerate(value):
            new = self._encode(item, top)
            if new is not item:
                if changed is None:
                    changed = list(value)
                changed[index] = new
        return value if changed is None else changed

    def _refused(self, value: object, top: object) -> SerializationError:
        what = _qualified(type(value))
        return SerializationError(
            f"{self.name} cannot encode {_type_name(top)} value: {what} is not registered; "
            f"register it with serializers.json(types=[..., {type(value).__qualname__}])",
            serializer=self.name,
            value_type=_type_name(top),
        )

    def _decode(self, tree: Any) -> Any:
        cls = type(tree)
        if cls is list:
            return [self._decode(item) for item in tree]
        if cls is not dict:
            return tree
        if TAG not in tree:
            return {key: self._decode(item) for key, item in tree.items()}
        name = tree[TAG]
        if len(tree) != 2 or _VALUE not in tree or type(name) is not str:
            raise DeserializationError(f"{self.name}: a malformed tag", serializer=self.name)
        inner = tree[_VALUE]
        if name == _TREE:
            return self._decode(inner)
        if name == _DICT:
            if type(inner) is not dict:
                raise DeserializationError(f"{self.name}: a malformed dict", serializer=self.name)
            return {key: self._decode(item) for key, item in inner.items()}
        parse = _PARSE.get(name)
        if parse is not None:
            if type(inner) is not str:
                raise DeserializationError(f"{self.name}: a malformed {name}", serializer=self.name)
            return parse(inner)
        registered = self._by_name.get(name)
        if registered is None:
            raise DeserializationError(
                f"{self.name}: the entry names the type {name!r:.100}, which is not registered",
                serializer=self.name,
            )
        if registered.kind == "enum":
            return registered.cls(self._decode(inner))
        if type(inner) is not dict:
            raise DeserializationError(
                f"{self.name}: malformed fields of {name}", serializer=self.name
            )
        return registered.cls(**{key: self._decode(item) for key, item in inner.items()})

    def __repr__(self) -> str:
        names = ", ".join(self._by_name)
        return f"stackquery.serializers.json(types=[{names}])"


def _enum_values_text(registered: Iterable[_Registered]) -> re.Pattern[bytes] | None:
    """A pattern of every registered enum member's value as orjson writes it, as a JSON value.

    A value is at the top or follows ``[``, ``:`` or ``,``, and is followed
    by ``,``, ``]``, ``}`` or the end: a key (followed by ``:``) never
    matches, nor does a string's inside (a quote in a string is escaped).
    """
    texts: set[bytes] = set()
    for entry in registered:
        if entry.kind != "enum":
            continue
        members: type[enum.Enum] = entry.cls  # an Enum class: kind "enum"
        for member in members:
            try:
                texts.add(orjson.dumps(member.value, option=_JSON_OPTIONS))
            except orjson.JSONEncodeError:
                continue  # orjson cannot write it: such a member always takes the walk
    if not texts:
        return None
    alternatives = b"|".join(re.escape(text) for text in sorted(texts, key=len, reverse=True))
    return re.compile(rb"(?:^|(?<=[\[:,]))(?:" + alternatives + rb")(?=[,\]}]|$)")


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


__all__ = ["TAG", "TypedJsonSerializer"]
