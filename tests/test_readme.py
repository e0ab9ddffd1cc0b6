"""The README and the documentation stay true: every Python block type-checks and runs, the events table is whole.

Every ```` ```python ```` block of ``README.md`` and ``docs/`` is type-checked with
``mypy --strict``, each as a module of its own, and then run. A block that
cannot run is marked on the line before it, and so is a block of pytest tests:

    <!-- snippet: not run (connects to example.com) -->
    <!-- snippet: pytest -->
"""

from __future__ import annotations

import ast
import inspect
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from mypy import api

import wsclient

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = [README, *sorted(DOCS.rglob("*.md"))]
CACHE = ROOT / ".mypy_cache"
"""mypy's own cache of the project, which ``mypy`` fills: the library and its dependencies are not checked again."""

_BLOCK = re.compile(r"^```python\n(.*?)^```$", re.MULTILINE | re.DOTALL)
_MARK = re.compile(r"<!-- snippet: (not run \(.+\)|pytest) -->\n$")


@dataclass(frozen=True)
class Snippet:
    page: Path
    line: int
    code: str
    mode: str
    """``"run"``, ``"pytest"`` or ``"not run (why)"``."""

    @property
    def name(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"

    @property
    def module(self) -> str:
        stem = re.sub(r"\W", "_", str(self.page.relative_to(ROOT).with_suffix("")))
        return f"{'test_' if self.mode == 'pytest' else ''}snippet_{stem}_{self.line}"


def _snippets() -> list[Snippet]:
    snippets = []
    for page in PAGES:
        text = page.read_text()
        for match in _BLOCK.finditer(text):
            before = text[: match.start()]
            mark = _MARK.search(before[-200:])
            snippets.append(Snippet(page, before.count("\n") + 2, match[1], mark[1] if mark else "run"))
    return snippets


SNIPPETS = _snippets()
RUNNABLE = [snippet for snippet in SNIPPETS if snippet.mode == "run"]
TESTS = [snippet for snippet in SNIPPETS if snippet.mode == "pytest"]


def test_every_page_has_its_snippets_found_and_every_mark_names_a_block() -> None:
    assert len(SNIPPETS) > 20
    assert RUNNABLE
    assert TESTS
    for page in PAGES:
        text = page.read_text()
        marks = len(re.findall(r"<!-- snippet:", text))
        marked = sum(1 for snippet in SNIPPETS if snippet.page == page and snippet.mode != "run")
        assert marks == marked, f"{page.name}: a snippet mark that is not on the line before a python block"


def test_every_snippet_type_checks_with_mypy_strict(tmp_path: Path) -> None:
    files = {}
    for snippet in SNIPPETS:
        path = tmp_path / f"{snippet.module}.py"
        path.write_text(snippet.code)
        files[path.name] = snippet
    stdout, stderr, status = api.run(["--strict", f"--cache-dir={CACHE}", *map(str, tmp_path.glob("*.py"))])
    errors = []
    for line in stdout.splitlines():
        match = re.match(r".*?([\w]+\.py):(\d+): (error: .*)$", line)
        if match and match[1] in files:
            snippet = files[match[1]]
            errors.append(f"{snippet.page.relative_to(ROOT)}:{snippet.line + int(match[2]) - 1}: {match[3]}")
    assert errors == [], "\n".join(errors)
    assert status == 0, stdout + stderr


@pytest.mark.parametrize("snippet", RUNNABLE, ids=lambda snippet: snippet.name)
def test_the_runnable_snippets_run(snippet: Snippet, tmp_path: Path) -> None:
    path = tmp_path / f"{snippet.module}.py"
    path.write_text(snippet.code)
    done = subprocess.run(
        [sys.executable, "-W", "error", str(path)],
        capture_output=True,
        text=True,
        timeout=45,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("snippet", TESTS, ids=lambda snippet: snippet.name)
def test_the_pytest_snippets_pass(snippet: Snippet, tmp_path: Path) -> None:
    path = tmp_path / f"{snippet.module}.py"
    path.write_text(snippet.code)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "error", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"\d+ passed", done.stdout), done.stdout


def test_the_readme_is_a_front_page() -> None:
    text = README.read_text()
    assert len(text.splitlines()) <= 300
    assert "python -m pytest -n 2" in text
    assert "python -m pytest -n 2" in (ROOT / ".ci" / "run").read_text()
    # The package index shows the README away from the repository: every link is absolute.
    relative = [link for link in re.findall(r"\]\(([^)]+)\)", text) if not link.startswith("https://")]
    assert relative == []


def test_the_configuration_page_names_every_argument_of_the_client() -> None:
    page = (DOCS / "configuration.md").read_text()
    names = list(inspect.signature(wsclient.Client.__init__).parameters)[1:]
    missing = [name for name in names if f"`{name}`" not in page]
    assert missing == []


_LEVELS = {"debug": "debug", "info": "info", "warning": "warning", "error": "error", "exception": "error"}
# Events named at run time by the session: the causes that make it abort a connection.
_DYNAMIC = {"heartbeat_timeout": "warning", "idle_timeout": "warning", "write_stalled": "warning"}


def _logged_events() -> dict[str, str]:
    """``{event: level}`` for every ``<...log...>.<level>("event", ...)`` call in the library."""
    events: dict[str, str] = {}
    for path in (ROOT / "wsclient").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            level = _LEVELS.get(node.func.attr)
            receiver = ast.unparse(node.func.value)
            if level is None or "log" not in receiver or "structlog" in receiver:
                continue
            if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                events[node.args[0].value] = level
    return events


def _documented_events() -> dict[str, str]:
    page = (DOCS / "logging.md").read_text()
    table = page.split("| event | level | fields | when |", 1)[1].split("\n\n", 1)[0]
    return dict(re.findall(r"^\| `(\w+)` \| (\w+) \|", table, re.MULTILINE))


def test_the_logging_page_lists_every_logged_event_at_its_level() -> None:
    logged = _logged_events() | _DYNAMIC
    assert len(logged) > 15  # the walk found the library's calls
    assert _documented_events() == logged


def test_the_logging_snippets_run_and_leave_stdout_to_the_program() -> None:
    page = (DOCS / "logging.md").read_text()
    section = page.split("## Logging with the standard library", 1)[1]
    snippets = _BLOCK.findall(section)
    assert len(snippets) == 3
    for snippet in snippets:
        program = snippet + "\nimport wsclient.logs\nwsclient.logs.get_logger().warning('probe', n=1)\n"
        done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=30, check=True)
        assert done.stdout == ""
        assert "probe" in done.stderr


def test_the_api_reference_has_every_public_name() -> None:
    import wsclient.jsonrpc
    import wsclient.sync
    import wsclient.testing

    documented = set(
        re.findall(r"^::: ([\w.]+)$", "".join(p.read_text() for p in (DOCS / "reference").glob("*.md")), re.M)
    )
    for module in (wsclient, wsclient.sync, wsclient.testing, wsclient.jsonrpc):
        missing = [name for name in module.__all__ if f"{module.__name__}.{name}" not in documented]
        assert missing == [], f"{module.__name__}: {missing} not in docs/reference/"
