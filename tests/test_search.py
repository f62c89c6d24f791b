"""The design-space search (bench/tpu_aot/search.py): the grid, the batch arithmetic, pruning, the bad-input messages
(pure, no compile), and one `--quick` search compiled end to end for a small TPU topology (tpu_aot)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from bench.tpu_aot.search import (
    ANCHOR,
    GPTJ_GLOBAL_BATCH,
    Refusal,
    SearchPoint,
    build_points,
    compile_order,
    compiles_of,
    default_grid,
    dominates,
    finished,
    is_quick_point,
    parse_meshes,
    parse_remats,
    point,
    pruned_record,
    pruner,
    quick_grid,
    refusals_in,
    search_fields,
    shard,
)
from model import compat
from model.config import ConfigError, Layout, Mesh, Remat, Strategy

XMAP = Strategy.XMAP

REPO = Path(__file__).resolve().parents[1]
GIB = 2**30
GPTJ_MESH = Mesh(32, 8)
BENCH = [sys.executable, "-m", "bench"]


def _point(remat: Remat = Remat.FULL, m: int = 1, mesh: Mesh = GPTJ_MESH, layout: Layout = Layout.MEGATRON):
    return point(ANCHOR.replace(remat=remat, layout=layout), mesh, m, "v3:8x16", "gptj-6b", GPTJ_GLOBAL_BATCH)


def test_the_default_grid_is_the_issues_grid_with_gptj_marked():
    points = build_points(default_grid())
    meshes = {(p.mesh.dp, p.mesh.mp) for p in points}
    assert meshes == {(64, 4), (32, 8), (16, 16), (256, 1)}
    megatron = [p for p in points if p.variant.layout is Layout.MEGATRON and p.variant.residual.value == "parallel"]
    fsdp = [p for p in points if p.variant.layout is Layout.FSDP]
    assert len(megatron) == 3 * 4 * 2 + 1 + 1  # meshes x remat x micro-batch, the h128 check and xmap
    assert len(fsdp) == 4 * 4 * 2  # with mp on each mesh, and alone
    assert {p.mesh.mp for p in fsdp if p.mesh.dp == 256} == {1}
    anchors = [p for p in points if p.anchor]
    assert {p.variant.name for p in anchors} == {"parallel-h256-shard_map-full", "parallel-h256-xmap-full"}
    assert all(p.mesh == Mesh(32, 8) and p.micro_batch == 1 and p.grad_accum == 16 for p in anchors)
    assert len({(p.key, p.topology) for p in points}) == len(points)


@pytest.mark.parametrize("topology, devices", [("v4:4x4x8", 128), ("v5e:16x16", 256), ("v5p:4x4x8", 128)])
def test_newer_topologies_scale_the_meshes_to_their_devices(topology, devices):
    points = build_points(default_grid(topology))
    assert all(p.mesh.devices == devices for p in points)
    assert {p.mesh.mp for p in points if p.variant.layout is Layout.MEGATRON} == {4, 8, 16}


@pytest.mark.parametrize(
    "mesh, m, batch, accum", [(Mesh(64, 4), 1, 64, 8), (Mesh(16, 16), 2, 32, 16), (Mesh(256, 1), 2, 512, 1)]
)
def test_micro_batch_sets_batch_and_accumulation_at_a_fixed_global_batch(mesh, m, batch, accum):
    p = _point(m=m, mesh=mesh, layout=Layout.FSDP)
    assert (p.batch, p.grad_accum) == (batch, accum)
    assert p.batch * p.grad_accum == GPTJ_GLOBAL_BATCH
    preset = p.resolved_preset()
    assert (preset.batch, preset.grad_accum) == (batch, accum) and preset.tokens_per_step == 512 * 2048


def test_gptjs_point_is_the_preset_itself_so_its_compile_is_the_main_jobs():
    preset = _point().resolved_preset()
    assert (preset.batch, preset.grad_accum) == (32, 16)


def test_a_micro_batch_that_does_not_divide_the_global_batch_is_refused():
    with pytest.raises(ConfigError, match="does not divide the global batch of 512"):
        _point(m=3)


def test_a_mesh_that_does_not_span_the_topology_names_the_valid_ones():
    with pytest.raises(ConfigError, match=r"valid meshes have dp x mp = 256, e.g. 256x1, 128x2, 64x4, 32x8, 16x16"):
        parse_meshes("32x4", 256, "v3:8x16")
    with pytest.raises(ConfigError, match="is not DPxMP"):
        parse_meshes("32by8", 256, "v3:8x16")
    assert parse_meshes("64x4,32x8", 256, "v3:8x16") == [Mesh(64, 4), Mesh(32, 8)]


def test_an_unknown_remat_policy_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="valid remat values: none, full, dots, attn"):
        parse_remats("full,selective")


def test_an_fsdp_point_that_cannot_split_d_model_is_refused_before_any_compile():
    grid = dataclasses.replace(quick_grid("v3:4x6"), global_batch=48, meshes=(Mesh(12, 4),))  # 48 devices
    with pytest.raises(
        ConfigError, match=r"search point .*\+fsdp dp=12,mp=4 m=1 on v3:4x6: .*d_model 1024 is not divisible by dp=12"
    ):
        build_points(grid)


def test_compile_order_puts_every_possible_pruner_first():
    points = build_points(default_grid())
    order = compile_order(points)
    assert sorted(order, key=lambda p: p.key) == sorted(points, key=lambda p: p.key)
    for later, p in enumerate(order):
        assert not any(dominates(p, q) for q in order[:later]), p.key  # nothing earlier is dominated by p


@pytest.mark.parametrize(
    "refused, candidate, prunes",
    [
        ((Remat.FULL, 1), (Remat.FULL, 2), True),  # more micro-batch
        ((Remat.FULL, 1), (Remat.NONE, 1), True),  # keeps more
        ((Remat.DOTS, 1), (Remat.NONE, 2), True),
        ((Remat.ATTN, 1), (Remat.DOTS, 1), False),  # neither keeps all the other keeps
        ((Remat.DOTS, 1), (Remat.ATTN, 2), False),
        ((Remat.NONE, 1), (Remat.FULL, 2), False),  # keeps less
        ((Remat.FULL, 2), (Remat.FULL, 1), False),  # smaller micro-batch
    ],
)
def test_dominance_needs_a_larger_micro_batch_or_more_kept(refused, candidate, prunes):
    assert bool(dominates(_point(*refused), _point(*candidate))) is prunes


def test_dominance_never_crosses_a_mesh_layout_or_variant():
    refused = _point(Remat.FULL)
    assert dominates(refused, _point(Remat.NONE, mesh=Mesh(64, 4))) is None
    assert dominates(refused, _point(Remat.NONE, layout=Layout.FSDP)) is None
    serial = point(
        ANCHOR.replace(residual=ANCHOR.residual.SERIAL, remat=Remat.NONE), Mesh(32, 8), 1, "v3:8x16", "gptj-6b", 512
    )
    assert dominates(refused, serial) is None


def _refused_record(p: SearchPoint) -> dict:
    return {
        "search_point": p.key, "topology": p.topology, "preset": p.preset, "jax": "0.10.2", "status": "failed",
        "fits_hbm": False, "oom_required_bytes_per_device": 18.5 * GIB,
        "oom_available_hbm_bytes_per_device": 15.48 * GIB,
    }  # fmt: skip


def test_a_refused_point_prunes_its_siblings_citing_the_compilers_figures():
    refused, sibling = _point(Remat.DOTS), _point(Remat.NONE, m=2)
    found = pruner(sibling, refusals_in([_refused_record(refused)], [refused, sibling], "0.10.2"))
    assert found is not None
    refusal, rule = found
    assert refusal.point == refused and refusal.required_bytes == 18.5 * GIB
    assert "micro-batch 2 > 1" in rule and "remat none keeps all that dots keeps" in rule
    assert pruner(_point(Remat.ATTN), [refusal]) is None
    assert refusals_in([_refused_record(refused)], [refused], "0.4.30") == []  # another JAX's records do not count


def test_a_pruned_record_conforms_to_the_schema_and_says_why():
    from bench.records.schema import validate

    refused, sibling = _point(Remat.FULL, mesh=Mesh(16, 16)), _point(Remat.FULL, m=2, mesh=Mesh(16, 16))
    record = pruned_record(sibling, Refusal(refused, 18.5 * GIB, 15.48 * GIB), dominates(refused, sibling))
    assert validate(record) == []
    assert record["status"] == "failed" and record["fits_hbm"] is False and record["kind"] == "tpu-aot"
    assert record["pruned_by"] == refused.key and record["pruned_by_required_bytes_per_device"] == 18.5 * GIB
    assert "18.50 GiB of 15.48" in record["error"] and (record["batch"], record["grad_accum"]) == (32, 16)
    assert finished([{**record, "jax": "0.10.2"}], sibling, "0.10.2")  # a rerun keeps it


def test_resume_keys_a_point_by_its_mesh_and_micro_batch_not_only_its_variant():
    done = {"search_point": _point().key, "topology": "v3:8x16", "preset": "gptj-6b", "jax": "0.10.2", "status": "ok"}
    assert finished([done], _point(), "0.10.2")
    assert not finished([done], _point(m=2), "0.10.2") and not finished([done], _point(mesh=Mesh(64, 4)), "0.10.2")
    assert not finished([{**done, "status": "failed", "fits_hbm": None}], _point(), "0.10.2")  # a crash reruns


@pytest.mark.parametrize("extrapolate", [False, True], ids=["whole-step", "extrapolate"])
def test_shards_split_whole_groups_and_cover_every_point_once(extrapolate):
    points = build_points(default_grid())
    halves = [shard(points, i, 2, extrapolate) for i in range(2)]
    assert sorted(p.key for h in halves for p in h) == sorted(p.key for p in points)
    assert not {p.group for p in halves[0]} & {p.group for p in halves[1]}
    loads = [sum(compiles_of(p, extrapolate) for p in h) for h in halves]
    assert abs(loads[0] - loads[1]) <= max(
        sum(compiles_of(p, extrapolate) for p in points if p.group == g) for g in {p.group for p in points}
    )
    # one compile a point, five where it accumulates and is extrapolated (GPT-J's: 16 micro-steps)
    assert compiles_of(points[0], extrapolate) == (5 if extrapolate and points[0].grad_accum > 1 else 1)
    with pytest.raises(ConfigError, match="expected K/N"):
        shard(points, 2, 2)


def test_the_report_section_ranks_places_gptj_and_lists_refused_and_pruned(tmp_path):
    from bench.report.analyse import analyse
    from bench.report.load import load_run
    from bench.report.sections.search import effect_signs, section_search

    records = [
        {**_refused_record(_point(Remat.NONE)), "schema_version": 2, "kind": "tpu-aot", "variant": ANCHOR.name,
         "scope": "model", "timestamp_utc": "2026-12-01T00:00:00+00:00"},
    ]  # fmt: skip
    import json

    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    analysis = analyse(load_run(tmp_path))
    assert len(analysis.run.search) == 1 and analysis.run.aot == ()  # kept out of section 4
    text = "\n".join(section_search(analysis))
    assert "1 refused by the compiler" in text and "18.5" in text and "PROJECTION" in text
    assert effect_signs({}).columns.tolist() == ["design choice (a over b), PROJECTION"]  # no topology: no sign


def _fitting_record(p: SearchPoint, roofline_s: float, estimate_s: float | None) -> dict:
    """A hand-made compiled point: its whole-step roofline split into two components, no ICI; the compiler's own
    estimate where --extrapolate would have added it."""
    return {
        **search_fields(p), "topology": p.topology, "preset": p.preset, "jax": "0.10.2", "status": "ok",
        "fits_hbm": True, "kind": "tpu-aot", "variant": p.variant.name, "devices": 256, "mesh_dp": p.mesh.dp,
        "mesh_mp": p.mesh.mp, "grad_accum": p.grad_accum, "tokens_per_step": 512 * 2048,
        "hardware_flops_per_step_total": 1e16, "remat": p.variant.remat.value, "layout": p.variant.layout.value,
        "residual": "parallel", "d_head": 256, "strategy": "shard_map",
        **{f"comm_{axis}_wire_bytes_per_device": 0.0 for axis in ("mp", "dp", "dpmp")},
        "hlo_roofline_s_per_step_per_device": roofline_s,
        "hlo_roofline_component_s_per_step_per_device": {"ff_in": roofline_s * 0.75, "elementwise": roofline_s * 0.25},
        "xla_optimal_s_per_step_per_device": estimate_s,
    }  # fmt: skip


def test_the_search_ranks_by_the_whole_step_roofline_and_cross_checks_the_compilers_estimate():
    from bench.report.sections.search import best_against_anchor, cross_check, fitting

    gptj, dots, attn = dataclasses.replace(_point(), anchor=True), _point(Remat.DOTS), _point(Remat.ATTN)
    # dots is faster by the roofline (3 s against 4 s), slower by the compiler's estimate; attn has no estimate
    records = [_fitting_record(gptj, 4.0, 3.0), _fitting_record(dots, 3.0, 3.3), _fitting_record(attn, 3.5, None)]
    points, problems = fitting(records)
    assert problems == [] and [p.key for p in points] == [dots.key, attn.key, gptj.key]
    assert all(p.projection.model.name == "HLO_ROOFLINE" for p in points)
    assert points[0].projection.tokens_per_s_overlap == pytest.approx(512 * 2048 / 3.0)
    said = "\n".join(best_against_anchor(points))
    assert "ranks 3 of 3" in said and "1.333x GPT-J's choice" in said
    assert "ff_in 750 ms" in said  # 0.75 x (4 - 3) s, from the whole-step breakdown
    table, lines = cross_check(points)
    assert table["point"].tolist() == [dots.key, gptj.key]  # the two with both models, in the roofline's order
    assert table["work: roofline over estimate"].tolist() == ["0.909", "1.333"]
    assert "0 of 2 points hold the same rank" in lines[0] and "0.909-1.333x" in lines[0]
    old = {k: v for k, v in records[0].items() if not k.startswith("hlo_roofline")}
    assert "hlo_roofline_s_per_step_per_device" in fitting([old])[1][0]  # written before: said, not ranked


def test_tpu_search_lists_its_plan_without_libtpu_or_a_compile():
    result = subprocess.run(
        [sys.executable, "-m", "bench", "tpu-search", "--list", "--quick"], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    # each JAX environment lists the points it compiles: jax 0.4.30 only the xmap anchor, current JAX the rest
    legacy = compat.has_xmap()
    anchor = "xmap" if legacy else "shard_map"
    assert f"parallel-h256-{anchor}-full dp=4,mp=2 m=1: batch 4 x accumulation 2 (GPT-J)" in result.stdout
    assert ("shard_map" in result.stdout) is not legacy
    bad = subprocess.run(
        [sys.executable, "-m", "bench", "tpu-search", "--list", "--remats", "fulll"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "valid remat values" in bad.stderr
    one = "parallel-h256-shard_map-none dp=32,mp=8 m=2"
    chosen = subprocess.run([*BENCH, "tpu-search", "--list", "--point", one], cwd=REPO, capture_output=True, text=True)
    listed = (
        "no points for this environment and shard" if legacy else f"v3:8x16 gptj-6b {one}: batch 64 x accumulation 8"
    )
    assert chosen.returncode == 0 and chosen.stdout.strip() == listed
    missing = subprocess.run([*BENCH, "tpu-search", "--list", "--point", "x"], cwd=REPO, capture_output=True, text=True)
    assert missing.returncode == 2 and "not in the grid" in missing.stderr


def test_the_reduced_grid_is_gptjs_tensor_parallel_degree_alone():
    listed = subprocess.run(
        [*BENCH, "tpu-search", "--list", "--reduced", "--topology", "v5p:4x4x8"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert listed.returncode == 0, listed.stderr
    meshes = {line.split()[3] for line in listed.stdout.splitlines()}
    # 128 megacore devices: dp=16 x mp=8, and FSDP alone over all of them; jax 0.4.30 lists only the xmap anchor
    assert meshes == ({"dp=16,mp=8"} if compat.has_xmap() else {"dp=16,mp=8", "dp=128,mp=1"})
    both = subprocess.run([*BENCH, "tpu-search", "--list", "--reduced", "--meshes", "32x8"], cwd=REPO,
                          capture_output=True, text=True)  # fmt: skip
    assert both.returncode == 2 and "not both" in both.stderr


@pytest.mark.tpu_aot
def test_the_quick_search_compiles_projects_resumes_and_reports(tmp_path):
    """`--quick` end to end for v3:2x2 in this environment: its points compile and fit, a rerun compiles nothing, and
    the report ranks them with GPT-J's choice placed."""
    from bench.records.store import load_records
    from bench.tpu_aot.env import installed_jax_is_legacy, libtpu_available

    if not libtpu_available():
        pytest.skip("needs libtpu: run `nox -s tests_tpu_aot`")
    legacy = installed_jax_is_legacy()
    command = [sys.executable, "-m", "bench", "tpu-search", "--quick", "--out", str(tmp_path), "--compile-cache",
               str(tmp_path / "cache")]  # fmt: skip
    first = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=1500)
    assert first.returncode == 0, first.stderr
    records = load_records(tmp_path).records
    expected = {
        p.key for p in build_points(quick_grid()) if is_quick_point(p) and (p.variant.strategy is XMAP) == legacy
    }
    assert {r["search_point"] for r in records} == expected
    assert all(r["status"] == "ok" and r["fits_hbm"] for r in records)
    again = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and len(load_records(tmp_path).records) == len(records)
    assert again.stderr.count("skip ") == len(records)
    if legacy:
        return
    report = subprocess.run(
        [sys.executable, "-m", "bench", "report", str(tmp_path), "--no-plots"], cwd=REPO, capture_output=True, text=True
    )
    assert report.returncode == 0, report.stderr
    text = (tmp_path / "REPORT.md").read_text()
    assert "the design-space search" in text and "GPT-J's choice" in text and "ranks" in text
