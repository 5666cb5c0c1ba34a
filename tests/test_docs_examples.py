"""Every code block of README.md and docs/*.md marked runnable runs, as a reader would run it.

A block is runnable when the line just before its opening fence is ``<!-- runnable -->``
(invisible on GitHub and on the docs site) and its fence is ``python``. Each block runs in
a fresh interpreter, in a temporary working directory, bounded in time; a block may use
top-level ``await`` as in a notebook cell. A failure's traceback names the Markdown file and
its line.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import MS

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MARKER = "<!-- runnable -->"

#: The bound on one block, in seconds at the suite's time scale.
BLOCK_TIMEOUT = 120_000 * MS

# Runs the block like a notebook cell: top-level await is allowed, then the loop is run.
RUNNER = """
import ast, asyncio, sys
path, name = sys.argv[1], sys.argv[2]
code = compile(open(path).read(), name, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
result = eval(code, {"__name__": "__main__"})
if asyncio.iscoroutine(result):
    asyncio.run(result)
"""

_FENCE = re.compile(r"^(\s*)(`{3,})\s*(\S*)")


@dataclass(frozen=True)
class Block:
    page: str
    line: int  # of the block's first code line, counted from 1
    language: str
    code: str

    @property
    def name(self) -> str:
        return f"{self.page}:{self.line}"


def runnable_blocks(path: Path) -> list[Block]:
    """The fenced blocks of a Markdown file that follow a ``<!-- runnable -->`` line."""
    lines = path.read_text(encoding="utf-8").splitlines()
    page = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name
    blocks = []
    for number, line in enumerate(lines):
        if line.strip() != MARKER:
            continue
        fence = _FENCE.match(lines[number + 1]) if number + 1 < len(lines) else None
        assert fence, f"{page}:{number + 1}: {MARKER} is not followed by a code fence"
        indent, ticks, language = fence.groups()
        end = number + 2
        while not lines[end].strip().startswith(ticks):
            end += 1
            assert end < len(lines), f"{page}:{number + 2}: the code fence is never closed"
        code = textwrap.dedent("\n".join(lines[number + 2 : end]))
        assert all(not ln or ln.startswith(indent) for ln in lines[number + 2 : end]), page
        blocks.append(Block(page, number + 3, language, code))
    return blocks


BLOCKS = [block for page in PAGES for block in runnable_blocks(page)]


def test_the_readme_tour_and_docs_examples_are_marked() -> None:
    """The README's API tour and docs pages have runnable blocks, all of them Python."""
    assert any(b.page == "README.md" and "engine.rollback(30)" in b.code for b in BLOCKS)
    assert any(block.page.startswith("docs/") for block in BLOCKS)
    assert {block.language for block in BLOCKS} == {"python"}


def test_a_marker_needs_a_fence(tmp_path: Path) -> None:
    """A marker followed by anything but a fence is an error, not a silently skipped block."""
    page = tmp_path / "page.md"
    page.write_text(f"{MARKER}\nsome prose\n")
    with pytest.raises(AssertionError, match="not followed by a code fence"):
        runnable_blocks(page)


def test_blocks_keep_their_lines_and_lose_their_indent(tmp_path: Path) -> None:
    """An indented block (in a list item) is dedented and knows its first line."""
    page = tmp_path / "page.md"
    page.write_text(f"- item:\n\n  {MARKER}\n  ```python\n  x = 1\n  print(x)\n  ```\n")
    (block,) = runnable_blocks(page)
    assert (block.line, block.code) == (5, "x = 1\nprint(x)")


@pytest.mark.slow  # a fresh interpreter a block, some run a server or a whole comparison
@pytest.mark.parametrize("block", BLOCKS, ids=[block.name for block in BLOCKS])
def test_block_runs(block: Block, tmp_path: Path) -> None:
    """The block runs to the end in a fresh interpreter, without an error."""
    # Blank lines before the code, so a traceback's line numbers are the Markdown file's.
    source = tmp_path / "block.py"
    source.write_text("\n" * (block.line - 1) + block.code + "\n", encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-c", RUNNER, str(source), block.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=BLOCK_TIMEOUT,
        env={**os.environ, "MPLBACKEND": "Agg"},
    )
    assert done.returncode == 0, f"{block.name} failed:\n{done.stderr[-4000:]}"
