"""Specification of ``serializers.json(types=[...])``: typed values through readable JSON."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import os
import sys
import uuid
from pathlib import Path
from typing import Any

import attrs
import orjson
import pytest
import trio
import trio.testing

import stackquery as sq
from stackquery._entry import flag_invalidated
from stackquery.serializers import DeserializationError, SerializationError

REPO_ROOT = Path(__file__).resolve().parents[2]


class Status(enum.Enum):
    ACTIVE = "active"
    GONE = "gone"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


@attrs.frozen
class User:
    id: int
    name: str
    status: Status = Status.ACTIVE
    joined: dt.date = dt.date(2024, 5, 1)
    _token: str = "t"  # an attrs private field: its __init__ argument is `token`


@dataclasses.dataclass(frozen=True)
class Order:
    id: uuid.UUID
    total: decimal.Decimal
    buyer: User
    at: dt.datetime
    lines: list[str] = dataclasses.field(default_factory=list)
    size: int = dataclasses.field(init=False, default=0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", len(self.lines))


@attrs.define
class Unregistered:
    x: int


class SubUser(User):
    pass


TYPED = sq.serializers.json(types=[User, Order, Status, Level])
ORDER = Order(
    id=uuid.UUID("12345678-1234-5678-1234-567812345678"),
    total=decimal.Decimal("12.50"),
    buyer=User(42, "Ada", token="secret"),
    at=dt.datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=dt.UTC),
    lines=["tea", "cake"],
)


def round_trip(value: Any) -> Any:
    return TYPED.loads(TYPED.dumps(value))


def same(a: Any, b: Any) -> bool:
    """Equal, and of the same type all the way down (a str never passes for a UUID)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(map(same, a, b))
    return bool(a == b)


class TestRoundTrips:
    @pytest.mark.parametrize(
        "value",
        [
            ORDER,
            User(1, "Bo", Status.GONE, dt.date(2020, 2, 29), token="x"),
            Status.ACTIVE,
            Level.HIGH,
            dt.datetime(2024, 1, 1, 12, 30),
            dt.datetime(2024, 1, 1, 12, 30, tzinfo=dt.timezone(dt.timedelta(hours=-5))),
            dt.date(1999, 12, 31),
            uuid.UUID(int=7),
            decimal.Decimal("-0.000000000000000000001"),
            decimal.Decimal("NaN"),
            [ORDER, {"who": User(2, "Cy")}],
            {"users": [User(3, "Di")], "level": Level.LOW, "when": dt.date(2024, 1, 1)},
            {"id": uuid.UUID(int=9)},
            [Status.GONE, "gone", 1, Level.LOW],
        ],
        ids=repr,
    )
    def test_registered_and_standard_types_come_back_as_themselves(self, value: Any) -> None:
        """Equal and of the same types at every depth, enum members the same objects."""
        back = round_trip(value)
        if isinstance(value, Order):
            assert (back, back.size, back.buyer.status) == (value, 2, Status.ACTIVE)
        elif isinstance(value, decimal.Decimal) and value.is_nan():
            assert isinstance(back, decimal.Decimal) and back.is_nan()
        else:
            assert same(back, value)

    @pytest.mark.parametrize(
        "value",
        [
            {"__sq__": "User", "v": {"id": 1}},
            {"a": {"__sq__": 1}, "b": [{"__sq__": "sq:tree", "v": 2}]},
            {"__sq__": "x", "other": User(5, "Ed")},
            [{"__sq__": "sq:dict"}],
        ],
    )
    def test_a_dict_holding_the_tag_key_round_trips(self, value: Any) -> None:
        """A user's dict that happens to hold the tag key is escaped, not read as a tag."""
        assert same(round_trip(value), value)

    def test_plain_values_are_written_as_the_plain_serializer_writes_them(self) -> None:
        """Nothing to tag: byte for byte the plain json output, tuples as lists."""
        value = {"a": [1, 2.5, None, True], "b": {"c": "2024-01-01"}, "t": (1, 2)}
        assert TYPED.dumps(value) == sq.serializers.json.dumps(value)
        assert TYPED.loads(TYPED.dumps(value)) == {**value, "t": [1, 2]}

    def test_strings_that_look_like_tagged_values_stay_strings(self) -> None:
        """A UUID-shaped string and an enum's value as a plain str are not turned into types."""
        value = {"id": "12345678-1234-5678-1234-567812345678", "s": "active", "n": 1}
        assert same(round_trip(value), value)

    def test_a_registered_name_can_be_chosen_with_a_mapping(self) -> None:
        """types={name: class}: the entry carries the chosen name."""
        typed = sq.serializers.json(types={"billing.User": User, "Status": Status})
        data = typed.dumps(User(1, "A"))
        assert orjson.loads(data)["__sq__"] == "billing.User"
        assert typed.loads(data) == User(1, "A")


class TestTheStoredText:
    def test_an_entry_is_readable_json_naming_the_registered_type(self) -> None:
        """The L2 entry is a JSON text envelope; the value's fields are plain JSON with tags."""
        raw = sq.pack_entry(User(7, "Ada", token="k"), data_updated_at=10.0, serializer=TYPED)
        assert orjson.loads(raw) == {
            "sq": 1,
            "s": "json+types",
            "t": 10.0,
            "i": False,
            "d": {
                "__sq__": "User",
                "v": {
                    "id": 7,
                    "name": "Ada",
                    "status": {"__sq__": "Status", "v": "active"},
                    "joined": {"__sq__": "sq:date", "v": "2024-05-01"},
                    "token": "k",
                },
            },
        }
        entry = sq.unpack_entry(raw, TYPED)
        assert (entry.value, entry.serializer) == (User(7, "Ada", token="k"), "json+types")

    def test_the_plain_serializer_treats_a_typed_entry_as_foreign(self) -> None:
        """Read with serializers.json, a typed entry is a serializer mismatch, not raw tags."""
        raw = sq.pack_entry(ORDER, data_updated_at=1.0, serializer=TYPED)
        with pytest.raises(sq.CorruptEntryError, match="serializer-mismatch"):
            sq.unpack_entry(raw, sq.serializers.json)

    def test_flagging_a_typed_entry_invalidated_keeps_its_serializer_and_value(self) -> None:
        """What `stackquery invalidate` does to a store's entry: the value still decodes typed."""
        raw = sq.pack_entry(ORDER, data_updated_at=1.0, serializer=TYPED)
        flagged = flag_invalidated(raw)
        assert flagged is not None
        entry = sq.unpack_entry(flagged, TYPED)
        assert (entry.value, entry.invalidated, entry.data_updated_at) == (ORDER, True, 1.0)


class TestUntrustedEntries:
    @pytest.mark.parametrize(
        ("tree", "message"),
        [
            ({"__sq__": "os.system", "v": "id"}, "names the type 'os.system', which is not reg"),
            ({"__sq__": "Unregistered", "v": {"x": 1}}, "names the type 'Unregistered'"),
            ({"__sq__": "User", "v": {"id": 1}, "extra": 1}, "a malformed tag"),
            ({"__sq__": 3, "v": 1}, "a malformed tag"),
            ({"__sq__": "sq:date", "v": 20240101}, "a malformed sq:date"),
            ({"__sq__": "sq:date", "v": "yesterday"}, "cannot rebuild the value"),
            ({"__sq__": "sq:decimal", "v": "1,5"}, "cannot rebuild the value"),
            ({"__sq__": "User", "v": {"id": 1, "name": "a", "admin": True}}, "cannot rebuild"),
            ({"__sq__": "User", "v": [1, "a"]}, "malformed fields of User"),
            ({"__sq__": "Status", "v": "unknown"}, "cannot rebuild the value"),
            ({"__sq__": "sq:dict", "v": [1]}, "a malformed dict"),
        ],
    )
    def test_a_bad_or_foreign_tag_is_a_deserialization_error(self, tree: Any, message: str) -> None:
        """Nothing is imported or called but a registered class; the error says what was wrong."""
        with pytest.raises(DeserializationError, match=message):
            TYPED.loads(orjson.dumps(tree))

    def test_a_deeply_nested_entry_is_refused_not_a_crash(self) -> None:
        """Nesting past the recursion limit is a DeserializationError."""
        tree: Any = {"__sq__": "sq:tree", "v": 1}
        for _ in range(5000):
            tree = {"__sq__": "sq:tree", "v": tree}
        with pytest.raises(DeserializationError, match="nested too deeply"):
            TYPED.from_json(tree)

    async def test_an_entry_naming_an_unregistered_type_is_a_counted_miss(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Another process registered Order, this one did not: corrupt, counted, fetched."""
        store = sq.MemoryStorage()
        raw = sq.pack_entry(ORDER, data_updated_at=1.0, serializer=TYPED)
        await store.set('sq:["order",1]', raw, None)
        only_users = sq.serializers.json(types=[User, Status])
        config = sq.QueryClientConfig(storage=store, serializer=only_users)

        async def load() -> str:
            return "from origin"

        async with sq.open_query_client(config) as client:
            options = sq.QueryOptions(query_key=("order", 1), query_fn=load)
            assert await client.fetch_query(options) == "from origin"
            stats = client.l2_statistics()
            assert stats is not None and stats.corrupt == 1


class TestRefusals:
    @pytest.mark.parametrize(
        ("value", "what"),
        [
            (Unregistered(1), "Unregistered is not registered"),
            ({"deep": [Unregistered(1)]}, "Unregistered is not registered"),
            (SubUser(1, "x"), "SubUser is not registered"),
            (dt.time(12, 0), "datetime.time is not registered"),
            ({1, 2}, "set is not registered"),
            (ORDER.buyer.status.__class__("active"), None),
        ],
    )
    def test_an_unregistered_type_is_refused_at_write(self, value: Any, what: str | None) -> None:
        """Refused with the name of the type and how to register it (a member: fine)."""
        if what is None:
            assert round_trip(value) is Status.ACTIVE
            return
        with pytest.raises(SerializationError, match=what):
            TYPED.dumps(value)

    def test_an_unregistered_enum_inside_a_registered_type_is_refused(self) -> None:
        """Fields are walked: an enum nobody registered is not written as a bare value."""
        other = enum.Enum("Other", {"A": 1})
        typed = sq.serializers.json(types=[User])
        with pytest.raises(SerializationError, match="Status is not registered"):
            typed.dumps(User(1, "a"))
        with pytest.raises(SerializationError, match="Other is not registered"):
            typed.dumps({"o": [dt.date(2024, 1, 1), other.A]})

    async def test_a_client_keeps_an_unregistered_value_in_l1_and_counts_it(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        """Exactly as with the plain serializer: served from L1, never written, counted."""
        store = sq.MemoryStorage()
        config = sq.QueryClientConfig(storage=store, serializer=TYPED)
        async with sq.open_query_client(config) as client:
            assert await client.set_query_data(("u",), Unregistered(3)) == Unregistered(3)
            assert client.get_query_data(("u",)) == Unregistered(3)
            stats = client.l2_statistics()
            assert stats is not None and (stats.serialize_errors, stats.writes) == (1, 0)
        assert await store.get('sq:["u"]') is None


class TestRegistration:
    @pytest.mark.parametrize(
        ("types", "error", "message"),
        [
            ([User(1, "a")], TypeError, r"^types must hold classes, got .*User"),
            ([int], TypeError, r"^int is not an attrs class, a dataclass or an Enum$"),
            ("User", TypeError, r"^types must be an iterable of classes or a mapping"),
            ([User, User], ValueError, r"^User is registered twice$"),
            ({"User": User, "Other": User}, ValueError, r"^User is registered twice$"),
            ({"A": User, "sq:B": Status}, ValueError, r"^a type's name must be a non-empty str"),
            ({"": User}, ValueError, r"^a type's name must be a non-empty str"),
        ],
    )
    def test_bad_registrations_are_refused(
        self, types: Any, error: type[Exception], message: str
    ) -> None:
        """Each mistake is named when the serializer is made."""
        with pytest.raises(error, match=message):
            sq.serializers.json(types=types)

    def test_two_classes_with_one_name_must_be_named(self) -> None:
        """Two `User` classes: the error says to use a mapping."""
        other = attrs.make_class("User", ["id"])
        with pytest.raises(ValueError, match=r"two types are registered as 'User'.*types=\{name"):
            sq.serializers.json(types=[User, other])

    def test_the_typed_serializer_is_accepted_by_the_config(self) -> None:
        """It is a serializer like any other: QueryClientConfig takes it, repr names its types."""
        config = sq.QueryClientConfig(serializer=TYPED)
        assert config.serializer is TYPED
        assert repr(TYPED) == "stackquery.serializers.json(types=[User, Order, Status, Level])"
        assert TYPED.types == {"User": User, "Order": Order, "Status": Status, "Level": Level}


CACHE_PROGRAM = """
import sys, attrs, trio, stackquery as sq

@attrs.frozen
class User:
    id: int
    name: str

calls = []

@sq.cache(600, key="user:{user_id}")
async def get_user(user_id: int) -> User:
    calls.append(user_id)
    return User(user_id, "Ada")

async def main() -> None:
    config = sq.QueryClientConfig(
        storage=sq.SQLiteStorage(sys.argv[1]), storage_ttl=None,
        serializer=sq.serializers.json(types=[User]),
    )
    async with sq.open_query_client(config):
        user = await get_user(42)
    print(type(user).__name__, user.name, len(calls))

trio.run(main)
"""


class TestCacheDecorator:
    @pytest.mark.slow
    async def test_a_cached_registered_class_comes_back_in_another_process(
        self, tmp_path: Path
    ) -> None:
        """Process one calls the function; process two gets a User from SQLite, no call."""
        database = str(tmp_path / "cache.sqlite3")
        outputs = []
        for _ in range(2):
            with trio.fail_after(60.0):
                done = await trio.run_process(
                    [sys.executable, "-c", CACHE_PROGRAM, database],
                    capture_stdout=True,
                    capture_stderr=True,
                    check=False,
                    env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
                )
            assert (done.returncode, done.stderr.decode()) == (0, "")
            outputs.append(done.stdout.decode())
        assert outputs == ["User Ada 1\n", "User Ada 0\n"]


class TestWarmRestart:
    async def test_dehydrate_and_hydrate_keep_the_types(self) -> None:
        """A typed client's dehydrated data hydrates back as the registered classes."""
        config = sq.QueryClientConfig(serializer=TYPED)
        async with sq.open_query_client(config) as client:
            await client.set_query_data(("order",), ORDER)
            saved = client.dehydrate()
        async with sq.open_query_client(config) as restarted:
            assert await restarted.hydrate(saved) == 1
            assert restarted.get_query_data(("order",)) == ORDER
