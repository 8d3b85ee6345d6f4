"""The README's "Protecting the origin" snippets run as printed, with the output they show."""

from __future__ import annotations

from pathlib import Path

import pytest

import stackquery as sq

README = Path(__file__).resolve().parents[2] / "README.md"

EXPECTED = {
    "retry": "failed: no user 404\norigin calls: 1\n",
    "freshness": "token stale: False\npolls: 3\npage fresh for 120 s\n",
    "jitter": "5 True\n",
    "negative": "None None\norigin down\norigin down\norigin down\n[0, 0, 500, 500]\n",
}


def snippet(name: str) -> str:
    """The python block after the README's ``<!-- origin snippet: NAME -->`` marker."""
    text = README.read_text()
    marker = f"<!-- origin snippet: {name} -->\n```python\n"
    assert text.count(marker) == 1, f"README has no single {name!r} snippet"
    return text.split(marker, 1)[1].split("```", 1)[0]


class TestReadmeSnippets:
    @pytest.mark.parametrize("name", sorted(EXPECTED))
    def test_the_snippet_runs_and_prints_what_the_readme_says(
        self, name: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Run as a newcomer would paste it; the comments after each print are its output."""
        source = snippet(name)
        exec(compile(source, f"README.md:{name}", "exec"), {"__name__": f"readme_{name}"})
        assert capsys.readouterr().out == EXPECTED[name]


class TestReadmeListsTheOptions:
    def test_every_query_options_field_is_named_in_the_readme(self) -> None:
        """The README's QueryOptions list names every public field."""
        text = README.read_text()
        fields = [a.name for a in sq.QueryOptions.__attrs_attrs__ if a.init]
        missing = [name for name in fields if f"`{name}`" not in text]
        assert missing == []
