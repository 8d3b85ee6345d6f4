"""Serializers: round trips, refusals with clear errors, signed pickle, extras."""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import hmac
import marshal
import os
import pickle as stdlib_pickle
import re
import struct
import sys
import threading
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stackquery import serializers
from stackquery.serializers import (
    DeserializationError,
    JsonSerializer,
    MsgpackSerializer,
    SerializationError,
    Serializer,
    SignatureError,
    as_serializer,
)

KEY = b"0123456789abcdef-test-key"

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=20,
)

EXECUTED: list[str] = []


def _record_execution(marker: str) -> str:
    EXECUTED.append(marker)
    return marker


class RunsCodeWhenUnpickled:
    """A payload that calls ``_record_execution`` when unpickled."""

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (_record_execution, ("ran",))


@dataclasses.dataclass
class Point:
    """A minimal stand-in for a generated protobuf message class."""

    x: int
    y: int

    def SerializeToString(self) -> bytes:
        return struct.pack(">ii", self.x, self.y)

    @classmethod
    def FromString(cls, data: bytes) -> Point:
        return cls(*struct.unpack(">ii", data))


def require_protobuf() -> ModuleType:
    """Import google.protobuf; missing is a failure in CI and a skip elsewhere."""
    try:
        import google.protobuf
    except ImportError:
        if os.environ.get("CI"):
            raise
        pytest.skip("protobuf is not installed: pip install 'stackquery[protobuf]'")
    return google.protobuf


class TestJson:
    def test_name_and_protocol(self) -> None:
        """The default serializer is named json and satisfies the Serializer protocol."""
        assert serializers.json.name == "json"
        assert isinstance(serializers.json, Serializer)
        assert isinstance(serializers.json, JsonSerializer)

    def test_dumps_is_compact_utf8_json(self) -> None:
        """dumps writes compact UTF-8 JSON."""
        data = serializers.json.dumps({"a": [1, 2.5, True, None, "é"]})
        assert data == '{"a":[1,2.5,true,null,"é"]}'.encode()

    def test_tuples_come_back_as_lists(self) -> None:
        """A tuple is encoded as a JSON array and decoded as a list."""
        assert serializers.json.loads(serializers.json.dumps((1, (2, 3)))) == [1, [2, 3]]

    @given(json_values)
    def test_round_trip(self, value: object) -> None:
        """Every JSON value decodes to an equal value."""
        assert serializers.json.loads(serializers.json.dumps(value)) == value

    def test_loads_accepts_str(self) -> None:
        """Text from a text-only store decodes too."""
        assert serializers.json.loads('{"a":1}') == {"a": 1}

    @pytest.mark.parametrize(
        ("value", "message"),
        [
            (
                {"when": datetime.datetime(2024, 1, 2)},
                r"^json cannot encode dict value: type is not JSON serializable: "
                r"datetime\.datetime$",
            ),
            ({1, 2}, r"^json cannot encode set value: type is not JSON serializable: set$"),
            (b"raw", r"^json cannot encode bytes value: type is not JSON serializable: bytes$"),
            (2**64, r"^json cannot encode int value: integer exceeds 64-bit range$"),
            ({1: "a"}, r"^json cannot encode dict value: dict key must be str$"),
        ],
    )
    def test_unencodable_values_raise(self, value: object, message: str) -> None:
        """A value with no faithful JSON form raises SerializationError naming the type."""
        with pytest.raises(SerializationError, match=message) as info:
            serializers.json.dumps(value)
        assert isinstance(info.value, TypeError)
        assert info.value.serializer == "json"
        assert info.value.value_type == type(value).__qualname__

    def test_dataclass_is_refused(self) -> None:
        """A dataclass would come back as a dict, so it is refused."""
        with pytest.raises(
            SerializationError,
            match=rf"^json cannot encode {re.escape(Point.__module__)}\.Point value: "
            r"type is not JSON serializable: Point$",
        ):
            serializers.json.dumps(Point(1, 2))

    def test_loads_rejects_invalid_json(self) -> None:
        """Bytes that are not JSON raise DeserializationError."""
        with pytest.raises(DeserializationError, match=r"^json cannot decode the data: ") as info:
            serializers.json.loads(b"{not json")
        assert isinstance(info.value, ValueError)
        assert info.value.serializer == "json"


class TestPickle:
    def test_round_trip_keeps_python_types(self) -> None:
        """Signed pickle round-trips tuples, sets and datetimes unchanged."""
        s = serializers.pickle(key=KEY)
        value = {"t": (1, 2), "s": {3}, "d": datetime.datetime(2024, 1, 2, 3, 4)}
        assert s.loads(s.dumps(value)) == value
        assert s.name == "pickle"

    def test_signature_is_hmac_sha256_of_the_pickle(self) -> None:
        """An encoded value is HMAC-SHA256(key, pickle) followed by the pickle."""
        data = serializers.pickle(key=KEY).dumps([1, 2])
        signature, body = data[:32], data[32:]
        assert signature == hmac.new(KEY, body, hashlib.sha256).digest()
        assert stdlib_pickle.loads(body) == [1, 2]

    def test_str_key_is_encoded(self) -> None:
        """A str key signs exactly like its UTF-8 bytes."""
        as_str = serializers.pickle(key=KEY.decode())
        as_bytes = serializers.pickle(key=KEY)
        assert as_bytes.loads(as_str.dumps("x")) == "x"

    def test_missing_key_is_refused(self) -> None:
        """Without a key the factory refuses and says why."""
        with pytest.raises(
            ValueError,
            match=r"^serializers\.pickle needs key=<secret of at least 16 bytes>: "
            r"unsigned pickle from a shared store is remote code execution$",
        ):
            serializers.pickle()

    def test_short_key_is_refused(self) -> None:
        """A 15-byte key is refused; 16 bytes is enough."""
        with pytest.raises(
            ValueError,
            match=r"^serializers\.pickle key is 15 bytes, needs at least 16: "
            r"a short key makes signed pickle forgeable$",
        ):
            serializers.pickle(key=b"x" * 15)
        assert serializers.pickle(key=b"x" * 16).name == "pickle"

    def test_key_of_wrong_type_is_refused(self) -> None:
        """A key that is neither bytes nor str is a TypeError."""
        with pytest.raises(
            TypeError, match=r"^serializers\.pickle key must be bytes or str, got int$"
        ):
            serializers.pickle(key=12345678901234567890)  # type: ignore[arg-type]

    def test_wrong_key_never_unpickles(self) -> None:
        """Data signed with another key raises SignatureError without running its payload."""
        EXECUTED.clear()
        forged = serializers.pickle(key=b"attacker-key-0123456").dumps(RunsCodeWhenUnpickled())
        with pytest.raises(SignatureError, match=r"^pickle signature does not match$") as info:
            serializers.pickle(key=KEY).loads(forged)
        assert isinstance(info.value, DeserializationError)
        assert EXECUTED == []
        # The same bytes do run code once the signature verifies: the test is meaningful.
        assert serializers.pickle(key=b"attacker-key-0123456").loads(forged) == "ran"
        assert EXECUTED == ["ran"]

    def test_unsigned_pickle_is_refused(self) -> None:
        """A plain pickle behind a zero signature is refused and not run."""
        EXECUTED.clear()
        unsigned = bytes(32) + stdlib_pickle.dumps(RunsCodeWhenUnpickled())
        with pytest.raises(SignatureError, match=r"^pickle signature does not match$"):
            serializers.pickle(key=KEY).loads(unsigned)
        assert EXECUTED == []

    def test_tampered_byte_is_refused(self) -> None:
        """Flipping one byte of the pickle breaks the signature."""
        s = serializers.pickle(key=KEY)
        data = bytearray(s.dumps({"a": 1}))
        data[-2] ^= 0x01
        with pytest.raises(SignatureError, match=r"^pickle signature does not match$"):
            s.loads(bytes(data))

    def test_data_shorter_than_signature(self) -> None:
        """Fewer than 32 bytes cannot even hold a signature."""
        with pytest.raises(SignatureError, match=r"^pickle data is shorter than its signature$"):
            serializers.pickle(key=KEY).loads(b"short")

    def test_unpicklable_value(self) -> None:
        """A value pickle cannot encode raises SerializationError naming its type."""
        with pytest.raises(
            SerializationError, match=r"^pickle cannot encode _thread\.lock value: "
        ) as info:
            serializers.pickle(key=KEY).dumps(threading.Lock())
        assert info.value.value_type == "_thread.lock"

    def test_repr_hides_the_key(self) -> None:
        """The key never appears in the repr."""
        assert repr(serializers.pickle(key=KEY)) == (
            "stackquery.serializers.pickle(key=<redacted>)"
        )


class TestMsgpack:
    def test_round_trip(self) -> None:
        """msgpack round-trips bytes, int keys and non-finite floats; tuples become lists."""
        value = {"b": b"\x00\xff", 1: [1.5, float("inf")], "t": (1, 2), "n": None}
        assert serializers.msgpack.loads(serializers.msgpack.dumps(value)) == {
            "b": b"\x00\xff",
            1: [1.5, float("inf")],
            "t": [1, 2],
            "n": None,
        }
        assert serializers.msgpack.name == "msgpack"

    @given(json_values)
    def test_round_trip_json_values(self, value: object) -> None:
        """Every JSON value round-trips through msgpack too."""
        assert serializers.msgpack.loads(serializers.msgpack.dumps(value)) == value

    def test_unencodable_value(self) -> None:
        """A value with no msgpack form raises SerializationError naming its type."""
        with pytest.raises(
            SerializationError, match=r"^msgpack cannot encode dict value: "
        ) as info:
            serializers.msgpack.dumps({"when": datetime.datetime(2024, 1, 2)})
        assert info.value.serializer == "msgpack"

    def test_bad_data(self) -> None:
        """Trailing or incomplete data raises DeserializationError."""
        with pytest.raises(DeserializationError, match=r"^msgpack cannot decode the data: "):
            serializers.msgpack.loads(serializers.msgpack.dumps([1, 2])[:-1])
        with pytest.raises(DeserializationError, match=r"^msgpack cannot decode the data: "):
            serializers.msgpack.loads(serializers.msgpack.dumps(1) + b"\x01")

    def test_missing_library_names_the_extra(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without msgpack installed, use and as_serializer raise ImportError naming the extra."""
        monkeypatch.setitem(sys.modules, "msgpack", None)
        message = (
            r"^msgpack is not installed; the msgpack serializer needs it: "
            r"pip install 'stackquery\[msgpack\]'$"
        )
        with pytest.raises(ImportError, match=message):
            MsgpackSerializer().dumps(1)
        with pytest.raises(ImportError, match=message):
            as_serializer(MsgpackSerializer())


class TestProtobuf:
    def test_duck_typed_round_trip(self) -> None:
        """Any class with FromString/SerializeToString works; the name carries the class."""
        s = serializers.protobuf(Point)
        assert s.loads(s.dumps(Point(3, -4))) == Point(3, -4)
        assert s.name == f"protobuf:{Point.__module__}.Point"
        assert s.message_class is Point

    def test_real_protobuf_round_trip(self) -> None:
        """A generated message round-trips and is named by its full protobuf name."""
        require_protobuf()
        from google.protobuf import wrappers_pb2

        s = serializers.protobuf(wrappers_pb2.StringValue)
        assert s.name == "protobuf:google.protobuf.StringValue"
        assert s.loads(s.dumps(wrappers_pb2.StringValue(value="hé"))).value == "hé"

    def test_real_protobuf_bad_bytes(self) -> None:
        """Bytes that do not parse raise DeserializationError."""
        require_protobuf()
        from google.protobuf import wrappers_pb2

        s = serializers.protobuf(wrappers_pb2.StringValue)
        with pytest.raises(
            DeserializationError,
            match=r"^protobuf:google\.protobuf\.StringValue cannot decode the data: ",
        ):
            s.loads(b"\x0a\x05ab")

    def test_other_type_is_refused(self) -> None:
        """dumps of something other than the message class names both types."""
        with pytest.raises(
            SerializationError,
            match=r"^protobuf:\S+\.Point cannot encode int value: expected a Point message$",
        ):
            serializers.protobuf(Point).dumps(5)

    def test_undecodable_bytes(self) -> None:
        """FromString failing raises DeserializationError."""
        with pytest.raises(
            DeserializationError, match=r"^protobuf:\S+\.Point cannot decode the data: "
        ):
            serializers.protobuf(Point).loads(b"\x00")

    def test_class_without_methods_is_refused(self) -> None:
        """A class lacking the protobuf methods is a TypeError listing what is missing."""
        with pytest.raises(
            TypeError,
            match=r"^serializers\.protobuf needs a message class with FromString and "
            r"SerializeToString; dict lacks FromString and SerializeToString$",
        ):
            serializers.protobuf(dict)

    def test_instance_instead_of_class_is_refused(self) -> None:
        """Passing a message instead of its class is a TypeError."""
        with pytest.raises(TypeError, match=r"^serializers\.protobuf needs a message class, got "):
            serializers.protobuf(Point(1, 2))  # type: ignore[arg-type]


class Custom:
    """A user serializer with no name."""

    def dumps(self, value: Any) -> bytes:
        return repr(value).encode()

    def loads(self, data: bytes) -> Any:
        return data.decode()


class NamedCustom(Custom):
    name = "custom-v2"


class TestAsSerializer:
    def test_builtins_pass_through(self) -> None:
        """Built-in serializers are returned as they are."""
        signed = serializers.pickle(key=KEY)
        assert as_serializer(serializers.json) is serializers.json
        assert as_serializer(serializers.msgpack) is serializers.msgpack
        assert as_serializer(signed) is signed

    def test_named_object_passes_through(self) -> None:
        """An object with a name is returned unchanged."""
        obj = NamedCustom()
        assert as_serializer(obj) is obj

    def test_unnamed_object_is_named_after_its_class(self) -> None:
        """An object without a name gets its class qualname and still works."""
        s = as_serializer(Custom())
        assert s.name == "Custom"
        assert s.dumps(42) == b"42"
        assert s.loads(b"x") == "x"
        assert isinstance(s, Serializer)

    def test_module_is_named_after_itself(self) -> None:
        """A module with dumps/loads (marshal) is named after the module."""
        s = as_serializer(marshal)
        assert s.name == "marshal"
        assert s.loads(s.dumps([1, "a"])) == [1, "a"]

    def test_stdlib_pickle_is_refused(self) -> None:
        """The pickle module itself is refused: unsigned pickle is code execution."""
        with pytest.raises(
            ValueError,
            match=r"^the pickle module is not a safe serializer: unsigned pickle from a shared "
            r"store is remote code execution; use serializers\.pickle\(key=\.\.\.\)$",
        ):
            as_serializer(stdlib_pickle)

    def test_object_without_loads(self) -> None:
        """An object lacking loads is a TypeError naming what is missing."""

        class DumpsOnly:
            def dumps(self, value: Any) -> bytes:
                return b""

        with pytest.raises(
            TypeError,
            match=r"^a serializer needs callable dumps and loads; \S+DumpsOnly lacks loads$",
        ):
            as_serializer(DumpsOnly())

    def test_plain_object(self) -> None:
        """An object with neither method is a TypeError naming both."""
        with pytest.raises(
            TypeError,
            match=r"^a serializer needs callable dumps and loads; int lacks dumps and loads$",
        ):
            as_serializer(3)

    def test_class_instead_of_instance(self) -> None:
        """Passing the class rather than an instance is a TypeError."""
        with pytest.raises(
            TypeError, match=r"^expected a serializer instance, got the class Custom$"
        ):
            as_serializer(Custom)

    def test_bad_names(self) -> None:
        """A name that is empty, not a str, or over 255 bytes is refused."""
        for bad, error, message in [
            ("", TypeError, r"^a serializer's name must be a non-empty str, got ''$"),
            (7, TypeError, r"^a serializer's name must be a non-empty str, got 7$"),
            ("x" * 256, ValueError, r"^a serializer's name must be at most 255 bytes: 'x+'$"),
        ]:
            obj = Custom()
            obj.name = bad  # type: ignore[attr-defined]
            with pytest.raises(error, match=message):
                as_serializer(obj)
