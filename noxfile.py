"""nox drives the suite: tests in both JAX environments, a session per variant, the sweep, profiles, reports.

`nox` with no arguments runs the default sessions: the `cpu`-preset sweep and its report (the main job).
"""

from __future__ import annotations

import sys
from pathlib import Path

import nox

ROOT = Path(__file__).parent
sys.path.insert(0, str(ROOT))
from model.config import Strategy, all_variants  # noqa: E402  (no JAX import: safe in nox's own interpreter)

nox.options.default_venv_backend = "venv"
nox.options.reuse_venv = "yes"
nox.options.sessions = ["sweep"]

CURRENT = "requirements/current.txt"
XMAP = "requirements/xmap.txt"


def install(session: nox.Session, requirements: str) -> None:
    session.install("-q", "-r", requirements)


def pytest_args(session: nox.Session) -> list[str]:
    return ["-q", "-p", "no:randomly", "--benchmark-disable", *session.posargs]


@nox.session
def tests(session: nox.Session) -> None:
    """Run the tests on current JAX (simulated 8-device CPU mesh)."""
    install(session, CURRENT)
    session.run("python", "-m", "pytest", *pytest_args(session))


@nox.session
def tests_xmap(session: nox.Session) -> None:
    """Run the tests on jax 0.4.30, where xmap exists (xmap tests must run here, not skip)."""
    install(session, XMAP)
    session.run("python", "-m", "pytest", *pytest_args(session), env={"GPTJ_BENCH_REQUIRE_XMAP": "1"})


@nox.session
def lint(session: nox.Session) -> None:
    """ruff lint and format check."""
    session.install("-q", "ruff==0.17.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


def environment_for(variant_name: str) -> str:
    """xmap variants need jax 0.4.30; the rest run on current JAX."""
    return XMAP if variant_name.split("-")[2] == Strategy.XMAP.value else CURRENT


VARIANT_NAMES = [v.name for v in all_variants()]
