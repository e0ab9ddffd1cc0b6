"""The public face: ``__all__`` is honest and every public name is documented."""

from __future__ import annotations

import inspect
import subprocess
import sys

import wsclient
import wsclient.sync
import wsclient.testing


def test_all_names_exist_and_nothing_public_is_missing() -> None:
    for module in (wsclient, wsclient.testing, wsclient.sync):
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
    for module in (wsclient, wsclient.testing, wsclient.sync):
        for name in module.__all__:
            value = getattr(module, name)
            if inspect.isclass(value) or inspect.isfunction(value):
                assert inspect.getdoc(value), f"{module.__name__}.{name} has no docstring"


def test_client_methods_are_documented() -> None:
    for cls in (wsclient.Client, wsclient.sync.Client, wsclient.sync.Session):
        for name, member in inspect.getmembers(cls):
            if not name.startswith("_") and (inspect.isfunction(member) or isinstance(member, property)):
                assert inspect.getdoc(member), f"{cls.__qualname__}.{name} has no docstring"


def test_sync_is_a_submodule_the_core_never_imports() -> None:
    assert wsclient.sync.__all__ == ["Client", "Session"]
    assert "sync" not in wsclient.__all__
    check = "import sys, wsclient, wsclient.testing, wsclient.cli; assert 'wsclient.sync' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", check], check=False).returncode == 0
