"""``redis+sentinel://`` URLs: what is parsed, and what is refused with a clear message."""

from __future__ import annotations

import ssl

import pytest

from backends import RedisClient, RedisStorage
from backends._redis_sentinel import SentinelAddress, parse_master_reply


def test_a_full_url_names_every_sentinel_the_service_the_login_and_the_database() -> None:
    address = SentinelAddress.from_url("redis+sentinel://app:s%40cret@h1:26380,h2,[::1]:7/cache/3")
    assert address.sentinels == (("h1", 26380), ("h2", 26379), ("::1", 7))
    assert (address.service_name, address.db) == ("cache", 3)
    assert (address.username, address.password) == ("app", "s@cret")
    master = address.master_address("10.0.0.5", 6380)
    assert (master.host, master.port, master.db, master.username, master.password) == (
        "10.0.0.5", 6380, 3, "app", "s@cret",
    )  # fmt: skip


def test_a_password_alone_and_the_default_database() -> None:
    address = SentinelAddress.from_url("redis+sentinel://:pw@h1:1/svc")
    assert (address.username, address.password, address.db) == (None, "pw", 0)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+sentinel://h1:1", "service name"),
        ("redis+sentinel://h1:1/", "service name"),
        ("redis+sentinel://h1:1/svc/x", "/service_name[/db]"),
        ("redis+sentinel://h1:1/svc/0/1", "/service_name[/db]"),
        ("redis+sentinel://h1:99999/svc", "bad sentinel port"),
        ("redis+sentinel:///svc", "at least one sentinel"),
        ("redis+sentinel://h1,,h2/svc", "at least one sentinel"),
        ("redis+sentinel://h1/svc?db=1", "no query options"),
    ],
)
def test_bad_urls_are_refused_naming_the_problem(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        SentinelAddress.from_url(url)


def test_client_and_storage_accept_a_sentinel_url_without_connecting() -> None:
    client = RedisClient.from_url("redis+sentinel://127.0.0.1:1/svc/2")
    assert isinstance(client.address, SentinelAddress)
    assert client.address.db == 2
    assert client.master is None
    store = RedisStorage("redis+sentinel://127.0.0.1:1/svc")
    assert isinstance(store.redis, RedisClient)
    with pytest.raises(ValueError, match="TLS"):
        RedisClient.from_url("redis+sentinel://h/svc", ssl_context=ssl.create_default_context())


@pytest.mark.parametrize(
    "reply",
    [None, [], [b"h"], [b"h", b"0"], [b"h", b"65536"], [b"h", b"x"], [b"", b"1"], [1, 2],
     [b"\xff", b"1"], b"h:1", [b"h" * 300, b"1"]],
)  # fmt: skip
def test_a_malformed_sentinel_answer_names_no_master(reply: object) -> None:
    assert parse_master_reply(reply) is None


def test_a_well_formed_sentinel_answer() -> None:
    assert parse_master_reply([b"127.0.0.1", b"6380"]) == ("127.0.0.1", 6380)
