"""The package's metadata: one version everywhere, one pin per package, a license, a changelog section."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from importlib.metadata import metadata, version
from pathlib import Path

import wsclient

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_one_version_for_the_package_the_metadata_and_the_command() -> None:
    assert version("wsclient-resilient") == wsclient.__version__
    done = subprocess.run(
        [sys.executable, "-m", "wsclient", "--version"], capture_output=True, text=True, timeout=30, check=True
    )
    assert done.stdout.split() == ["wsclient", wsclient.__version__]


def test_the_changelog_has_a_section_for_this_version_under_an_unreleased_one() -> None:
    headings = re.findall(r"^## \[([^]]+)\]", (ROOT / "CHANGELOG.md").read_text(), re.MULTILINE)
    assert headings[:2] == ["Unreleased", wsclient.__version__]


def test_every_package_is_pinned_in_one_place() -> None:
    pins: dict[str, set[str]] = {}
    for extra, requirements in PROJECT["optional-dependencies"].items():
        names = []
        for requirement in requirements:
            match = re.match(r"([A-Za-z0-9_.-]+)(\[[^]]*\])?(.*)", requirement)
            assert match, requirement
            name = match[1].lower().replace("_", "-")
            names.append(name)
            if name != PROJECT["name"]:
                pins.setdefault(name, set()).add(match[3].strip())
        assert len(names) == len(set(names)), f"extra {extra} names a package twice"
    assert {name: specs for name, specs in pins.items() if len(specs) > 1} == {}


def test_the_license_and_the_project_urls_are_in_the_metadata() -> None:
    meta = metadata("wsclient-resilient")
    assert meta["License-Expression"] == "MIT"
    assert "MIT License" in (ROOT / "LICENSE").read_text()
    urls = dict(url.split(", ", 1) for url in meta.get_all("Project-URL") or [])
    assert {"Documentation", "Changelog", "Source", "Issues"} <= set(urls)
    assert all(url.startswith("https://") for url in urls.values())
    classifiers = meta.get_all("Classifier") or []
    for minor in (11, 12, 13):
        assert f"Programming Language :: Python :: 3.{minor}" in classifiers
