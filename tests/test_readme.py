"""The README stays true: every event the library logs is in its table, at the level it is logged."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()

_LEVELS = {"debug": "debug", "info": "info", "warning": "warning", "error": "error", "exception": "error"}
# Events named at run time by the session: the causes that make it abort a connection.
_DYNAMIC = {"heartbeat_timeout": "warning", "idle_timeout": "warning"}


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
