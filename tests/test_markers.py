"""CI chooses tests by marker (pyproject.toml), each test file's by its role (tests/conftest.py TEST_FILES): every
test file has a role, every marker the suite selects by is declared, and a test marked against its file's role is
refused at collection."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import tomllib
from conftest import BOTH, CURRENT, SELECTING_MARKS, TEST_FILES, TPU_AOT, marker_problem

REPO = Path(__file__).resolve().parents[1]


def test_every_test_file_has_a_role_and_every_role_a_file():
    on_disk = {path.name for path in (REPO / "tests").glob("test_*.py")}
    assert not on_disk - set(TEST_FILES), "add these to TEST_FILES in tests/conftest.py"
    assert not set(TEST_FILES) - on_disk, "TEST_FILES names files that are gone"


def test_the_selecting_markers_are_the_declared_ones():
    """pyproject.toml declares them (with --strict-markers, a misspelt one fails collection)."""
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["markers"]
    assert {line.split(":")[0] for line in declared} == SELECTING_MARKS


def test_a_mark_the_role_does_not_allow_or_a_file_without_a_role_is_a_problem():
    roles = {"test_a.py": BOTH, "test_b.py": CURRENT, "test_c.py": TPU_AOT}
    assert marker_problem("test_a.py", {"parametrize", "current_jax_only"}, roles) is None
    assert marker_problem("test_b.py", {"current_jax_only", "tpu_aot"}, roles) is None
    assert "marked tpu_aot" in marker_problem("test_a.py", {"tpu_aot"}, roles)
    assert "marked distributed" in marker_problem("test_c.py", {"tpu_aot", "distributed"}, roles)
    missing = marker_problem("test_new.py", set(), roles)
    assert missing == "tests/test_new.py has no role: add a line for it to TEST_FILES in tests/conftest.py"


def test_collection_refuses_a_test_marked_against_its_files_role(tmp_path):
    """A both-environment file whose test asks for libtpu: collection stops and names it."""
    (tmp_path / "test_cli.py").write_text("import pytest\n\n@pytest.mark.tpu_aot\ndef test_x():\n    pass\n")
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'tests'}{os.pathsep}{REPO}"}
    command = [sys.executable, "-m", "pytest", "-p", "conftest", "--collect-only", "-q", "-p", "no:cacheprovider"]
    result = subprocess.run([*command, "test_cli.py"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode != 0
    assert (
        "test_cli.py::test_x: marked tpu_aot, which its file's role allows on no test" in result.stdout + result.stderr
    )


def test_the_roles_name_only_selecting_markers():
    assert all((role.marks | role.case_marks) <= SELECTING_MARKS for role in TEST_FILES.values())
