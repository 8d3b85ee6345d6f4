"""The README's "Protecting the origin" snippets run, and print what their comments say."""

from __future__ import annotations

from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
SNIPPETS = ["stale_if_error", "circuit", "query_context"]


def snippet(name: str) -> str:
    """The code block after ``<!-- origin snippet: NAME -->`` in the README."""
    mark = f"<!-- origin snippet: {name} -->\n```python\n"
    return README.read_text().split(mark, 1)[1].split("```", 1)[0]


def promised_output(code: str) -> list[str]:
    """What the snippet's ``print(...)  # OUTPUT`` lines promise, in order."""
    return [
        line.split("  # ", 1)[1]
        for line in code.splitlines()
        if "print(" in line and "  # " in line
    ]


class TestReadmeSnippets:
    def test_the_section_has_its_three_subsections(self) -> None:
        """Each point has its subsection under "Protecting the origin"."""
        section = README.read_text().split("## Protecting the origin\n", 1)[1].split("\n## ", 1)[0]
        headings = [line for line in section.splitlines() if line.startswith("### ")]
        assert headings == [
            "### Stale if error",
            "### Circuit breaker",
            "### Query context and ETag revalidation",
        ]

    @pytest.mark.parametrize("name", SNIPPETS)
    def test_snippet_prints_what_it_says(
        self, name: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Run the snippet as a script; its output is exactly its print comments."""
        code = snippet(name)
        expected = promised_output(code)
        assert expected, "a snippet that promises nothing checks nothing"
        exec(compile(code, f"README:{name}", "exec"), {"__name__": "__main__"})
        assert capsys.readouterr().out.splitlines() == expected
