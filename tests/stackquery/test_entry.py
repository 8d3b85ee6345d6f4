"""The L2 entry envelope: exact layout, round trips, and corrupt entries as misses."""

from __future__ import annotations

import dataclasses
import datetime
import logging
import math
import os
import struct
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from stackquery import serializers
from stackquery._entry import (
    CorruptEntryError,
    StoredEntry,
    pack_entry,
    try_unpack_entry,
    unpack_entry,
)
from stackquery._entry_batch import unpack_batch, unpack_entries
from stackquery.serializers import SerializationError, Serializer, SignatureError

KEY = b"0123456789abcdef-entry-key"

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


def require_protobuf() -> None:
    """Import google.protobuf; missing is a failure in CI and a skip elsewhere."""
    try:
        import google.protobuf  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            raise
        pytest.skip("protobuf is not installed: pip install 'stackquery[protobuf]'")


T = 1712345678.25
SIGNED = serializers.pickle(key=KEY)
POINTS = serializers.protobuf(Point)
ALL_SERIALIZERS: list[Serializer] = [serializers.json, SIGNED, serializers.msgpack, POINTS]


def corrupt(raw: bytes | str, serializer: Serializer = serializers.json) -> CorruptEntryError:
    """Unpack ``raw``, expecting CorruptEntryError, and return it."""
    with pytest.raises(CorruptEntryError) as info:
        unpack_entry(raw, serializer)
    return info.value


class TestTextFrame:
    def test_exact_bytes(self) -> None:
        """A json entry is one compact JSON object with the value embedded raw."""
        raw = pack_entry({"a": [1, "é"]}, data_updated_at=T, serializer=serializers.json)
        assert raw == '{"sq":1,"s":"json","t":1712345678.25,"i":false,"d":{"a":[1,"é"]}}'.encode()

    def test_round_trip(self) -> None:
        """Unpacking gives back the value and every field."""
        raw = pack_entry(
            [1, None], data_updated_at=T, serializer=serializers.json, invalidated=True
        )
        assert unpack_entry(raw, serializers.json) == StoredEntry(
            value=[1, None], data_updated_at=T, invalidated=True, serializer="json"
        )

    def test_text_store_round_trip(self) -> None:
        """The entry survives a store that keeps text: it decodes from str."""
        text = pack_entry({"k": "v"}, data_updated_at=T, serializer=serializers.json).decode()
        assert unpack_entry(text, serializers.json).value == {"k": "v"}

    def test_none_is_a_value(self) -> None:
        """None is stored and read back like any value."""
        raw = pack_entry(None, data_updated_at=0, serializer=serializers.json)
        entry = unpack_entry(raw, serializers.json)
        assert entry.value is None
        assert entry.data_updated_at == 0.0
        assert type(entry.data_updated_at) is float

    def test_unencodable_value(self) -> None:
        """A value json refuses raises the same SerializationError as json.dumps."""
        with pytest.raises(
            SerializationError,
            match=r"^json cannot encode set value: type is not JSON serializable: set$",
        ):
            pack_entry({1, 2}, data_updated_at=T, serializer=serializers.json)

    def test_same_class_other_instance_is_text(self) -> None:
        """Any JsonSerializer instance writes the text frame."""
        raw = pack_entry(1, data_updated_at=T, serializer=serializers.JsonSerializer())
        assert raw.startswith(b'{"sq":1,')


class TestBinaryFrame:
    def test_exact_layout(self) -> None:
        """Magic, version, flags, time, payload length, name length, name, payload."""
        payload = serializers.msgpack.dumps([1, 2])
        raw = pack_entry([1, 2], data_updated_at=T, serializer=serializers.msgpack)
        assert raw == (
            b"\xffSQ\x01\x00"
            + struct.pack(">d", T)
            + struct.pack(">I", len(payload))
            + b"\x07msgpack"
            + payload
        )

    def test_invalidated_flag(self) -> None:
        """Bit 0 of the flags byte is the invalidated flag."""
        raw = pack_entry(1, data_updated_at=T, serializer=serializers.msgpack, invalidated=True)
        assert raw[4] == 1
        assert unpack_entry(raw, serializers.msgpack).invalidated is True

    @pytest.mark.parametrize(
        ("serializer", "value"),
        [
            (SIGNED, {"when": datetime.datetime(2024, 1, 2), "t": (1, 2)}),
            (serializers.msgpack, {"b": b"\x00\xff", 1: 2}),
            (POINTS, Point(7, -7)),
        ],
        ids=["pickle", "msgpack", "protobuf-duck"],
    )
    def test_round_trip(self, serializer: Serializer, value: Any) -> None:
        """Every binary serializer's entry round-trips with its fields."""
        raw = pack_entry(value, data_updated_at=T, serializer=serializer)
        assert unpack_entry(raw, serializer) == StoredEntry(
            value=value, data_updated_at=T, invalidated=False, serializer=serializer.name
        )

    def test_binary_entry_is_not_text(self) -> None:
        """A binary entry can never be mistaken for UTF-8 text."""
        raw = pack_entry("x", data_updated_at=T, serializer=serializers.msgpack)
        with pytest.raises(UnicodeDecodeError):
            raw.decode()

    def test_bytearray_payload_is_accepted(self) -> None:
        """A serializer returning a bytearray is fine."""

        class ByteArrays:
            name = "ba"

            def dumps(self, value: Any) -> bytes:
                return bytearray(value)  # type: ignore[return-value]

            def loads(self, data: bytes) -> Any:
                return data

        raw = pack_entry(b"abc", data_updated_at=T, serializer=ByteArrays())
        assert unpack_entry(raw, ByteArrays()).value == b"abc"

    def test_serializer_returning_str(self) -> None:
        """A dumps that returns str is a SerializationError naming the problem."""

        class Texts:
            name = "text"

            def dumps(self, value: Any) -> bytes:
                return str(value)  # type: ignore[return-value]

            def loads(self, data: bytes) -> Any:
                return data

        with pytest.raises(
            SerializationError,
            match=r"^serializer 'text' returned str from dumps, expected bytes$",
        ):
            pack_entry(1, data_updated_at=T, serializer=Texts())

    def test_serializer_raising_its_own_error(self) -> None:
        """Any error from a custom dumps becomes SerializationError, chained."""

        class Failing:
            name = "failing"

            def dumps(self, value: Any) -> bytes:
                raise KeyError("nope")

            def loads(self, data: bytes) -> Any:
                return data

        with pytest.raises(
            SerializationError,
            match=r"^serializer 'failing' failed to encode int value: KeyError\('nope'\)$",
        ) as info:
            pack_entry(1, data_updated_at=T, serializer=Failing())
        assert isinstance(info.value.__cause__, KeyError)

    def test_real_protobuf_types_do_not_mix(self) -> None:
        """An entry of one message type read as another is a serializer mismatch."""
        require_protobuf()
        from google.protobuf import wrappers_pb2

        strings = serializers.protobuf(wrappers_pb2.StringValue)
        ints = serializers.protobuf(wrappers_pb2.Int64Value)
        raw = pack_entry(wrappers_pb2.StringValue(value="x"), data_updated_at=T, serializer=strings)
        assert unpack_entry(raw, strings).value == wrappers_pb2.StringValue(value="x")
        error = corrupt(raw, ints)
        assert error.reason == "serializer-mismatch"
        assert error.found_serializer == "protobuf:google.protobuf.StringValue"


class TestDataUpdatedAt:
    @pytest.mark.parametrize("bad", [math.nan, math.inf, -1.0])
    def test_out_of_range(self, bad: float) -> None:
        """nan, infinity and negative times are a ValueError."""
        with pytest.raises(
            ValueError, match=rf"^data_updated_at must be finite seconds >= 0, got {bad!r}$"
        ):
            pack_entry(1, data_updated_at=bad, serializer=serializers.json)

    @pytest.mark.parametrize(("bad", "name"), [("1.0", "str"), (True, "bool"), (None, "NoneType")])
    def test_wrong_type(self, bad: Any, name: str) -> None:
        """A time that is not an int or float is a TypeError."""
        with pytest.raises(
            TypeError, match=rf"^data_updated_at must be a float of seconds, got {name}$"
        ):
            pack_entry(1, data_updated_at=bad, serializer=serializers.msgpack)


def binary_entry(
    *,
    version: int = 1,
    flags: int = 0,
    t: float = T,
    name: bytes = b"msgpack",
    payload: bytes = b"\x01",
    payload_size: int | None = None,
) -> bytes:
    """Build a binary-frame entry by hand, optionally inconsistent."""
    size = len(payload) if payload_size is None else payload_size
    return struct.pack(">3sBBdIB", b"\xffSQ", version, flags, t, size, len(name)) + name + payload


GOOD_TEXT = b'{"sq":1,"s":"json","t":1.5,"i":false,"d":[1,2]}'


class TestCorruptEntries:
    @pytest.mark.parametrize(
        ("raw", "reason", "detail"),
        [
            (b"", "truncated", "entry is empty"),
            (b"\xff", "truncated", "entry is shorter than its header"),
            (b"\xffSQ\x01", "truncated", "entry is shorter than its header"),
            (b"hello", "foreign", "not a stackquery entry"),
            (b'{"a":1}', "foreign", "not a stackquery entry"),
            (b"[1,2]", "foreign", "not a stackquery entry"),
            (b'{"x', "foreign", "not a stackquery entry"),
            ("plain text", "foreign", "not a stackquery entry"),
            (
                GOOD_TEXT.replace(b'"sq":1', b'"sq":2'),
                "unsupported-version",
                "format version 2, expected 1",
            ),
            (
                GOOD_TEXT.replace(b'"sq":1', b'"sq":true'),
                "unsupported-version",
                "format version True, expected 1",
            ),
            (GOOD_TEXT[:-1], "malformed", "envelope is not valid JSON: "),
            (
                GOOD_TEXT.replace(b',"d":[1,2]', b""),
                "malformed",
                "envelope fields are missing or mistyped",
            ),
            (
                GOOD_TEXT.replace(b"1.5", b'"1.5"'),
                "malformed",
                "envelope fields are missing or mistyped",
            ),
            (
                GOOD_TEXT.replace(b"false", b"0"),
                "malformed",
                "envelope fields are missing or mistyped",
            ),
            (GOOD_TEXT.replace(b"1.5", b"-1.5"), "malformed", "data_updated_at is negative: -1.5"),
        ],
    )
    def test_text_entries(self, raw: bytes | str, reason: str, detail: str) -> None:
        """Each kind of bad text entry is refused with its reason."""
        error = corrupt(raw)
        assert error.reason == reason
        assert str(error).startswith(f"corrupt entry ({reason}): {detail}")
        assert error.serializer == "json"

    def test_good_text_fixture_is_good(self) -> None:
        """The hand-written text entry the cases above damage is itself valid."""
        assert unpack_entry(GOOD_TEXT, serializers.json).value == [1, 2]

    def test_good_binary_fixture_is_good(self) -> None:
        """The hand-built binary entry the cases below damage is itself valid."""
        assert unpack_entry(binary_entry(), serializers.msgpack).value == 1

    @pytest.mark.parametrize(
        ("raw", "reason", "detail"),
        [
            (binary_entry()[:10], "truncated", "entry is shorter than its header"),
            (binary_entry(version=2), "unsupported-version", "format version 2, expected 1"),
            (binary_entry(payload_size=2), "truncated", "entry is 26 bytes, its header says 27"),
            (binary_entry() + b"\x00", "malformed", "entry is 27 bytes, its header says 26"),
            (binary_entry(flags=0x82), "malformed", "unknown flags 0x82"),
            (binary_entry(t=math.nan), "malformed", "data_updated_at is nan"),
            (binary_entry(t=-2.0), "malformed", "data_updated_at is -2.0"),
            (binary_entry(name=b"\xfe\xfe"), "malformed", "serializer name is not UTF-8"),
            (
                binary_entry(payload=b"\xc1"),
                "undecodable-payload",
                "msgpack could not decode the payload: ",
            ),
        ],
    )
    def test_binary_entries(self, raw: bytes, reason: str, detail: str) -> None:
        """Each kind of bad binary entry is refused with its reason."""
        error = corrupt(raw, serializers.msgpack)
        assert error.reason == reason
        assert str(error).startswith(f"corrupt entry ({reason}): {detail}")

    def test_json_entry_read_by_msgpack(self) -> None:
        """A text entry read with another serializer is a serializer mismatch."""
        error = corrupt(GOOD_TEXT, serializers.msgpack)
        assert error.reason == "serializer-mismatch"
        assert str(error) == (
            "corrupt entry (serializer-mismatch): written by 'json', expected 'msgpack'"
        )
        assert (error.serializer, error.found_serializer) == ("msgpack", "json")

    def test_msgpack_entry_read_by_json(self) -> None:
        """A binary entry read with json is a serializer mismatch."""
        error = corrupt(binary_entry(), serializers.json)
        assert error.reason == "serializer-mismatch"
        assert error.found_serializer == "msgpack"

    def test_text_frame_claiming_another_serializer(self) -> None:
        """Only json may use the text frame."""
        raw = GOOD_TEXT.replace(b'"s":"json"', b'"s":"msgpack"')
        error = corrupt(raw, serializers.msgpack)
        assert error.reason == "malformed"
        assert str(error) == "corrupt entry (malformed): a text entry must be json, not 'msgpack'"

    def test_pickle_with_another_key(self) -> None:
        """An entry signed with another key is an undecodable payload; nothing is unpickled."""
        raw = pack_entry([1], data_updated_at=T, serializer=serializers.pickle(key=b"k" * 16))
        error = corrupt(raw, SIGNED)
        assert error.reason == "undecodable-payload"
        assert isinstance(error.__cause__, SignatureError)

    def test_corrupt_entry_error_is_a_value_error(self) -> None:
        """CorruptEntryError is a ValueError."""
        assert issubclass(CorruptEntryError, ValueError)


class TestTryUnpack:
    def test_absent_is_a_miss(self) -> None:
        """None from the store is a miss and not reported as corrupt."""
        seen: list[CorruptEntryError] = []
        assert try_unpack_entry(None, serializers.json, on_corrupt=seen.append) is None
        assert seen == []

    def test_valid_entry(self) -> None:
        """A valid entry is decoded."""
        raw = pack_entry(5, data_updated_at=T, serializer=serializers.json)
        entry = try_unpack_entry(raw, serializers.json, on_corrupt=pytest.fail)
        assert entry == StoredEntry(
            value=5, data_updated_at=T, invalidated=False, serializer="json"
        )

    def test_corrupt_entry_is_reported_once(self) -> None:
        """A corrupt entry is a miss and goes to on_corrupt exactly once."""
        seen: list[CorruptEntryError] = []
        assert try_unpack_entry(b"garbage", serializers.json, on_corrupt=seen.append) is None
        assert [e.reason for e in seen] == ["foreign"]

    def test_corrupt_entry_is_logged_without_callback(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """With no callback a corrupt entry is logged as a warning."""
        with caplog.at_level(logging.WARNING, logger="stackquery.entry"):
            assert try_unpack_entry(b"", serializers.json) is None
        assert [(r.name, r.levelname, r.getMessage()) for r in caplog.records] == [
            (
                "stackquery.entry",
                "WARNING",
                "ignoring L2 entry: corrupt entry (truncated): entry is empty",
            )
        ]

    def test_callback_errors_propagate(self) -> None:
        """An error raised by on_corrupt is not swallowed."""

        def explode(error: CorruptEntryError) -> None:
            raise RuntimeError("callback failed")

        with pytest.raises(RuntimeError, match=r"^callback failed$"):
            try_unpack_entry(b"x", serializers.json, on_corrupt=explode)


class TestUnpackEntries:
    def test_each_entry_is_judged_on_its_own(self) -> None:
        """A batch decodes as try_unpack_entry decodes each entry; each corrupt one is
        reported once, and a signed entry is checked against its own key."""
        signed = serializers.pickle(key=KEY)
        good = pack_entry("v", data_updated_at=T, serializer=serializers.json)
        flagged = pack_entry([1], data_updated_at=T, serializer=serializers.json, invalidated=True)
        other = pack_entry("v", data_updated_at=T, serializer=serializers.msgpack)
        raws: list[bytes | None] = [
            good,
            None,
            b"garbage",
            b'{"sq": 1, "not": "an entry"}',
            b"{not json",
            other,
            flagged,
        ]
        keys = [f"k{index}" for index in range(len(raws))]
        expected = [
            try_unpack_entry(raw, serializers.json, pytest.fail, key="p:" + key)
            if index in (0, 1, 6)
            else None
            for index, (raw, key) in enumerate(zip(raws, keys, strict=True))
        ]
        seen: list[CorruptEntryError] = []
        assert unpack_entries(list(raws), serializers.json, seen.append, "p:", keys) == expected
        assert [error.reason for error in seen] == [
            "foreign",
            "malformed",
            "foreign",
            "serializer-mismatch",
        ]
        assert expected[6] == StoredEntry([1], T, True, "json")
        entry = pack_entry("s", data_updated_at=T, serializer=signed, key="p:k1")
        assert unpack_entries([entry, entry], signed, seen.append, "p:", ["k0", "k1"]) == [
            None,
            StoredEntry("s", T, False, signed.name),
        ]
        assert [error.reason for error in seen[4:]] == ["undecodable-payload"]

    def test_an_envelope_that_parses_is_plain_only_from_its_first_byte(self) -> None:
        """A plain envelope behind whitespace parses as JSON but is not a text entry (it is
        foreign, as try_unpack_entry finds); a bytearray, a memoryview or a str holding one
        decode as try_unpack_entry decodes them."""
        good = pack_entry("v", data_updated_at=T, serializer=serializers.json)
        raws: list[Any] = [b" " + good, bytearray(good), memoryview(good), good.decode(), b""]
        keys = [f"k{index}" for index in range(len(raws))]
        seen: list[CorruptEntryError] = []
        assert unpack_entries(list(raws), serializers.json, seen.append, "p:", keys) == [
            None,
            *[StoredEntry("v", T, False, "json")] * 3,
            None,
        ]
        assert [error.reason for error in seen] == ["foreign", "truncated"]
        assert try_unpack_entry(b" " + good, serializers.json, seen.append) is None
        assert [error.reason for error in seen] == ["foreign", "truncated", "foreign"]

    def test_json_that_is_no_plain_envelope_decodes_as_alone(self) -> None:
        """JSON that parses but is not an envelope as pack_entry writes it (no object, a
        field missing, added, repeated or of the wrong type) decodes, and is reported
        corrupt, exactly as try_unpack_entry decodes and reports it; only what pack_entry
        writes (or that with a field added: the same entry) skips the careful way."""
        fields = '"sq":1,"s":"json","t":5.0,"i":false,"d":"v"'
        raws: list[bytes | None] = [
            f"{{{fields}}}".encode(),
            *(text.encode() for text in ("[]", "[1,2,3,4,5]", '"{abcd"', "1", "null", "true")),
            b'{"t":5.0}',
            b'{"sq":1,"s":"json","t":5.0,"i":false,"x":"v"}',
            f'{{{fields},"x":1}}'.encode(),
            f'{{{fields},"sq":2}}'.encode(),
            f'{{{fields},"i":true}}'.encode(),
            *(
                f"{{{fields.replace(field, forged)}}}".encode()
                for field, forged in [
                    ('"sq":1', '"sq":true'),
                    ('"sq":1', '"sq":1.0'),
                    ('"t":5.0', '"t":5'),
                    ('"t":5.0', '"t":-5.0'),
                    ('"i":false', '"i":0'),
                    ('"s":"json"', '"s":"msgpack"'),
                ]
            ),
        ]
        keys = [f"k{index}" for index in range(len(raws))]
        alone: list[CorruptEntryError] = []
        expected = [
            try_unpack_entry(raw, serializers.json, alone.append, key="p:" + key)
            for raw, key in zip(raws, keys, strict=True)
        ]
        seen: list[CorruptEntryError] = []
        assert unpack_entries(list(raws), serializers.json, seen.append, "p:", keys) == expected
        assert [str(error) for error in seen] == [str(error) for error in alone]
        # The careful decoding takes a field added, an int time, and the last of two "i".
        hits = {place: entry for place, entry in enumerate(expected) if entry is not None}
        assert hits == {
            0: StoredEntry("v", 5.0, False, "json"),
            9: StoredEntry("v", 5.0, False, "json"),
            11: StoredEntry("v", 5.0, True, "json"),
            14: StoredEntry("v", 5.0, False, "json"),
        }
        assert len(seen) == len(raws) - len(hits)
        # Taken without the careful way: what pack_entry writes, and with a field added.
        batch = unpack_batch(list(raws), serializers.json, seen.append, "p:", keys)
        assert [place for place, t in enumerate(batch.times) if t is not None] == [0, 9]
        assert sorted(batch.others) == [place for place in range(len(raws)) if place not in (0, 9)]

    def test_the_raw_entries_are_let_go_of(self) -> None:
        """Each raw entry is dropped from the list as it is decoded."""
        raws: list[bytes | None] = [pack_entry(1, data_updated_at=T, serializer=serializers.json)]
        unpack_entries(raws, serializers.json, pytest.fail, "", ["k"])
        assert raws == [None]


class TestStoredEntry:
    def test_frozen(self) -> None:
        """A StoredEntry cannot be changed."""
        entry = StoredEntry(value=1, data_updated_at=T, invalidated=False, serializer="json")
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            entry.value = 2  # type: ignore[misc]


times = st.floats(min_value=0.0, max_value=4e9, allow_nan=False)


def damaged(entry: bytes, data: st.DataObject) -> bytes:
    """Truncate, extend or flip a byte of a valid entry, as hypothesis chooses."""
    how = data.draw(st.sampled_from(["truncate", "extend", "flip"]))
    if how == "truncate":
        return entry[: data.draw(st.integers(0, len(entry) - 1))]
    if how == "extend":
        return entry + data.draw(st.binary(min_size=1, max_size=4))
    i = data.draw(st.integers(0, len(entry) - 1))
    return entry[:i] + bytes([entry[i] ^ data.draw(st.integers(1, 255))]) + entry[i + 1 :]


class TestProperties:
    @given(json_values, times, st.booleans())
    def test_json_round_trip(self, value: Any, t: float, invalidated: bool) -> None:
        """Every JSON value round-trips, and the entry is always UTF-8 text."""
        raw = pack_entry(
            value, data_updated_at=t, serializer=serializers.json, invalidated=invalidated
        )
        raw.decode("utf-8")
        assert unpack_entry(raw, serializers.json) == StoredEntry(
            value=value, data_updated_at=t, invalidated=invalidated, serializer="json"
        )

    @given(json_values, times, st.booleans())
    def test_msgpack_round_trip(self, value: Any, t: float, invalidated: bool) -> None:
        """Every JSON value round-trips through a msgpack entry too."""
        raw = pack_entry(
            value, data_updated_at=t, serializer=serializers.msgpack, invalidated=invalidated
        )
        assert unpack_entry(raw, serializers.msgpack) == StoredEntry(
            value=value, data_updated_at=t, invalidated=invalidated, serializer="msgpack"
        )

    @given(
        st.sampled_from(ALL_SERIALIZERS),
        st.binary(max_size=64)
        | st.binary(max_size=64).map(lambda b: b"\xffSQ\x01" + b)
        | st.binary(max_size=64).map(lambda b: b'{"sq":1,' + b)
        | st.text(max_size=32),
    )
    def test_random_input_is_an_entry_or_corrupt(
        self, serializer: Serializer, raw: bytes | str
    ) -> None:
        """Any input decodes to an entry or raises CorruptEntryError, nothing else."""
        try:
            entry = unpack_entry(raw, serializer)
        except CorruptEntryError:
            return
        assert isinstance(entry, StoredEntry)

    @given(st.sampled_from(ALL_SERIALIZERS), st.data())
    def test_damaged_entry_is_an_entry_or_corrupt(
        self, serializer: Serializer, data: st.DataObject
    ) -> None:
        """A damaged valid entry decodes to an entry or raises CorruptEntryError, nothing else."""
        value = Point(1, 2) if serializer is POINTS else {"a": [1, "b", None]}
        raw = damaged(pack_entry(value, data_updated_at=T, serializer=serializer), data)
        try:
            entry = unpack_entry(raw, serializer)
        except CorruptEntryError:
            return
        assert isinstance(entry, StoredEntry)
