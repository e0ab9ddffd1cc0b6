"""Every public parameter is described where it is defined, so the API reference and ``help()`` show it.

A function's or method's parameters are in its docstring's ``Args:`` section;
a class's constructor parameters in the class's or ``__init__``'s ``Args:``;
a dataclass field in a docstring of its own (the string below the field) or
in the class's ``Args:``/``Attributes:``.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import itertools
import re
import textwrap
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import wsclient
import wsclient.jsonrpc
import wsclient.sync
import wsclient.testing

MODULES = (wsclient, wsclient.sync, wsclient.testing, wsclient.jsonrpc)
INTERNAL = {
    # Driven by the supervisor and the heartbeat; an application never calls them.
    "wsclient.Session.__init__",
    "wsclient.Session.bind",
    "wsclient.Session.write_stalled",
    "wsclient.Session.send_heartbeat",
    "wsclient.Session.abort",
    "wsclient.Session.close",
    "wsclient.Session.run",
    # Made by the sync client for its on_connect.
    "wsclient.sync.Session.__init__",
}


def _section(doc: str, *names: str) -> str:
    """The text of the docstring's sections with these names (``Args:``, ``Attributes:``)."""
    found = []
    for name in names:
        if f"\n{name}:\n" in f"\n{doc}":
            body = f"\n{doc}".split(f"\n{name}:\n", 1)[1]
            found.append(re.split(r"\n\S", body, maxsplit=1)[0])
    return "\n".join(found)


def _described(doc: str, parameter: str, *sections: str) -> bool:
    return re.search(rf"^\s+\**{re.escape(parameter)}( \(.*\))?:", _section(doc, *sections), re.MULTILINE) is not None


def _field_docstrings(cls: type) -> set[str]:
    """Fields of ``cls`` followed by a string: griffe documents them as attributes."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    return {
        node.target.id
        for node, after in itertools.pairwise(body)
        if isinstance(node, ast.AnnAssign)
        and isinstance(node.target, ast.Name)
        and isinstance(after, ast.Expr)
        and isinstance(after.value, ast.Constant)
        and isinstance(after.value.value, str)
    }


def _parameters(function: Callable[..., Any]) -> list[str]:
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):
        return []
    return [name for name in parameters if name not in ("self", "cls")]


def _callables() -> Iterator[tuple[str, Any, Any]]:
    """``(qualified name, owner class or None, function)`` for every public callable of the modules."""
    for module in MODULES:
        for name in module.__all__:
            value = getattr(module, name)
            qualified = f"{module.__name__}.{name}"
            if inspect.isfunction(value) and not name.isupper():  # REPLY_KEY is a value, made by a function
                yield qualified, None, value
            elif (
                inspect.isclass(value)
                and value.__module__.startswith("wsclient")
                and not getattr(value, "_is_protocol", False)  # a Protocol's __init__ is typing's
            ):
                if "__init__" in vars(value):
                    yield f"{qualified}.__init__", value, vars(value)["__init__"]
                for member, function in vars(value).items():
                    if not member.startswith("_") and inspect.isfunction(function):
                        yield f"{qualified}.{member}", value, function


CALLABLES = sorted(_callables(), key=lambda item: item[0])


@pytest.mark.parametrize(("name", "owner", "function"), CALLABLES, ids=[item[0] for item in CALLABLES])
def test_every_public_parameter_is_described(name: str, owner: Any, function: Callable[..., Any]) -> None:
    if name in INTERNAL:
        return
    doc = inspect.getdoc(function) or ""
    if function.__name__ == "__init__":
        doc = f"{inspect.getdoc(owner) or ''}\n\n{doc}"
    fields = _field_docstrings(owner) if owner is not None and dataclasses.is_dataclass(owner) else set()
    missing = [
        parameter
        for parameter in _parameters(function)
        if parameter not in fields and not _described(doc, parameter, "Args", "Attributes")
    ]
    assert missing == [], f"{name}: {missing} not described"


def test_the_walk_finds_the_public_api() -> None:
    names = {item[0] for item in CALLABLES}
    assert {"wsclient.Client.__init__", "wsclient.sync.Client.__init__", "wsclient.jsonrpc.JsonRpc.call"} <= names
    assert len(names) > 60
