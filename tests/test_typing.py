"""The types users see: each ``# R:`` line reveals that type and each ``# E:`` line is that error, nothing else."""

from __future__ import annotations

import re
from pathlib import Path

from mypy import api

CASES = Path(__file__).parent / "typing"
CACHE = Path(__file__).resolve().parent.parent / ".mypy_cache"
"""mypy's own cache of the project, which ``mypy`` fills: the library and its dependencies are not checked again."""


def test_the_text_option_and_the_close_policy_type_check_as_documented() -> None:
    path = CASES / "text_option.py"
    stdout, _, _ = api.run(["--strict", f"--cache-dir={CACHE}", str(path)])
    found: dict[int, str] = {}
    for line in stdout.splitlines():
        match = re.match(rf".*{re.escape(path.name)}:(\d+): (note: Revealed type is \"(.*)\"|error: .*\[(.*)\])$", line)
        if match:
            found[int(match[1])] = match[3] or match[4]
    expected = {
        number: marker.group(1)
        for number, text in enumerate(path.read_text().splitlines(), 1)
        if (marker := re.search(r"# [RE]: (.*)$", text))
    }
    assert found == expected, stdout
