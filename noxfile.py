"""Development sessions: ``python3 -m nox -s tests`` (or ``nox -s tests``).

Sessions:

* ``tests``: the whole test suite (pytest; arguments after ``--`` go to pytest).
* ``lint``: ruff check and ruff format --check.
* ``typing``: mypy --strict on src/.
* ``bench``: benchmarks/bench_scale.py, against servers it starts itself (arguments
  after ``--`` go to it); the report goes to benchmarks/results/latest.md.
* ``demo``: the live FastAPI demo (dashboard, simulated desk) on the in-memory backend.
* ``console_demo``: the console demo on the in-memory backend.
* ``docs``: the docs site, ``mkdocs build --strict``.

Every session runs in its own virtual environment made with the Python that
runs nox (``venv`` backend), so a fresh machine needs only Python and
``pip install nox``.  Outside CI the environments are reused between runs.
"""

from __future__ import annotations

import os

import nox
import nox.project
from nox.command import CommandFailed

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = not os.environ.get("CI")
nox.options.sessions = ["tests", "lint", "typing"]

PYPROJECT = nox.project.load_toml("pyproject.toml")
LINT_PATHS = ("src", "tests", "benchmarks", "examples", "noxfile.py")
# Pinned so that lint and typing give the same verdict on every machine; bump
# them on purpose (and fix what the new versions report) in a commit of its own.
RUFF = "ruff==0.17.6"
MYPY = "mypy==2.4.1"
NOT_FOR_TESTS = frozenset({"docs"})
"""Extras the test environment does not need."""


def test_extras() -> str:
    """Every optional-dependency group of pyproject.toml but the docs ones, so
    that a new extra (a driver, a host framework) is tested without editing
    this file: e.g. ``mongodb,redis,test``."""
    extras = PYPROJECT["project"].get("optional-dependencies", {})
    return ",".join(sorted(name for name in extras if name not in NOT_FOR_TESTS))


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite.  Arguments after ``--`` go to pytest."""
    session.install(f".[{test_extras()}]")
    try:
        session.run("pytest", *session.posargs)
    except CommandFailed as failure:
        if getattr(failure, "return_code", None) == 5:
            session.error(
                "pytest collected no tests (exit code 5): the selection matched nothing, "
                "or the test suite failed to collect"
            )
        raise


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install(RUFF)
    session.run("ruff", "check", *LINT_PATHS)
    session.run("ruff", "format", "--check", *LINT_PATHS)


@nox.session
def typing(session: nox.Session) -> None:
    """mypy --strict on src/ (configuration in pyproject.toml)."""
    session.install("-e", f".[{test_extras()}]", MYPY)
    session.run("mypy", "--strict", "src")


@nox.session
def bench(session: nox.Session) -> None:
    """The benchmarks (docs/performance.md): they start their own redis-server
    and SecantusDB on free loopback ports.  Markdown tables go to stdout and to
    ``benchmarks/results/latest.md``.  Arguments after ``--`` go to
    ``benchmarks/bench_scale.py``, e.g. ``nox -s bench -- --quick`` (a smoke
    run), ``--strict`` (exit 1 when a target fails), ``--skip burst``."""
    session.install(".[mongodb,redis,test]")
    session.run(
        "python",
        "benchmarks/bench_scale.py",
        "--output",
        "benchmarks/results/latest.md",
        *session.posargs,
    )


@nox.session
def demo(session: nox.Session) -> None:
    """The live demo: the FastAPI example app on the in-memory backend with
    simulated customers and executives; prints the dashboard URL.  Arguments
    after ``--`` go to it, e.g. ``-- --port 8080`` or ``-- --duration 30``."""
    session.install(".[examples]")
    session.run("python", "-m", "examples.fastapi_app.demo", *session.posargs)


@nox.session
def console_demo(session: nox.Session) -> None:
    """The console demo on the in-memory backend (virtual time, seconds)."""
    session.install(".")
    session.run("python", "examples/console_demo.py", *session.posargs)


@nox.session
def docs(session: nox.Session) -> None:
    """Build the docs site with MkDocs in strict mode (warnings fail)."""
    docs_extra = PYPROJECT["project"]["optional-dependencies"]["docs"]
    session.install(*docs_extra, RUFF)
    session.env["NO_MKDOCS_2_WARNING"] = "1"
    session.run("mkdocs", "build", "--strict", "--site-dir", "site")
