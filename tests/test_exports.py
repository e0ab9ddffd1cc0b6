"""The public face: ``__all__`` is honest and every public name is documented."""

from __future__ import annotations

import inspect

import wsclient
import wsclient.testing


def test_all_names_exist_and_nothing_public_is_missing() -> None:
    for module in (wsclient, wsclient.testing):
        assert sorted(module.__all__) == sorted(set(module.__all__))
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name} is in __all__ but missing"
    public_classes = {
        name
        for name, value in vars(wsclient).items()
        if not name.startswith("_") and inspect.isclass(value) and value.__module__.startswith("wsclient")
    }
    assert public_classes <= set(wsclient.__all__)


def test_every_public_name_is_documented() -> None:
    for module in (wsclient, wsclient.testing):
        for name in module.__all__:
            value = getattr(module, name)
            if inspect.isclass(value) or inspect.isfunction(value):
                assert inspect.getdoc(value), f"{module.__name__}.{name} has no docstring"


def test_client_methods_are_documented() -> None:
    for name, member in inspect.getmembers(wsclient.Client):
        if not name.startswith("_") and (inspect.isfunction(member) or isinstance(member, property)):
            assert inspect.getdoc(member), f"Client.{name} has no docstring"
