"""The README's redis_tracking and Sentinel snippets run as written, on the suite's own servers."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.redis_sentinel import SentinelSetup
from tests.redis_server import RedisServer

README = Path(__file__).resolve().parents[1] / "README.md"


def snippet(mark: str) -> str:
    """The python block of the README that starts with the comment ``# <mark>``."""
    text = README.read_text()
    start = text.index(f"```python\n# {mark}\n")
    return text[start:].split("\n", 1)[1].split("```", 1)[0]


@pytest.mark.slow
def test_the_tracking_snippet_hears_another_tools_write(
    redis_server: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    code = snippet("redis_tracking snippet")
    assert '"redis://127.0.0.1:6379/0"' in code
    exec(code.replace("redis://127.0.0.1:6379/0", redis_server.url), {"__name__": "snippet"})
    assert capsys.readouterr().out == "stale: 1\n"


@pytest.mark.slow
def test_the_sentinel_snippet_writes_to_the_master(
    sentinel_setup: SentinelSetup, capsys: pytest.CaptureFixture[str]
) -> None:
    code = snippet("sentinel snippet")
    written_url = "redis+sentinel://127.0.0.1:26379,127.0.0.1:26380,127.0.0.1:26381/mymaster/0"
    assert written_url in code
    exec(code.replace(written_url, sentinel_setup.url), {"__name__": "snippet"})
    port = sentinel_setup.master.port
    assert capsys.readouterr().out == f"b'hello' from ('127.0.0.1', {port})\n"
