"""Serializers: how a cached value becomes the bytes of an L2 entry and back.

Users pick one in the client's config::

    sq.QueryClientConfig(serializer=sq.serializers.json)            # the default
    sq.QueryClientConfig(serializer=sq.serializers.pickle(key=SECRET))
    sq.QueryClientConfig(serializer=sq.serializers.msgpack)           # extra: msgpack
    sq.QueryClientConfig(serializer=sq.serializers.protobuf(User))    # extra: protobuf

or pass any object with ``dumps(value) -> bytes`` and ``loads(bytes)``; the
client runs it through :func:`as_serializer`.  Each serializer has a ``name``
that is stored in every entry it writes, so that an entry written by another
serializer is detected and treated as a miss instead of being misread.

What a serializer cannot encode raises :class:`SerializationError` (a
``TypeError``); bytes it cannot decode raise :class:`DeserializationError` (a
``ValueError``).
"""

from __future__ import annotations

import hashlib
import hmac
import importlib
import pickle as _pickle
from types import ModuleType
from typing import Any, Final, Protocol, final, runtime_checkable

import attrs
import orjson

__all__ = [
    "DeserializationError",
    "JsonSerializer",
    "MsgpackSerializer",
    "PickleSerializer",
    "ProtobufSerializer",
    "SerializationError",
    "Serializer",
    "SignatureError",
    "as_serializer",
    "json",
    "msgpack",
    "pickle",
    "protobuf",
]

#: The longest serializer name, in UTF-8 bytes (the entry frame stores its length in one byte).
MAX_NAME_BYTES: Final = 255

#: The shortest key ``pickle(key=...)`` accepts, in bytes.
MIN_PICKLE_KEY_BYTES: Final = 16


class SerializationError(TypeError):
    """A value could not be encoded by a serializer.

    Attributes:
        serializer: the name of the serializer that refused the value.
        value_type: the qualified name of the top-level value's type.
    """

    def __init__(self, message: str, *, serializer: str, value_type: str) -> None:
        super().__init__(message)
        self.serializer = serializer
        self.value_type = value_type


class DeserializationError(ValueError):
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


@final
class JsonSerializer:
    """JSON through orjson; the default serializer and the fastest.

    Round-trips ``dict`` (``str`` keys), ``list``, ``str``, ``int`` (64-bit),
    ``float``, ``bool`` and ``None``.  Some values change type on the way:

    * tuples come back as lists;
    * ``str``/``int``/``dict``/``list`` subclasses (``IntEnum``, ``OrderedDict``
      ...), ``Enum`` members and ``UUID`` come back as the plain JSON value;
    * ``nan`` and ``±inf`` are not JSON: orjson writes them as ``null``.

    ``datetime``/``date``/``time``, dataclasses, ``set``, ``bytes``, ints past
    64 bits and non-``str`` dict keys raise :class:`SerializationError`.
    The encoded bytes are always UTF-8 text.
    """

    name: Final = "json"

    def dumps(self, value: Any) -> bytes:
        """Encode ``value`` as UTF-8 JSON.

        Raises:
            SerializationError: the value (or something inside it) is not JSON.
        """
        try:
            return orjson.dumps(value, option=_JSON_OPTIONS)
        except orjson.JSONEncodeError as exc:
            raise _json_error(value, exc) from None

    def loads(self, data: bytes | bytearray | memoryview | str) -> Any:
        """Decode JSON text.

        Raises:
            DeserializationError: ``data`` is not valid UTF-8 JSON.
        """
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise DeserializationError(
                f"json cannot decode the data: {exc}", serializer=self.name
            ) from None

    def __repr__(self) -> str:
        return "stackquery.serializers.json"


def _json_error(value: object, exc: orjson.JSONEncodeError) -> SerializationError:
    value_type = _type_name(value)
    return SerializationError(
        f"json cannot encode {value_type} value: {_lower_first(str(exc))}",
        serializer="json",
        value_type=value_type,
    )


@final
class PickleSerializer:
    """Pickle, signed with HMAC-SHA256 so that only holders of the key can make entries.

    An encoded value is ``signature (32 bytes) + pickle``.  ``loads`` checks the
    signature with :func:`hmac.compare_digest` before unpickling anything.
    Build it with :func:`pickle`.
    """

    name: Final = "pickle"

    def __init__(self, key: bytes) -> None:
        self._key = key

    def dumps(self, value: Any) -> bytes:
        """Pickle ``value`` and prepend its signature.

        Raises:
            SerializationError: the value cannot be pickled.
        """
        try:
            data = _pickle.dumps(value, protocol=_pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # __reduce__ and friends may raise anything
            value_type = _type_name(value)
            raise SerializationError(
                f"pickle cannot encode {value_type} value: {exc}",
                serializer=self.name,
                value_type=value_type,
            ) from exc
        return hmac.digest(self._key, data, hashlib.sha256) + data

    def loads(self, data: bytes) -> Any:
        """Verify the signature, then unpickle.

        Raises:
            SignatureError: ``data`` is shorter than a signature or its signature
                does not match; nothing was unpickled.
            DeserializationError: the signature matched but unpickling failed.
        """
        if len(data) < _SIGNATURE_BYTES:
            raise SignatureError("pickle data is shorter than its signature", serializer=self.name)
        view = memoryview(data)
        expected = hmac.digest(self._key, view[_SIGNATURE_BYTES:], hashlib.sha256)
        if not hmac.compare_digest(expected, view[:_SIGNATURE_BYTES]):
            raise SignatureError("pickle signature does not match", serializer=self.name)
        try:
            return _pickle.loads(view[_SIGNATURE_BYTES:])
        except Exception as exc:
            # Signed by a key holder yet unloadable: a class that moved or a
            # newer pickle protocol.  Still a bad entry, not the caller's error.
            raise DeserializationError(
                f"pickle cannot decode the data: {exc!r}", serializer=self.name
            ) from exc

    def __repr__(self) -> str:
        return "stackquery.serializers.pickle(key=<redacted>)"


_SIGNATURE_BYTES: Final = hashlib.sha256().digest_size


def pickle(key: bytes | str | None = None) -> PickleSerializer:
    """Return a pickle serializer whose entries are signed with ``key``.

    Unsigned pickle read from a shared store is remote code execution: anyone
    who can write to the store can run code in every reader.  So a key is
    required; every process that reads or writes the entries needs the same one.

    Args:
        key: a secret of at least 16 bytes (a ``str`` is encoded as UTF-8).

    Returns:
        A :class:`PickleSerializer`.

    Raises:
        ValueError: ``key`` is missing or shorter than 16 bytes.
        TypeError: ``key`` is neither ``bytes`` nor ``str``.
    """
    if key is None:
        raise ValueError(
            "serializers.pickle needs key=<secret of at least 16 bytes>: "
            "unsigned pickle from a shared store is remote code execution"
        )
    if isinstance(key, str):
        key = key.encode()
    elif not isinstance(key, bytes):
        raise TypeError(f"serializers.pickle key must be bytes or str, got {_type_name(key)}")
    if len(key) < MIN_PICKLE_KEY_BYTES:
        raise ValueError(
            f"serializers.pickle key is {len(key)} bytes, needs at least "
            f"{MIN_PICKLE_KEY_BYTES}: a short key makes signed pickle forgeable"
        )
    return PickleSerializer(key)


def _import_extra(module: str, extra: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"{module} is not installed; the {extra} serializer needs it: "
            f"pip install 'stackquery[{extra}]'"
        ) from exc


@final
class MsgpackSerializer:
    """MessagePack (extra ``msgpack``): compact binary, for the same values as JSON plus bytes.

    Round-trips ``dict`` (keys of any hashable msgpack type), ``list``,
    ``str``, ``bytes``, ``int`` (64-bit), ``float`` (``nan``/``inf`` too),
    ``bool`` and ``None``; tuples come back as lists.  The ``msgpack`` package
    is imported on first use (and by :func:`as_serializer`).
    """

    name: Final = "msgpack"

    def __init__(self) -> None:
        self._lib: ModuleType | None = None

    def module(self) -> ModuleType:
        """Return the ``msgpack`` module, importing it on first call.

        Raises:
            ImportError: msgpack is not installed; the message names the extra.
        """
        if self._lib is None:
            self._lib = _import_extra("msgpack", "msgpack")
        return self._lib

    def dumps(self, value: Any) -> bytes:
        """Pack ``value``.

        Raises:
            SerializationError: the value (or something inside it) has no msgpack form.
            ImportError: msgpack is not installed.
        """
        lib = self.module()
        try:
            packed: bytes = lib.packb(value, use_bin_type=True)
        except (TypeError, ValueError, OverflowError) as exc:
            value_type = _type_name(value)
            raise SerializationError(
                f"msgpack cannot encode {value_type} value: {exc}",
                serializer=self.name,
                value_type=value_type,
            ) from exc
        return packed

    def loads(self, data: bytes) -> Any:
        """Unpack exactly one msgpack object.

        Raises:
            DeserializationError: ``data`` is not one complete msgpack object.
            ImportError: msgpack is not installed.
        """
        lib = self.module()
        try:
            # Map keys may be ints (they round-trip); the strict default only
            # guards against hash flooding from untrusted input.
            return lib.unpackb(data, raw=False, strict_map_key=False)
        except Exception as exc:
            raise DeserializationError(
                f"msgpack cannot decode the data: {exc!r}", serializer=self.name
            ) from exc

    def __repr__(self) -> str:
        return "stackquery.serializers.msgpack"


@final
class ProtobufSerializer:
    """Protocol Buffers messages of one class (extra ``protobuf``).

    ``dumps`` takes an instance of ``message_class`` and ``loads`` returns one.
    The name is ``"protobuf:<full message name>"`` so that an entry of another
    message type is detected (protobuf would otherwise decode it silently into
    unknown fields).  Build it with :func:`protobuf`.
    """

    def __init__(self, message_class: type[Any], name: str) -> None:
        self._cls = message_class
        self._name = name

    @property
    def name(self) -> str:
        """``"protobuf:"`` followed by the message's full name."""
        return self._name

    @property
    def message_class(self) -> type[Any]:
        """The message class this serializer encodes and decodes."""
        return self._cls

    def dumps(self, value: Any) -> bytes:
        """Serialize a message of this serializer's class.

        Raises:
            SerializationError: ``value`` is not an instance of the message
                class, or it cannot be serialized (a missing required field).
        """
        if not isinstance(value, self._cls):
            value_type = _type_name(value)
            raise SerializationError(
                f"{self._name} cannot encode {value_type} value: "
                f"expected a {self._cls.__qualname__} message",
                serializer=self._name,
                value_type=value_type,
            )
        try:
            data: bytes = value.SerializeToString()
        except Exception as exc:
            value_type = _type_name(value)
            raise SerializationError(
                f"{self._name} cannot encode {value_type} value: {exc}",
                serializer=self._name,
                value_type=value_type,
            ) from exc
        return data

    def loads(self, data: bytes) -> Any:
        """Parse a message of this serializer's class.

        Raises:
            DeserializationError: ``data`` is not a valid encoding of the message.
        """
        try:
            return self._cls.FromString(bytes(data))
        except Exception as exc:
            raise DeserializationError(
                f"{self._name} cannot decode the data: {exc!r}", serializer=self._name
            ) from exc

    def __repr__(self) -> str:
        return f"stackquery.serializers.protobuf({self._cls.__qualname__})"


def protobuf(message_class: type[Any]) -> ProtobufSerializer:
    """Return a serializer for messages of ``message_class``.

    Any class with ``FromString(bytes)`` whose instances have
    ``SerializeToString()`` works; generated protobuf classes (install with
    ``pip install 'stackquery[protobuf]'``) have both.  No protobuf import
    happens here: a generated class already brought the library in.

    Args:
        message_class: a generated protobuf message class.

    Returns:
        A :class:`ProtobufSerializer`.

    Raises:
        TypeError: ``message_class`` is not a class with ``FromString`` and
            ``SerializeToString``.
    """
    if not isinstance(message_class, type):
        raise TypeError(
            f"serializers.protobuf needs a message class, got {_type_name(message_class)}"
        )
    missing = [
        method
        for method in ("FromString", "SerializeToString")
        if not callable(getattr(message_class, method, None))
    ]
    if missing:
        raise TypeError(
            f"serializers.protobuf needs a message class with FromString and "
            f"SerializeToString; {message_class.__qualname__} lacks {' and '.join(missing)}"
        )
    descriptor = getattr(message_class, "DESCRIPTOR", None)
    full_name = getattr(descriptor, "full_name", None)
    if not isinstance(full_name, str):
        full_name = f"{message_class.__module__}.{message_class.__qualname__}"
    return ProtobufSerializer(message_class, _check_name(f"protobuf:{full_name}"))


@attrs.frozen
class _NamedSerializer:
    """A user object with ``dumps``/``loads`` but no ``name``, given one."""

    inner: Any
    name: str

    def dumps(self, value: Any) -> bytes:
        data: bytes = self.inner.dumps(value)
        return data

    def loads(self, data: bytes) -> Any:
        return self.inner.loads(data)


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not name:
        raise TypeError(f"a serializer's name must be a non-empty str, got {name!r}")
    if len(name.encode()) > MAX_NAME_BYTES:
        raise ValueError(f"a serializer's name must be at most {MAX_NAME_BYTES} bytes: {name!r}")
    return name


def as_serializer(obj: object) -> Serializer:
    """Return ``obj`` as a :class:`Serializer`, checking it once up front.

    Any object with callable ``dumps`` and ``loads`` is accepted.  One without
    a ``name`` is wrapped and named after its class's ``__qualname__`` (a
    module after its ``__name__``).  :data:`msgpack` imports its library here,
    so a missing extra fails when the client is configured, not on first write.

    Args:
        obj: a serializer, or any object with ``dumps(value) -> bytes`` and
            ``loads(bytes)``.

    Returns:
        A serializer: ``obj`` itself when it has a valid ``name``.

    Raises:
        TypeError: ``obj`` lacks callable ``dumps``/``loads``, is a class
            rather than an instance, or has a ``name`` that is not a non-empty str.
        ValueError: ``obj`` is the stdlib ``pickle`` module (unsigned pickle),
            or its name is longer than 255 bytes.
        ImportError: ``obj`` is :data:`msgpack` and msgpack is not installed.
    """
    if obj is _pickle:
        raise ValueError(
            "the pickle module is not a safe serializer: unsigned pickle from a "
            "shared store is remote code execution; use serializers.pickle(key=...)"
        )
    if isinstance(obj, type):
        raise TypeError(f"expected a serializer instance, got the class {obj.__qualname__}")
    missing = [m for m in ("dumps", "loads") if not callable(getattr(obj, m, None))]
    if missing:
        raise TypeError(
            f"a serializer needs callable dumps and loads; "
            f"{_type_name(obj)} lacks {' and '.join(missing)}"
        )
    if isinstance(obj, MsgpackSerializer):
        obj.module()
    if isinstance(obj, ModuleType):
        return _NamedSerializer(obj, _check_name(obj.__name__))
    name = getattr(obj, "name", None)
    if name is None:
        return _NamedSerializer(obj, _check_name(type(obj).__qualname__))
    _check_name(name)
    return obj  # type: ignore[return-value]  # checked by hand above


#: The default serializer: JSON through orjson.
json: Final = JsonSerializer()

#: MessagePack; needs ``pip install 'stackquery[msgpack]'``.
msgpack: Final = MsgpackSerializer()
