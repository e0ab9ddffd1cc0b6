"""The types users see: each ``# R:`` line reveals that type and each ``# E:`` line is that error, nothing else.

And what ``help()`` shows of the constructors: every keyword argument by name, with its default.
"""

from __future__ import annotations

import inspect
import pydoc
import re
from pathlib import Path

import pytest
from mypy import api

import wsclient
import wsclient.jsonrpc
import wsclient.sync

CASES = Path(__file__).parent / "typing"
CACHE = Path(__file__).resolve().parent.parent / ".mypy_cache"
"""mypy's own cache of the project, which ``mypy`` fills: the library and its dependencies are not checked again."""


@pytest.mark.parametrize("case", ["text_option.py", "sync_options.py"])
def test_the_options_type_check_as_documented(case: str) -> None:
    path = CASES / case
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


def test_the_sync_client_takes_the_asyncio_clients_arguments_with_the_same_defaults() -> None:
    asyncio_parameters = inspect.signature(wsclient.Client.__init__).parameters
    sync_parameters = inspect.signature(wsclient.sync.Client.__init__).parameters
    assert list(sync_parameters) == list(asyncio_parameters)
    for name, parameter in sync_parameters.items():
        assert parameter.kind == asyncio_parameters[name].kind, name
        default = asyncio_parameters[name].default
        assert parameter.default is default or parameter.default == default, name


def test_help_shows_every_argument_and_readable_defaults() -> None:
    for cls in (wsclient.Client, wsclient.sync.Client):
        text = pydoc.render_doc(cls, renderer=pydoc.plaintext)
        for name in inspect.signature(cls.__init__).parameters:
            if name != "self":
                assert f"{name}:" in text, f"{cls.__module__}.{cls.__qualname__}: {name}"
        assert "compression: 'Any' = 'deflate' (None on picows)" in text
    for module in (wsclient, wsclient.sync, wsclient.jsonrpc):
        assert " object at 0x" not in pydoc.render_doc(module, renderer=pydoc.plaintext), module.__name__
