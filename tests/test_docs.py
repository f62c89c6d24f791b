"""The README and docs/ hold: the record reference is the schema's, every relative link resolves, the README stays
a front door, and no issue-tracker number of this project stands in the code, docs or reports."""

import re
import subprocess
from pathlib import Path

import pytest

from bench.records import reference

REPO = Path(__file__).resolve().parents[1]
README_MAX_LINES = 150
_LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
# "issue" followed by a number (or joined to one by a hyphen): the project's own tracker, which a reader of the
# repository cannot see.
# Upstream trackers are cited as owner/repo#N.
_ISSUE_NUMBER = re.compile(r"\bissues? ?#?\d+|\bissue-\d+", re.IGNORECASE)


def _tracked(*patterns: str) -> list[Path]:
    out = subprocess.run(["git", "ls-files", *patterns], cwd=REPO, capture_output=True, text=True, check=True).stdout
    return [REPO / line for line in out.splitlines()]


def test_the_record_reference_is_generated_from_the_schema():
    assert reference.PAGE.read_text() == reference.render(), (
        "docs/records.md differs from the schema: run `python -m bench.records.reference`"
    )


def test_the_reference_lists_every_declared_field():
    page = reference.render()
    from bench.records import schema

    for section in schema.SECTIONS:
        for field in section.__dataclass_fields__:
            assert f"| `{field}` |" in page, field


def test_the_readme_is_a_front_door():
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; methodology belongs in docs/"
    text = "\n".join(lines)
    assert "python3 -m nox -s tests tests_xmap" in text  # the test command CI runs (.ci/run)
    assert "python3 -m nox\n" in text  # the main job


@pytest.mark.parametrize("page", ["README.md", *sorted(p.name for p in (REPO / "docs").glob("*.md"))])
def test_every_relative_link_resolves(page):
    path = REPO / page if page == "README.md" else REPO / "docs" / page
    broken = [
        target
        for target in _LINK.findall(path.read_text())
        if "://" not in target and not (path.parent / target).exists()
    ]
    assert not broken, f"{page} links to missing files: {broken}"


def test_the_ci_script_runs_the_readme_test_command():
    assert "python3 -m nox -s tests tests_xmap" in (REPO / ".ci" / "run").read_text()


def test_no_issue_numbers_in_code_docs_or_reports():
    found = []
    for path in _tracked("*.py", "*.md", "*.toml", ".ci/*"):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if _ISSUE_NUMBER.search(line):
                found.append(f"{path.relative_to(REPO)}:{number}: {line.strip()[:100]}")
    assert not found, "issue numbers mean nothing to a reader of the repository:\n" + "\n".join(found)
