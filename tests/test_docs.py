"""The examples in README.md and docs/ run, so the docs cannot rot.

Every fenced block whose info string starts with ``python`` is a complete script, run in a fresh
interpreter in an empty temporary folder (its line numbers in a traceback are the Markdown
file's). Words after ``python`` change that:

- ``no-run``: shown, never run (a fragment, or code that needs something the tests lack);
- ``file=NAME.py``: not run itself; written as NAME.py beside every other block of the same
  Markdown file, so they can import it;
- ``pytest``: run with pytest (asyncio auto mode) instead of as a script;
- ``needs=redis,postgres,mysql``: skipped (or failed, under QUEUEKIT_REQUIRE_SERVICES=1) when that
  local server is unreachable.

Blocks in other languages (``text``, ``console``, ``json``, ``toml``) are not run. The tests also
check that relative links between the documents point at files that exist, and that the
capability table in docs/drivers.md says what the driver classes declare.
"""

from __future__ import annotations

import importlib
import re
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.services import MYSQL_URL, POSTGRES_URL, REDIS_URL, require_service

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
SERVICES = {"redis": REDIS_URL, "postgres": POSTGRES_URL, "mysql": MYSQL_URL}
_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>.*)$")


@dataclass(frozen=True)
class Block:
    """One fenced code block of a Markdown file."""

    path: Path
    line: int  # line of the block's first code line, 1-based
    language: str
    words: tuple[str, ...]
    code: str

    @property
    def id(self) -> str:
        """``docs/jobs.md:42``, the test id."""
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    def option(self, name: str) -> str | None:
        """The value of ``name=value`` in the info string, if given."""
        for word in self.words:
            key, sep, value = word.partition("=")
            if sep and key == name:
                return value
        return None

    @property
    def runs(self) -> bool:
        """True for a Python block that is run (as a script or with pytest)."""
        if self.language != "python" or "no-run" in self.words:
            return False
        return self.option("file") is None or "pytest" in self.words


def parse_blocks(path: Path) -> list[Block]:
    """The fenced code blocks of ``path``, in order."""
    blocks: list[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        fence, indent = opening["fence"], len(opening["indent"])
        info = opening["info"].strip().split()
        body: list[str] = []
        i += 1
        start = i + 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            line = lines[i]
            # A block indented under a list item: drop that indentation, keep the code's own.
            body.append(line[min(indent, len(line) - len(line.lstrip(" "))) :])
            i += 1
        i += 1  # the closing fence
        language = info[0].lower() if info else ""
        blocks.append(Block(path, start, language, tuple(info[1:]), "\n".join(body) + "\n"))
    return blocks


ALL_BLOCKS = [block for path in DOCS for block in parse_blocks(path)]
RUNNABLE = [block for block in ALL_BLOCKS if block.runs]


def _check_services(block: Block) -> None:
    needs = block.option("needs")
    for name in needs.split(",") if needs else ():
        url = urlsplit(SERVICES[name])
        try:
            socket.create_connection((url.hostname, url.port), timeout=2).close()
        except OSError as e:
            require_service(name, e)


@pytest.mark.parametrize("block", RUNNABLE, ids=[b.id for b in RUNNABLE])
def test_example_runs(block: Block, tmp_path: Path) -> None:
    _check_services(block)
    for helper in parse_blocks(block.path):
        name = helper.option("file")
        if helper.language == "python" and name and helper is not block:
            (tmp_path / name).write_text(helper.code, encoding="utf-8")
    # Pad with blank lines so a traceback's line numbers are the Markdown file's.
    source = "\n" * (block.line - 1) + block.code
    name = block.option("file") or f"{block.path.stem}_line{block.line}.py".replace("-", "_")
    script = tmp_path / name
    script.write_text(source, encoding="utf-8")
    if "pytest" in block.words:
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
        command += ["-o", "asyncio_mode=auto", "--rootdir", str(tmp_path), str(script)]
    else:
        command = [sys.executable, str(script)]
    result = subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, timeout=150, check=False
    )
    assert result.returncode == 0, (
        f"the example at {block.id} failed (exit {result.returncode}):\n"
        f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    )


def test_docs_have_examples() -> None:
    files = {block.path.name for block in RUNNABLE}
    for name in ("README.md", "jobs.md", "workers.md", "metrics.md", "custom-drivers.md"):
        assert name in files, f"{name} has no runnable python example"


_LINK = re.compile(r"\[[^\]]*\]\((?P<target>[^)\s]+)\)")


@pytest.mark.parametrize("path", DOCS, ids=[str(p.relative_to(ROOT)) for p in DOCS])
def test_relative_links_point_at_existing_files(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    # Links inside code blocks are code, not links.
    prose = re.sub(r"```.*?```", "", text, flags=re.DOTALL)
    broken = []
    for match in _LINK.finditer(prose):
        target = match["target"].split("#", 1)[0]
        if not target or "://" in target or target.startswith("mailto:"):
            continue
        if not (path.parent / target).exists():
            broken.append(target)
    assert not broken, f"{path.relative_to(ROOT)} links to missing files: {broken}"


# The capability table of docs/drivers.md, checked against the classes.
DRIVER_CLASSES = {
    "memory": "queuekit.drivers.memory:MemoryDriver",
    "sync": "queuekit.drivers.sync:SyncDriver",
    "file": "queuekit.drivers.file:FileDriver",
    "SQLite": "queuekit.drivers.database.sqlite:SQLiteDriver",
    "PostgreSQL": "queuekit.drivers.database.postgres:PostgresDriver",
    "MySQL": "queuekit.drivers.database.mysql:MySQLDriver",
    "redis": "queuekit.drivers.redis:RedisDriver",
}


def _capability_table() -> tuple[list[str], dict[str, list[str]]]:
    text = (ROOT / "docs" / "drivers.md").read_text(encoding="utf-8")
    rows = [
        [cell.strip().strip("`") for cell in line.strip().strip("|").split("|")]
        for line in text.splitlines()
        if line.startswith("| ")
    ]
    header = next(row for row in rows if row[0] == "Capability")
    start = rows.index(header)
    table: dict[str, list[str]] = {}
    for row in rows[start + 1 :]:
        if not row[0].isupper():
            break
        table[row[0]] = row[1:]
    return header[1:], table


@pytest.mark.parametrize("column", list(DRIVER_CLASSES))
def test_capability_table_matches_the_drivers(column: str) -> None:
    from queuekit import Capability

    module_name, class_name = DRIVER_CLASSES[column].split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        pytest.skip(f"{module_name} is not importable here: {e}")
    declared = getattr(module, class_name).capabilities
    drivers, table = _capability_table()
    assert column in drivers, f"docs/drivers.md has no {column!r} column"
    index = drivers.index(column)
    documented = {name for name, cells in table.items() if cells[index].startswith("yes")}
    actual = {flag.name for flag in Capability if flag.name != "NONE" and flag in declared}
    assert set(table) == {f.name for f in Capability if f.name != "NONE"}
    assert documented == actual, f"docs/drivers.md: the {column} column is out of date"
