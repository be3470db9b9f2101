"""The README's usage example runs as written and prints what its comments say."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def test_readme_usage_example_runs_and_prints_what_its_comments_say():
    blocks = python_blocks(README.read_text(encoding="utf-8"))
    assert blocks, "the README has no python example"
    for block in blocks:
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            exec(compile(block, str(README), "exec"), {"__name__": "__readme__"})
        # Each `print(...)  # expected` line: the comment starts with what was printed.
        expected = [
            line.split("#", 1)[1].strip().split(":")[0]
            for line in block.splitlines()
            if line.startswith("print(") and "#" in line
        ]
        assert printed.getvalue().splitlines() == expected
