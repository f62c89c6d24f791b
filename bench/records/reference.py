"""docs/records.md, the record reference, generated from the schema so that it cannot drift from it.

``python -m bench.records.reference`` rewrites the page; tests/test_docs.py fails when the committed page differs
from what this writes. Every field comes from a section dataclass of bench.records.schema, with its type and the
comment beside its declaration (the unit, where the name does not say it).
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import sys
from pathlib import Path

from bench.records import schema

PAGE = Path(__file__).resolve().parents[2] / "docs" / "records.md"
_FIELD = re.compile(r"^\s+(\w+): ([^#=]+?)(?:\s*=[^#]*)?(?:\s*#\s*(.*))?$")


def _comments(section: type) -> dict[str, str]:
    """Each field's trailing comment in the section's source."""
    found = {}
    for line in inspect.getsource(section).splitlines():
        match = _FIELD.match(line)
        if match and match.group(3):
            found[match.group(1)] = match.group(3).strip()
    return found


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render() -> str:
    lines = [
        "# Records",
        "",
        "Generated from `bench/records/schema.py` by `python -m bench.records.reference`; do not edit by hand.",
        "",
        f"A record is one flat JSON line of `results.jsonl` (schema version {schema.SCHEMA_VERSION}; older records are",
        "upgraded on read). Every record has the fields "
        + ", ".join(f"`{name}`" for name in schema.REQUIRED_FIELDS)
        + "; the others appear where they apply. Kinds: "
        + ", ".join(f"`{kind.value}`" for kind in schema.RecordKind)
        + "; statuses: "
        + ", ".join(f"`{status.value}`" for status in schema.Status)
        + ".",
        "",
        "Field names follow one rule:",
        "",
        *(f"- {clause}" for clause in schema.NAMING_RULE),
        "",
        "Communication fields are built by `comm_key` and its siblings: `comm_<axis>_<kind>_<metric>` for axes "
        + ", ".join(f"`{a}`" for a in schema.COMM_AXES)
        + " and metrics "
        + ", ".join(f"`{m}`" for m in schema.COMM_METRICS)
        + ", the byte metrics ending `_per_device`.",
    ]
    for section in schema.SECTIONS:
        comments = _comments(section)
        doc = inspect.getdoc(section)
        lines += ["", f"## {section.__name__}", ""]
        if doc and not doc.startswith(section.__name__ + "("):
            lines += [" ".join(doc.split()), ""]
        lines += ["| field | type | meaning |", "| --- | --- | --- |"]
        for field in dataclasses.fields(section):
            annotation = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", str(field.type))
            lines.append(f"| `{field.name}` | `{_cell(annotation)}` | {_cell(comments.get(field.name, ''))} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    PAGE.parent.mkdir(exist_ok=True)
    PAGE.write_text(render())
    print(f"wrote {PAGE}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
