"""The markdown report (bench/report/), its plots and the roofline projection (bench/projection/throughput.py).

Fixtures (tests/data/records/): measured_run1_tiny.jsonl is one real record of a tiny-preset run on this machine;
the synthetic_*.jsonl files are variations of it (names, numbers and errors made up, hostname "synthetic-fixture"),
including TPU ahead-of-time compile records with invented values.
"""

import json
import math
import shlex
import statistics
from pathlib import Path

import pandas as pd
import pytest
from report_text import unwrap
from test_report_components import record as breakdown_record

from bench.analysis.profile import trace_log_dir
from bench.cli.main import main as cli_main
from bench.cli.spec import run_parser
from bench.hardware.table import PeakBasis, accelerator_for_topology
from bench.projection import throughput as projection
from bench.records.schema import SCHEMA_VERSION, upgrade
from bench.records.store import RESULTS
from bench.report import format as format_module
from bench.report.format import (
    PROSE_WIDTH,
    constant_columns,
    fmt,
    fmt_ratio,
    module_path,
    pct,
    source,
    span,
    wrap_prose,
)
from bench.report.load import ReportError, load_run
from bench.report.sections.environment import reproduce_commands
from bench.report.stats import Comparison, Noise, pair_effect, summarise
from bench.report.write import PLOTS, build, write_report

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data" / "records"
SWEEP = "synthetic_sweep_tiny.jsonl"
AOT = "synthetic_tpu_aot.jsonl"
DAMAGED = "synthetic_damaged.jsonl"
CONSTANT = "Every row has "  # the sentence above a table that states its constant columns once
REAL = "measured_run1_tiny.jsonl"

# The summary table's columns and the record field and scale each shows, written out here rather than taken from
# bench/report/sections/headline.py so that a wrong mapping there fails.
SUMMARY_COLUMNS = {
    "tokens/s": ("tokens_per_s", 1),
    "tokens/s per device": ("tokens_per_s_per_device", 1),
    "MFU %": ("mfu", 100),
    "MFU (6N) %": ("mfu_6n", 100),
    "HFU %": ("hfu", 100),
    "step ms": ("step_median_s", 1e3),
    "compile s": ("compile_s", 1),
    "peak memory per device MiB": ("mem_peak_estimate_bytes_per_device", 2**-20),
    "TP (mp) wire MiB/step": ("comm_mp_wire_bytes_per_device", 2**-20),
    "DP (dp) wire MiB/step": ("comm_dp_wire_bytes_per_device", 2**-20),
    "all-reduces/step": ("comm_allreduce_count", 1),
}


def make_run(tmp_path: Path, *fixtures: str, name: str = "run") -> Path:
    run_dir = tmp_path / name
    run_dir.mkdir()
    text = "".join((DATA / f).read_text() for f in fixtures)
    (run_dir / RESULTS).write_text(text)
    return run_dir


def fixture_records(*fixtures: str) -> list[dict]:
    return [upgrade(json.loads(line)) for f in fixtures for line in (DATA / f).read_text().splitlines()]


def table_after(markdown: str, header_start: str) -> pd.DataFrame:
    """Parse the GitHub table whose header line starts with ``header_start`` back into strings, with the columns
    its "Every row has ..." sentence states once above it put back in every row."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if " ".join(line.split()).startswith(header_start))
    block = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        block.append(line)
    cells = [[c.strip() for c in line.strip("|").split(" | ")] for line in block]
    frame = pd.DataFrame(cells[2:], columns=cells[0])
    said = lines[start - 2] if start >= 2 else ""
    if said.startswith(CONSTANT) and said.endswith("."):
        for column, _, value in (part.partition(": ") for part in said[len(CONSTANT) : -1].split("; ")):
            frame[column] = value
    return frame


def summary_table(markdown: str) -> pd.DataFrame:
    """The summary's two tables (speed, then what each variant costs) as one, a row per variant and JAX."""
    speed = table_after(markdown, "| rank | variant | jax | repeats")
    cost = table_after(markdown, "| rank | variant | jax | tokens/s per device").drop(columns=["rank"])
    return speed.merge(cost, on=["variant", "jax"], validate="one_to_one")


def number(cell: str) -> float:
    return math.nan if cell == "n/a" else float(cell.replace(",", ""))


def medians_by_row(records: list[dict]) -> dict[tuple[str, str], dict[str, float]]:
    grouped: dict[tuple[str, str], list[dict]] = {}
    for r in records:
        if r["status"] == "ok" and r.get("backend") != "tpu-aot":
            grouped.setdefault((r["variant"], r["jax"]), []).append(r)
    out = {}
    for key, rs in grouped.items():
        out[key] = {}
        for field, _ in SUMMARY_COLUMNS.values():
            values = [r[field] for r in rs if r.get(field) is not None]
            out[key][field] = statistics.median(values) if values else math.nan
    return out


# ---------------------------------------------------------------------------------------------------- projection
# A hand-counted v3-256 step: 1.344e16 FLOPs is exactly one second at GPT-J's 256 x 52.5 TFLOP/s.
HAND = {
    "schema_version": 1,
    "variant": "parallel-h256-pjit-full",
    "status": "ok",
    "backend": "tpu-aot",
    "topology": "v3:8x16",
    "device_kind": "TPU v3",
    "devices": 256,
    "tokens_per_step": 65536,
    "jax": "0.10.2",
    "hardware_flops_per_step_total": 1.344e16,
    "xla_flops_per_step_total": 2e16,
    "comm_mp_wire_bytes_per_device": 2e9,
    "comm_dp_wire_bytes_per_device": 3e9,
    "comm_dpmp_wire_bytes_per_device": 0.0,
    "xla_bytes_accessed_per_step_total": 256 * 4.5e10,
    "mem_peak_estimate_bytes_per_device": 17 * 2**30,
}


def test_formulas_against_hand_counts():
    assert projection.compute_time_s(1.344e16, 256, 52.5e12) == pytest.approx(1.0)
    # v3: 2 links x 1e11 B/s on one torus dimension, shared by the chip's 2 cores
    assert projection.ici_bandwidth_per_device(1e11, 1, 2) == pytest.approx(1e11)
    assert projection.ici_bandwidth_per_device(1e11, 2, 2) == pytest.approx(2e11)
    # v5e (one core per chip): the scaling book's 9e10 bidirectional per axis from 4.5e10 one-way links
    assert projection.ici_bandwidth_per_device(4.5e10, 1, 1) == pytest.approx(9e10)
    assert projection.ici_time_s(2e9, 1e11) == pytest.approx(0.02)
    assert projection.hbm_bandwidth_per_device(900e9, 2) == pytest.approx(450e9)
    assert projection.hbm_time_s(256 * 4.5e10, 256, 450e9) == pytest.approx(0.1)
    assert projection.overlapped_step_s(1.0, 0.05, 0.1) == 1.0
    assert projection.serial_step_s(1.0, 0.05, 0.1) == pytest.approx(1.15)
    assert projection.tokens_per_s(65536, 1.15) == pytest.approx(56987.0, rel=1e-4)


def test_project_a_v3_record_by_hand():
    gptj = projection.project(HAND, PeakBasis.GPTJ)
    assert gptj.compute_s == pytest.approx(1.0)
    assert dict(gptj.ici_s_by_axis) == pytest.approx({"mp": 0.02, "dp": 0.03, "dpmp": 0.0})
    assert gptj.hbm_s == pytest.approx(0.1)
    assert gptj.tokens_per_s_overlap == pytest.approx(65536.0)
    assert gptj.tokens_per_s_serial == pytest.approx(65536 / 1.15)
    assert gptj.flops_counted == "hardware_flops_per_step_total"  # the analytic count, not XLA's 2e16
    assert gptj.fits_hbm is False  # 17 GiB per core against 16
    spec = projection.project(HAND, PeakBasis.SPEC)
    assert spec.compute_s == pytest.approx(1.344e16 / (256 * 61.5e12))
    assert projection.bases_for(accelerator_for_topology("v3:8x16")) == (PeakBasis.SPEC, PeakBasis.GPTJ)
    assert projection.bases_for(accelerator_for_topology("v4:4x4x4")) == (PeakBasis.SPEC,)


def test_project_says_what_is_missing():
    with pytest.raises(projection.ProjectionError, match="hardware_flops_per_step_total or xla_flops_per_step_total"):
        projection.project({k: v for k, v in HAND.items() if "flops" not in k})
    with pytest.raises(projection.ProjectionError, match="comm_dp_wire_bytes_per_device"):
        projection.project({k: v for k, v in HAND.items() if k != "comm_dp_wire_bytes_per_device"})
    with pytest.raises(ValueError, match="bad TPU topology"):
        projection.project(HAND | {"topology": "v9:2x2"})
    no_bytes = projection.project({k: v for k, v in HAND.items() if k != "xla_bytes_accessed_per_step_total"})
    assert no_bytes.hbm_s is None and no_bytes.serial_step_s == pytest.approx(1.344e16 / (256 * 61.5e12) + 0.05)


# ---------------------------------------------------------------------------------------------------- report


def test_every_section_with_plots_beside_it(tmp_path):
    run_dir = make_run(tmp_path, SWEEP, AOT)
    with (run_dir / RESULTS).open("a") as results:  # a compile with a component breakdown, for its section and plot
        results.write(json.dumps(breakdown_record("parallel")) + "\n")
    path = write_report(run_dir)
    assert path == run_dir / "REPORT.md"
    text = unwrap(path.read_text())
    for heading in (
        "## 1. Headline",
        "## 2. Summary",
        "### Failed variants",
        "## 3. Effect of each design choice",
        "## 4. Against the baseline",
        "### PROJECTION",
        "### PROJECTION: where each variant's step goes, by block component",
        "## 5. Communication",
        "## 6. Profiles",
        "## 7. Environment",
    ):
        assert heading in text
    assert "## 8." not in text  # no --compare
    links = [line.split("](")[1].rstrip(")") for line in text.splitlines() if line.startswith("![")]
    # a GPU run's traced components, and the published runs' plot (tests/test_report_validation.py draws it)
    assert sorted(links) == sorted(v for k, v in PLOTS.items() if k not in ("measured_components", "validation"))
    for link in links:
        assert "/" not in link and (run_dir / link).read_bytes().startswith(b"\x89PNG")


def test_summary_numbers_equal_their_records(tmp_path):
    text = unwrap(write_report(make_run(tmp_path, SWEEP, AOT), plots=False).read_text())
    table = summary_table(text)
    expected = medians_by_row(fixture_records(SWEEP))
    assert len(table) == len(expected) == 27  # aot records are never ranked with measured ones
    for _, row in table.iterrows():
        want = expected[(row["variant"], row["jax"])]
        for column, (field, scale) in SUMMARY_COLUMNS.items():
            got = number(row[column])
            if math.isnan(want[field]):
                assert row[column] == "n/a", (row["variant"], column)
            else:
                assert got == pytest.approx(want[field] * scale, rel=1e-3), (row["variant"], column)
    ranked = [number(v) for v in table["tokens/s"]]
    assert ranked == sorted(ranked, reverse=True)


def test_two_repeats_give_a_median_and_a_spread(tmp_path):
    text = unwrap(write_report(make_run(tmp_path, SWEEP), plots=False).read_text())
    table = table_after(text, "| rank").set_index(["variant", "jax"])
    repeats = [
        r["tokens_per_s"]
        for r in fixture_records(SWEEP)
        if r["variant"] == "parallel-h256-pjit-none" and r["jax"] == "0.10.2"
    ]
    row = table.loc[("parallel-h256-pjit-none", "0.10.2")]
    assert row["repeats"] == "2"
    assert number(row["tokens/s"]) == pytest.approx(sum(repeats) / 2, rel=1e-3)
    spread = (max(repeats) - min(repeats)) / statistics.median(repeats) * 100
    assert row["spread %"] == f"{fmt(spread, 2)} (repeats)"


def test_failed_and_missing_metrics_are_shown_not_dropped(tmp_path):
    text = unwrap(write_report(make_run(tmp_path, SWEEP), plots=False).read_text())
    failed = table_after(text, "| variant | jax | repeat | error")
    assert sorted(zip(failed["variant"], failed["jax"], failed["repeat"])) == [
        ("parallel-h128-pjit-full", "0.10.2", "1"),
        # the sweep's record of a killed process: no mesh, batch or JAX version, still listed, not skipped
        ("parallel-h128-xmap-none", "0.4.30", "0"),  # a v1 sweep placeholder: upgraded, its environment's JAX
        ("serial-h256-xmap-full", "0.4.30", "0"),
        ("serial-h256-xmap-full", "0.4.30", "1"),
    ]
    errors = dict(zip(failed["variant"], failed["error"]))
    assert errors["parallel-h128-xmap-none"] == "process killed after the 900 s per-variant limit"
    assert "synthetic fixture: out of memory" in errors["serial-h256-xmap-full"]
    assert "Skipped input" not in text
    summary = summary_table(text).set_index(["variant", "jax"])
    assert summary.loc[("serial-h128-pjit-none", "0.10.2"), "peak memory per device MiB"] == "n/a"
    # one repeat has no peak (MFU null): the median is over the repeat that has one
    mfu = [
        r["mfu"]
        for r in fixture_records(SWEEP)
        if r["variant"] == "parallel-h128-shard_map-full" and r["jax"] == "0.10.2" and r["status"] == "ok"
    ]
    assert None in mfu
    got = number(summary.loc[("parallel-h128-shard_map-full", "0.10.2"), "MFU %"])
    assert got == pytest.approx(next(m for m in mfu if m is not None) * 100, rel=1e-3)


def test_a_single_variant(tmp_path):
    text = unwrap(write_report(make_run(tmp_path, REAL), plots=False).read_text())
    record = fixture_records(REAL)[0]
    row = table_after(text, "| rank").iloc[0]
    assert row["variant"] == record["variant"]
    assert number(row["tokens/s"]) == pytest.approx(record["tokens_per_s"], rel=1e-3)
    assert row["spread %"].endswith("(step IQR)")  # one run: the timed steps' spread
    assert "no repeats" in text
    # nothing to show: no pair, no compile, no failure; those sections are left out, not printed empty
    for heading in ("## 3. Effect", "### PROJECTION", "### Failed variants"):
        assert heading not in text


def test_effects_are_paired_ratios(tmp_path):
    # hand count: two pairs differing only in residual, ratios 2.0 and 1.5
    rows = [
        ("parallel-h256-pjit-none", 200.0),
        ("serial-h256-pjit-none", 100.0),
        ("parallel-h128-pjit-none", 150.0),
        ("serial-h128-pjit-none", 100.0),
        ("serial-h128-pjit-full", 10.0),
    ]
    records = [
        {"variant": v, "jax": "0.10.2", "status": "ok", "tokens_per_s": t, "mem_peak_estimate_bytes_per_device": 1.0}
        for v, t in rows
    ]
    summary = summarise(records)
    effect = pair_effect(summary, Comparison("residual", "parallel", "serial"))
    assert sorted(effect.ratios) == [1.5, 2.0] and effect.median == 1.75
    assert pair_effect(summary, Comparison("remat", "full", "none")).ratios == [0.1]
    assert effect.exceeds(Noise(0.5, "")) is True
    assert effect.exceeds(Noise(0.8, "")) is False
    assert effect.exceeds(Noise(None, "")) is None


def test_xmap_is_paired_only_within_its_jax_environment(tmp_path):
    records = fixture_records(SWEEP)
    summary = summarise(records)
    xmap_pjit = pair_effect(summary, Comparison("strategy", "xmap", "pjit"))
    assert xmap_pjit.pairs and {p.jax for p in xmap_pjit.pairs} == {"0.4.30"}
    # without pjit and shard_map under 0.4.30 there is no same-environment pair: the report says it crossed
    current_only = [r for r in records if r.get("jax") == "0.10.2" or r["strategy"] == "xmap"]
    run_dir = tmp_path / "cross"
    run_dir.mkdir()
    (run_dir / RESULTS).write_text("".join(json.dumps(r) + "\n" for r in current_only))
    text = unwrap(write_report(run_dir, plots=False).read_text())
    assert "xmap vs pjit: no pair in this run" in text
    assert "CROSS-ENVIRONMENT" in text


def test_communication_mismatches_are_explained(tmp_path):
    text = unwrap(write_report(make_run(tmp_path, SWEEP), plots=False).read_text())
    lines = text.splitlines()
    shard_map = next(line for line in lines if line.startswith("- parallel-h256-shard_map-none (jax 0.10.2)"))
    assert "XLA's combiner carried 9 arrays in 8 ops" in shard_map and "expected (" not in shard_map
    pjit = next(line for line in lines if line.startswith("- parallel-h256-pjit-none (jax 0.10.2)"))
    assert "mp all-reduce" not in pjit  # as many arrays and bytes as expected
    xmap = next(line for line in lines if line.startswith("- parallel-h256-xmap-none (jax 0.4.30)"))
    assert "2 all-gather op(s) on mp (262,144 bytes)" in xmap


def test_compare_flags_a_20_percent_regression_and_not_1_percent(tmp_path):
    this_dir = make_run(tmp_path, SWEEP, name="this")
    other = fixture_records(SWEEP)
    for r in other:  # the other run was faster: 25% for one variant (this run is 20% slower), 1% for another
        if r["status"] == "ok" and r["jax"] == "0.10.2":
            if r["variant"] == "parallel-h256-pjit-none":
                r["tokens_per_s"] *= 1.25
            elif r["variant"] == "serial-h256-pjit-none":
                r["tokens_per_s"] *= 1.01
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    (other_dir / RESULTS).write_text("".join(json.dumps(r) + "\n" for r in other))
    text = unwrap(write_report(this_dir, compare=other_dir, plots=False).read_text())
    banner = text[: text.index("## 1. Headline")]
    assert "REGRESSIONS" in banner and "parallel-h256-pjit-none (jax 0.10.2): 0.800x" in banner
    assert "serial-h256-pjit-none" not in banner
    table = table_after(text, "| variant | jax | tokens/s this run").set_index(["variant", "jax"])
    assert table.loc[("parallel-h256-pjit-none", "0.10.2"), "flag"] == "REGRESSION"
    assert table.loc[("serial-h256-pjit-none", "0.10.2"), "flag"] == "within noise"
    assert table.loc[("serial-h256-pjit-none", "0.10.2"), "ratio"] == "0.990x"


def test_compare_refuses_another_configuration(tmp_path):
    this_dir = make_run(tmp_path, SWEEP, name="this")
    other = [r | {"preset": "cpu", "batch": 8, "seq": 64} for r in fixture_records(SWEEP)]
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    (other_dir / RESULTS).write_text("".join(json.dumps(r) + "\n" for r in other))
    text = unwrap(write_report(this_dir, compare=other_dir, plots=False).read_text())
    assert "not compared: this run is preset 'tiny'" in text and "REGRESSION" not in text


def test_bad_lines_and_mixed_presets_are_named_and_the_rest_reported(tmp_path, capsys):
    run_dir = make_run(tmp_path, SWEEP, DAMAGED)
    text = unwrap(write_report(run_dir, plots=False).read_text())
    lines = len(fixture_records(SWEEP))
    banner = text[: text.index("## 1. Headline")]
    assert f"results.jsonl line {lines + 1}: schema_version 99, expected {SCHEMA_VERSION}" in banner
    assert f"results.jsonl line {lines + 2}: not JSON" in banner
    assert "1 measured record(s) of preset 'cpu'" in banner and "this report covers preset 'tiny'" in banner
    assert len(table_after(text, "| rank")) == 27
    assert "skipped: results.jsonl line" in capsys.readouterr().err


def test_no_records_is_a_clear_error(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ReportError, match="no usable records .*no such file"):
        write_report(empty)
    (empty / RESULTS).write_text("")
    with pytest.raises(ReportError, match="no usable records .*the file is empty"):
        write_report(empty)
    (empty / RESULTS).write_text("not json\n")
    with pytest.raises(ReportError, match="line 1: not JSON"):
        write_report(empty)
    with pytest.raises(ReportError, match="is not a directory"):
        write_report(tmp_path / "missing")
    assert cli_main(["report", str(empty)]) == 2
    assert not (empty / "REPORT.md").exists()


def test_tpu_aot_records_from_another_directory(tmp_path):
    run_dir = make_run(tmp_path, SWEEP, name="run")
    aot_dir = make_run(tmp_path, AOT, REAL, name="aot")
    text = unwrap(write_report(run_dir, aot_dirs=[aot_dir], plots=False).read_text())
    assert len(table_after(text, "| rank")) == 27
    assert "aot: 1 record(s) without backend tpu-aot left out" in text
    projected = table_after(text, "| variant | jax | peak basis")
    assert len(projected) == 2 * 6  # spec and GPT-J bases for each TPU v3 compile
    assert set(projected["fits HBM"]) == {"yes", "NO"}
    aot_runs = [c for c in text.splitlines() if c.startswith("python -m bench tpu-aot")]
    assert len(aot_runs) == 2  # one per JAX version: xmap compiles under jax 0.4.30
    assert all(f"--topology=v3:8x16 --preset=gptj-6b --mesh=dp=32,mp=8 --out={aot_dir}" in c for c in aot_runs)


def test_projections_are_labelled_wherever_they_appear(tmp_path):
    run_dir = make_run(tmp_path, AOT)  # tpu-aot records only: a report of projections
    text = unwrap(write_report(run_dir, plots=False).read_text())
    assert "## 2. Summary" not in text  # nothing measured: no summary, not an empty one
    analysis = build(run_dir)
    lines = text.splitlines()
    for p in analysis.projections:
        for value in (fmt(p.tokens_per_s_overlap), fmt(p.tokens_per_s_serial)):
            for i, line in enumerate(lines):
                if value not in line:
                    continue
                if line.startswith("|"):  # a table row: its header must say projected
                    header = next(lines[j] for j in range(i, -1, -1) if not lines[j - 1].startswith("|"))
                    assert "projected" in header
                else:
                    assert "PROJECTION" in line


def test_profile_section_gives_top_ops_and_the_command(tmp_path):
    text = unwrap(write_report(make_run(tmp_path, SWEEP), plots=False).read_text())
    ops = table_after(text, "| op | category")
    assert list(ops["op"])[:2] == ["all-reduce.3", "dot.12"]
    assert "tensorboard --logdir reports/runs/synthetic/profile --host localhost" in text


def test_profile_section_gives_the_measured_breakdown_in_block_order(tmp_path):
    run_dir = make_run(tmp_path, SWEEP)
    path = run_dir / "results.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    profiled = next(r for r in records if r.get("profile_top_ops"))
    parts = {"collective mp": 3.0, "ff_in": 4.0, "qkv_proj": 2.0, "unattributed": 1.0}
    profiled.update(
        profile_component_basis="measured: profiler op self time",
        profile_component_s_per_step_per_device=parts,
        profile_component_matched_frac=0.9,
        profile_other_programs_s_per_step_per_device=0.5,
        profile_steps=3,
    )
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    text = unwrap(write_report(run_dir, plots=False).read_text())
    assert "MEASURED by block component on this machine" in text and "90% of the step program" in text
    table = table_after(text, "| component | ms per step per device")
    assert list(table["component"]) == ["qkv_proj", "ff_in", "collective mp", "unattributed"]
    assert [float(x) for x in table["share %"]] == [20.0, 40.0, 30.0, 10.0]


def test_reproduce_commands(tmp_path):
    run_dir = make_run(tmp_path, SWEEP)
    commands = reproduce_commands(load_run(run_dir))
    runs = [c for c in commands if "bench run" in c]
    assert len(runs) == 4  # 2 JAX environments x 2 repeats
    # the v1 sweep placeholder (its process died) is upgraded with its environment's JAX, so its variant is rerun
    assert any("--variant=parallel-h128-xmap-none" in c for c in runs if "--repeat" not in c)
    assert all(
        c.startswith("XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m bench run --preset=tiny")
        for c in runs
    )
    assert "--repeat=1" in runs[2] and "--variant=parallel-h256-xmap-full" in runs[1]
    # each command is what `bench run` itself parses: the flags come from its one table (bench.records.runspec)
    parsed = run_parser().parse_args(shlex.split(runs[2].split(" ", 1)[1])[4:])
    assert (parsed.preset, parsed.repeat, parsed.mesh, parsed.out) == ("tiny", 1, "dp=2,mp=4", str(run_dir))
    assert commands[0] == "git checkout 6585a1f0d3342776d0f830888800e2758242cf7f"


def test_number_format():
    assert fmt(605.68642) == "605.7"
    assert fmt(151000) == "151,000"
    assert fmt(9.0) == "9"
    assert fmt(0.0012345678) == "0.001235"
    assert fmt(None) == "n/a" and fmt(float("nan")) == "n/a"
    assert pct(0.20264) == "20.26%" and pct(None) == "n/a"
    assert trace_log_dir("runs/x/profile/plugins/profile/2026_11_29/host.xplane.pb") == Path("runs/x/profile")


def test_a_kernel_variant_is_paired_only_with_its_own_kernel():
    from bench.report.stats import axis_values

    values = axis_values("parallel-h256-pjit-full+blockwise", "0.10.2")
    assert (values["remat"], values["kernel"]) == ("full", "blockwise")
    assert axis_values("parallel-h256-pjit-full", "0.10.2")["kernel"] == "reference"


def test_a_range_whose_ends_print_alike_is_one_number():
    assert span(256_084.2, 256_084.4) == "256,084"
    assert span(1.185, 1.212, fmt_ratio) == "1.185x to 1.212x"
    assert span(59.01, 59.04, lambda v: fmt(v, 3), "%") == "59.0%"
    assert span(40.8, 60.4, unit="%") == "40.80% to 60.40%"


def test_a_constant_column_is_said_once_above_its_table():
    table = pd.DataFrame({"variant": ["a", "b"], "jax": ["0.10.2", "0.10.2"], "tokens/s": ["1", "2"]})
    said, shown = constant_columns(table, keep=("variant",))
    assert said == "Every row has jax: 0.10.2." and list(shown.columns) == ["variant", "tokens/s"]
    said, shown = constant_columns(table.iloc[:1])  # one row: every column would be constant
    assert said == "" and shown.equals(table.iloc[:1])


def test_a_cited_path_is_the_defining_modules_own():
    assert source(source) == "bench/report/format.py" and source(format_module) == "bench/report/format.py"
    assert (REPO / source(projection)).is_file() and source(projection).endswith(".py")
    assert module_path("bench.tpu_aot.search") == "bench/tpu_aot/search.py"


def test_prose_is_wrapped_and_tables_code_and_images_are_not():
    long = "word " * 40
    table = "| " + " | ".join(["cell"] * 40) + " |"
    code = "python -m bench run " + "--variant=x " * 20
    text = "\n".join([long.strip(), f"- {long.strip()}", f"> {long.strip()}", table, "```", code, "```", "![a](b.png)"])
    wrapped = wrap_prose(text)
    for line in wrapped.splitlines():
        assert len(line) <= PROSE_WIDTH or line in (table, code)
    assert table in wrapped.splitlines() and code in wrapped.splitlines()
    assert unwrap(wrapped) == text
