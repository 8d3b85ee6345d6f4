"""The binary serializers: signed pickle, msgpack and protobuf."""

from __future__ import annotations

import hashlib
import hmac
import pickle as _pickle
from types import ModuleType
from typing import Any, Final, final

from ._core import (
    DeserializationError,
    SerializationError,
    SignatureError,
    _check_name,
    _import_extra,
    _type_name,
)

#: The shortest key ``pickle(key=...)`` accepts, in bytes.
MIN_PICKLE_KEY_BYTES: Final = 16


@final
class PickleSerializer:
    """Pickle, signed with HMAC-SHA256 so that only holders of the key can make entries.

    On its own, an encoded value is ``signature (32 bytes) + pickle``, the
    signature over the pickle.  In an L2 entry (:func:`~stackquery.pack_entry`)
    the signature covers the entry's *context* too (its key and header, see
    :meth:`dumps_signed`), so that a signed value cannot be copied under
    another key nor have its time edited.  Every ``loads*`` checks the
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
        return self.dumps_signed(value, b"")

    def loads(self, data: bytes) -> Any:
        """Verify the signature, then unpickle.

        Raises:
            SignatureError: ``data`` is shorter than a signature or its signature
                does not match; nothing was unpickled.
            DeserializationError: the signature matched but unpickling failed.
        """
        return self.loads_signed(data, b"")

    def dumps_signed(self, value: Any, context: bytes) -> bytes:
        """Pickle ``value``; prepend the signature of ``context`` followed by the pickle.

        Args:
            value: what to pickle.
            context: bytes the value is bound to (an entry's key and header);
                only :meth:`loads_signed` with the same context accepts the result.

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
        return self._sign(context, data) + data

    def loads_signed(self, data: bytes, context: bytes) -> Any:
        """Verify that ``data`` was signed with ``context``, then unpickle.

        Raises:
            SignatureError: ``data`` is shorter than a signature, or its
                signature does not match ``context`` and the pickle; nothing
                was unpickled.
            DeserializationError: the signature matched but unpickling failed.
        """
        if len(data) < _SIGNATURE_BYTES:
            raise SignatureError("pickle data is shorter than its signature", serializer=self.name)
        view = memoryview(data)
        expected = self._sign(context, view[_SIGNATURE_BYTES:])
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

    def _sign(self, context: bytes, data: bytes | memoryview) -> bytes:
        mac = hmac.new(self._key, context, hashlib.sha256)
        mac.update(data)
        return mac.digest()

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
