"""Sessions for CI and contributors: the suite on every supported Python, the docs, the package.

    nox -s tests-3.12 tests-3.13    # the suite (shorter soak) on each interpreter found on PATH
    nox -s docs                     # mkdocs build --strict
    nox -s package                  # build, check, install the wheel outside the clone, run the examples' tests

.ci/run runs the suite on 3.11 itself (the README's test command) and these
sessions for the rest.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import nox

nox.options.default_venv_backend = "venv"
nox.options.error_on_missing_interpreters = True
nox.options.sessions = ["tests", "docs", "package"]

ROOT = Path(__file__).resolve().parent
PYTHONS = ["3.11", "3.12", "3.13"]
SOAK_SECONDS = "10"
"""The chaos soak on 3.12 and 3.13: shorter than 3.11's 45 s, enough for every fault kind to fire."""


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """The test suite on two workers, the soak shortened."""
    session.install("-q", "-e", ".[dev]")
    # The Autobahn run (about 5 minutes) checks the wire, which does not change with the interpreter: 3.11 only.
    autobahn = [] if session.python == "3.11" else ["--ignore", "tests/conformance"]
    session.run("python", "-m", "pytest", "-n", "2", "-q", "--soak-seconds", SOAK_SECONDS, *autobahn, *session.posargs)


@nox.session(python="3.11")
def docs(session: nox.Session) -> None:
    """The documentation site, strictly: a broken link or a missing reference fails."""
    session.install("-q", "-e", ".[docs]")
    session.run("mkdocs", "build", "--strict", "--site-dir", str(Path(session.create_tmp()) / "site"))


@nox.session(python="3.11")
def package(session: nox.Session) -> None:
    """Build the wheel and the sdist, check them, and test the examples against the installed wheel.

    The wheel goes into a fresh virtual environment outside the clone, and the
    examples' tests run from outside it too, so that they import the installed
    package, not the working tree.
    """
    session.install("-q", "build", "twine", "check-wheel-contents")
    dist = Path(session.create_tmp()) / "dist"
    shutil.rmtree(dist, ignore_errors=True)
    session.run("python", "-m", "build", "--outdir", str(dist), silent=True)
    wheels = sorted(dist.glob("*.whl"))
    sdists = sorted(dist.glob("*.tar.gz"))
    if len(wheels) != 1 or len(sdists) != 1:
        session.error(f"expected one wheel and one sdist in {dist}, got {[p.name for p in dist.iterdir()]}")
    session.run("twine", "check", "--strict", *map(str, wheels + sdists))
    session.run("check-wheel-contents", str(wheels[0]))

    with tempfile.TemporaryDirectory(prefix="wsclient-installed-") as outside:
        work = Path(outside)
        venv = work / "venv"
        session.run("python", "-m", "venv", str(venv))
        python = str(venv / "bin" / "python")
        session.run(python, "-m", "pip", "install", "-q", f"{wheels[0]}[test]", external=True)
        # The examples and their tests, copied beside the environment: nothing of the clone is importable.
        shutil.copytree(ROOT / "examples", work / "examples")
        (work / "tests").mkdir()
        for name in ("conftest.py", "helpers.py", "test_examples.py"):
            shutil.copy(ROOT / "tests" / name, work / "tests" / name)
        (work / "pytest.ini").write_text(
            "[pytest]\nasyncio_mode = auto\ntimeout = 60\nfilterwarnings =\n    error\naddopts = -p no:cacheprovider\n"
        )
        session.chdir(work)
        check = "import wsclient, pathlib; assert 'site-packages' in pathlib.Path(wsclient.__file__).parts, wsclient"
        session.run(python, "-c", check, external=True)
        session.run(python, "-m", "pytest", "-q", "tests/test_examples.py", external=True)
        session.run(str(venv / "bin" / "wsclient"), "--version", external=True)
