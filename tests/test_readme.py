"""The README stays true: its events table, and its snippets."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()

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
    table = README.split("| event | level | fields | when |", 1)[1].split("\n\n", 1)[0]
    return dict(re.findall(r"^\| `(\w+)` \| (\w+) \|", table, re.MULTILINE))


def test_the_readme_lists_every_logged_event_at_its_level() -> None:
    logged = _logged_events() | _DYNAMIC
    assert len(logged) > 15  # the walk found the library's calls
    assert _documented_events() == logged


def _python_blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", README, re.MULTILINE | re.DOTALL)


def test_every_python_snippet_compiles() -> None:
    blocks = _python_blocks()
    assert len(blocks) > 10
    for block in blocks:
        compile(block, "README.md", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


def test_the_logging_snippets_run_and_leave_stdout_to_the_program() -> None:
    section = README.split("### Logging with the standard library", 1)[1].split("\n## ", 1)[0]
    snippets = re.findall(r"^```python\n(.*?)^```$", section, re.MULTILINE | re.DOTALL)
    assert len(snippets) == 3
    for snippet in snippets:
        program = snippet + "\nimport wsclient.logs\nwsclient.logs.get_logger().warning('probe', n=1)\n"
        done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=30, check=True)
        assert done.stdout == ""
        assert "probe" in done.stderr
