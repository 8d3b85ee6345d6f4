"""The serializer protocol, its errors, and what the JSON serializers share."""

from __future__ import annotations

import importlib
import math
from types import ModuleType
from typing import Any, Final, Protocol, runtime_checkable

import orjson

from .._errors import StackqueryError

#: The longest serializer name, in UTF-8 bytes (the entry frame stores its length in one byte).
MAX_NAME_BYTES: Final = 255


class SerializationError(StackqueryError, TypeError):
    """A value could not be encoded by a serializer.

    Attributes:
        serializer: the name of the serializer that refused the value.
        value_type: the qualified name of the top-level value's type.
    """

    def __init__(self, message: str, *, serializer: str, value_type: str) -> None:
        super().__init__(message)
        self.serializer = serializer
        self.value_type = value_type


class DeserializationError(StackqueryError, ValueError):
    """Bytes could not be decoded by a serializer (corrupt, truncated or foreign).

    Attributes:
        serializer: the name of the serializer that refused the bytes.
    """

    def __init__(self, message: str, *, serializer: str) -> None:
        super().__init__(message)
        self.serializer = serializer


class SignatureError(DeserializationError):
    """A signed payload's signature did not verify; the payload was not decoded."""


@runtime_checkable
class Serializer(Protocol):
    """Turns values into bytes and back.

    ``name`` identifies the encoding; it is written into every L2 entry, so two
    serializers that encode differently must have different names.
    """

    @property
    def name(self) -> str:
        """The id stored in entries written with this serializer."""
        ...

    def dumps(self, value: Any) -> bytes:
        """Encode ``value``; raise :class:`SerializationError` if it cannot."""
        ...

    def loads(self, data: bytes) -> Any:
        """Decode ``data``; raise :class:`DeserializationError` if it cannot."""
        ...


def _type_name(value: object) -> str:
    cls = type(value)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


# datetime and dataclass instances are encoded natively by orjson but come back
# as str / dict: after an L2 round trip the cache would hand out a different
# type than it was given.  "Passing them through" with no ``default`` hook
# turns that silent change into an error at the call that cached them.
_JSON_OPTIONS: Final = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def _json_error(
    value: object, exc: orjson.JSONEncodeError, serializer: str = "json"
) -> SerializationError:
    value_type = _type_name(value)
    return SerializationError(
        f"{serializer} cannot encode {value_type} value: {_lower_first(str(exc))}",
        serializer=serializer,
        value_type=value_type,
    )


def check_finite(value: object, encoded: bytes) -> None:
    """Refuse a value holding ``nan`` or ``±inf``, which orjson encoded as ``null``.

    ``encoded`` is what orjson made of the value (or of an envelope around
    it): without ``null`` in it there is no non-finite float to look for, so
    only values that hold ``None`` (or the text "null") are walked.

    Raises:
        SerializationError: ``value`` holds ``nan``, ``inf`` or ``-inf``.
    """
    if b"null" not in encoded:
        return
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, float):
            if not math.isfinite(item):
                value_type = _type_name(value)
                raise SerializationError(
                    f"json cannot encode {value_type} value: float {item!r} has no JSON form "
                    "(it would be read back as None)",
                    serializer="json",
                    value_type=value_type,
                )
        elif isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, list | tuple):
            pending.extend(item)


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not name:
        raise TypeError(f"a serializer's name must be a non-empty str, got {name!r}")
    if len(name.encode()) > MAX_NAME_BYTES:
        raise ValueError(f"a serializer's name must be at most {MAX_NAME_BYTES} bytes: {name!r}")
    return name


def _import_extra(module: str, extra: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"{module} is not installed; the {extra} serializer needs it: "
            f"pip install 'stackquery[{extra}]'"
        ) from exc
