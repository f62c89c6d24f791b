"""Every committed example report (reports/**/REPORT.md), rendered again from its records by today's writer.

Each report names the command that wrote it in its last line; the test runs that command's analysis and checks the
text: it equals the committed file, and it holds to the report's rules (an answer on the first screen, true record
counts, no section that only says it has nothing, no "X to X", cited paths that exist, headline tables of at most
10 columns with no constant column, prose lines of at most PROSE_WIDTH characters).
"""

import json
import re
import shlex
import shutil
from collections import Counter
from pathlib import Path

import pytest
from report_text import unwrap

from bench.cli.main import build_parser
from bench.records.store import RESULTS
from bench.report.format import PROSE_WIDTH
from bench.report.load import is_resized
from bench.report.write import PLOTS, REPORT, build, render

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = sorted(p.parent.relative_to(REPO) for p in (REPO / "reports").rglob(REPORT))
WRITTEN_BY = "Written by "  # the report's last paragraph, above the command that wrote it
FIRST_SCREEN = 10  # lines
MAX_COLUMNS = 10  # in the headline's and the summary's tables
HEADLINE_SECTIONS = ("## 1. Headline", "## 2. Summary")
EMPTY = re.compile(r"^(No |None\b|Nothing\b)|nothing to (project|show|compute)")
COUNT = re.compile(
    r"(\d+) ([a-z-]+(?: compiles(?: of the design-space search| of published runs| of resized models)?)?) "
    r"\((\d+) ok, (\d+) failed\)"
)
CITED = re.compile(r"(?<![\w/.-])((?:bench|model|kernels|tests|reports|docs)/[\w/.+-]+\.(?:py|md|jsonl|png|json))\b")
OTHER_REPOSITORY = re.compile(r"[\w-]+/[\w.-]+ $")  # "owner/repo path": a published source, not this repository's
RANGE = re.compile(r"([\w:+.,%-]+) to ([\w:+.,%-]+)")


def command_of(example: Path) -> list[str]:
    *_, said, _, fence, command, end = (REPO / example / REPORT).read_text().rstrip().splitlines()
    assert said.startswith(WRITTEN_BY) and fence == end == "```", f"{example}/{REPORT} does not end with its command"
    assert command.startswith("python -m bench report "), command
    return shlex.split(command)[3:]  # after "python -m bench"


def regenerated(example: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The report the writer produces now, from the paths its command gives (relative to the repository, as the
    committed report names them), with the plots that lie beside it."""
    monkeypatch.chdir(REPO)
    args = build_parser().parse_args(command_of(example))
    analysis = build(args.run_dir, args.compare and Path(args.compare), args.aot or ())
    analysis.figures = {name: f for name, f in PLOTS.items() if (REPO / example / f).exists()}
    return render(analysis)


def sections(text: str) -> dict[str, list[str]]:
    """Each heading's own lines (to the next heading of any level), code blocks included."""
    found: dict[str, list[str]] = {}
    heading = None
    for line in text.splitlines():
        if line.startswith("#") and not line.startswith("# "):
            heading = line
            found[heading] = []
        elif heading is not None:
            found[heading].append(line)
    return found


def tables(lines: list[str]) -> list[list[list[str]]]:
    """Each markdown table in ``lines``: its rows (header first, the rule left out) as lists of cells."""
    found, current = [], []
    for line in [*lines, ""]:
        if line.startswith("|"):
            current.append([c.strip() for c in line.strip("|").split(" | ")])
        elif current:
            found.append([current[0], *current[2:]])
            current = []
    return found


def prose(text: str) -> list[str]:
    out, in_code = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and not line.startswith(("|", "![")):  # tables and images are not wrapped
            out.append(line)
    return out


def counts_on_disk(example: Path, aot_dirs: list[str]) -> dict[str, tuple[int, int]]:
    """Records by kind and how many failed, read from the files themselves rather than through the loader."""
    counts: Counter = Counter()
    for directory, aot_only in [(REPO / example, False), *((REPO / d, True) for d in aot_dirs)]:
        for line in (directory / RESULTS).read_text().splitlines():
            r = json.loads(line)
            if r["kind"] == "tpu-aot":
                of = " of the design-space search" if r.get("search_point") else ""
                of = " of resized models" if is_resized(r) else of
                kind = "tpu-aot compiles" + (" of published runs" if r.get("validation_id") else of)
            elif aot_only:
                continue
            else:
                kind = r["kind"]
            counts[kind, "all"] += 1
            counts[kind, "failed"] += r["status"] == "failed"
    return {kind: (n, counts[kind, "failed"]) for (kind, which), n in counts.items() if which == "all"}


@pytest.fixture(params=EXAMPLES, ids=str)
def example(request, monkeypatch) -> tuple[Path, str]:
    return request.param, regenerated(request.param, monkeypatch)


def test_there_are_examples_of_each_kind():
    kinds = {(REPO / e / REPORT).read_text().splitlines()[0].rsplit("(", 1)[-1].rstrip(")") for e in EXAMPLES}
    assert {"sweep", "search", "cpu-block"} <= kinds


def test_the_committed_report_is_what_the_writer_produces_now(example):
    """Regenerate with the command in the report's last line (noxfile's sessions run the same commands)."""
    path, text = example
    assert text == (REPO / path / REPORT).read_text(), f"{path}/{REPORT} is stale: run `{' '.join(command_of(path))}`"


def test_the_first_screen_gives_the_answer(example):
    path, text = example
    lines = text.splitlines()
    counts_at = next(i for i, line in enumerate(lines) if line.startswith("Records: "))
    assert counts_at - 1 <= FIRST_SCREEN, f"{path}: the title and the answer take {counts_at - 1} lines"
    answer = unwrap("\n".join(lines[:counts_at]))
    kind = lines[0].rsplit("(", 1)[-1].rstrip(")")
    wanted = {
        "sweep": r"PROJECTION .*fastest \*\*[\w+-]+\*\*.*ahead of",
        "search": r"\| best point \(PROJECTION\) .*\| over GPT-J's choice .*\n(.*\n)*\| [\w:]+, [\w.-]+ +\| \d+ of \d+",
        "cpu-block": r"is [\d.]+x (faster|slower) than \w+\*\* .*noise threshold|fastest \*\*",
        "validate": r"PROJECTION against \d+ published TPU runs .*reached .* of their projection",
    }[kind]
    assert re.search(wanted, answer), answer


def test_record_counts_agree_with_the_records(example):
    path, text = example
    said = next(line for line in unwrap(text).splitlines() if line.startswith("Records: "))
    found = {kind: (int(n), int(failed)) for n, kind, ok, failed in COUNT.findall(said)}
    assert all(int(n) == int(ok) + int(failed) for n, _, ok, failed in COUNT.findall(said))
    args = build_parser().parse_args(command_of(path))
    assert found == counts_on_disk(path, args.aot or [])


def test_no_section_only_says_it_has_nothing(example):
    path, text = example
    for heading, lines in sections(unwrap(text)).items():
        body = [line for line in lines if line.strip() and line != "---"]
        if body:
            assert not all(EMPTY.search(line) for line in body), f"{path}: {heading} has nothing to show: {body}"
        else:  # a heading straight above its subsections
            assert heading.startswith("## "), f"{path}: {heading} is empty"
    assert "None: every recorded variant finished" not in text


def test_no_range_has_equal_ends(example):
    path, text = example
    for line in text.splitlines():
        for low, high in RANGE.findall(line):
            assert low.rstrip(".,;") != high.rstrip(".,;)"), f"{path}: {line}"


def test_every_cited_path_exists(example):
    path, text = example
    cited = {m.group(1) for m in CITED.finditer(text) if not OTHER_REPOSITORY.search(text[: m.start()][-100:])}
    assert cited, f"{path}: cites no source file"
    for name in cited:
        assert (REPO / name).exists(), f"{path} cites {name}, which does not exist"


def test_headline_tables_are_narrow_and_have_no_constant_column(example):
    path, text = example
    for heading, lines in sections(text).items():
        if not heading.startswith(HEADLINE_SECTIONS):
            continue
        for table in tables(lines):
            header, rows = table[0], table[1:]
            assert len(header) <= MAX_COLUMNS, f"{path}: {heading}: {header}"
            if len(rows) > 1:
                constant = [h for i, h in enumerate(header) if len({row[i] for row in rows}) == 1]
                assert constant == [], f"{path}: {heading}: constant columns {constant}"


def test_prose_lines_fit_the_width(example):
    path, text = example
    for line in prose(text):
        assert len(line) <= PROSE_WIDTH, f"{path}: {len(line)} characters: {line[:80]}..."


def test_every_projected_figure_is_labelled_a_projection(example):
    path, text = example
    for line in prose(unwrap(text)):
        if "projected" in line.lower() and not line.startswith("#"):
            assert "PROJECTION" in line, f"{path}: {line[:120]}"


DECODE_EXAMPLE = REPO / "reports" / "decode"


def test_the_committed_decode_report_is_what_the_writer_produces_now(tmp_path):
    from bench.report.sections.decode import DECODE_REPORT, write_decode_report

    shutil.copy(DECODE_EXAMPLE / RESULTS, tmp_path / RESULTS)
    written = write_decode_report(tmp_path)
    assert written is not None and written.read_text() == (DECODE_EXAMPLE / DECODE_REPORT).read_text()


def test_the_decode_report_leads_with_the_answer_and_true_counts():
    from bench.records.store import load_records
    from bench.report.sections.decode import DECODE_REPORT

    first = (DECODE_EXAMPLE / DECODE_REPORT).read_text().splitlines()[:FIRST_SCREEN]
    answers = [line for line in first if line.startswith("- ") and "**" in line]
    assert any("PROJECTION" in line for line in answers) and any("measured" in line for line in answers), first
    records = load_records(DECODE_EXAMPLE).records
    counts = next(line for line in first if line.startswith("Records: "))
    for backend in ("cpu", "tpu"):
        mine = [r for r in records if r["backend"] == backend]
        failed = sum(r["status"] != "ok" for r in mine)
        assert f"{len(mine)} " in counts and f"({len(mine) - failed} ok, {failed} failed)" in counts, counts
