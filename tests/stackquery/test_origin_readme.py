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
"""Snippets whose output is given here."""
PROMISING = ["stale_if_error", "circuit", "query_context"]
"""Snippets whose output is what the comment after each ``print(...)`` says."""


def snippet(name: str) -> str:
    """The python block after the README's ``<!-- origin snippet: NAME -->`` marker."""
    text = README.read_text()
    marker = f"<!-- origin snippet: {name} -->\n```python\n"
    assert text.count(marker) == 1, f"README has no single {name!r} snippet"
    return text.split(marker, 1)[1].split("```", 1)[0]


def promised_output(code: str) -> list[str]:
    """What the snippet's ``print(...)  # OUTPUT`` lines promise, in order."""
    return [
        line.split("  # ", 1)[1]
        for line in code.splitlines()
        if "print(" in line and "  # " in line
    ]


class TestReadmeSnippets:
    def test_the_section_has_its_seven_subsections(self) -> None:
        """Each point has its subsection under "Protecting the origin", and every snippet
        marker in the README is run by a test here."""
        text = README.read_text()
        section = text.split("## Protecting the origin\n", 1)[1].split("\n## ", 1)[0]
        headings = [line for line in section.splitlines() if line.startswith("### ")]
        assert headings == [
            "### Retry by error",
            "### Freshness from the data",
            "### Jitter",
            "### Negative caching and a cache condition",
            "### Stale if error",
            "### Circuit breaker",
            "### Query context and ETag revalidation",
        ]
        assert text.count("<!-- origin snippet: ") == len(EXPECTED) + len(PROMISING)

    @pytest.mark.parametrize("name", sorted(EXPECTED))
    def test_the_snippet_runs_and_prints_what_the_readme_says(
        self, name: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Run as a newcomer would paste it; the comments after each print are its output."""
        source = snippet(name)
        exec(compile(source, f"README.md:{name}", "exec"), {"__name__": f"readme_{name}"})
        assert capsys.readouterr().out == EXPECTED[name]

    @pytest.mark.parametrize("name", PROMISING)
    def test_snippet_prints_what_it_says(
        self, name: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Run the snippet as a script; its output is exactly its print comments."""
        code = snippet(name)
        expected = promised_output(code)
        assert expected, "a snippet that promises nothing checks nothing"
        exec(compile(code, f"README.md:{name}", "exec"), {"__name__": "__main__"})
        assert capsys.readouterr().out.splitlines() == expected


class TestReadmeListsTheOptions:
    def test_every_query_options_field_is_named_in_the_readme(self) -> None:
        """The README's QueryOptions list names every public field."""
        text = README.read_text()
        fields = [a.name for a in sq.QueryOptions.__attrs_attrs__ if a.init]
        listing = text.split("* **`QueryOptions` fields**", 1)[1].split("\n* ", 1)[0]
        missing = [name for name in fields if f"`{name}`" not in listing]
        assert missing == []
