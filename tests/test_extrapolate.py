"""The layer and micro-step extrapolations of compiler counts against hand counts, the record fields made from them,
and the substitution of xmap's missing estimate."""

import pytest

from bench.analysis.extrapolate import (
    AFFINE_IN_LAYERS,
    BILINEAR_IN_LAYERS_AND_MICROSTEPS,
    affine_in_layers,
    affine_source,
    bilinear_in_layers_and_microsteps,
    bilinear_source,
    substitute_optimal_seconds,
)
from bench.records.schema import SCHEMA_VERSION, validate
from bench.tpu_aot.compile import whole_step_costs


def test_affine_in_layers_recovers_a_hand_counted_line():
    # cost(L) = 10 + 3 L: 13 at one layer, 16 at two, 10 + 3 * 28 = 94 at GPT-J's 28
    assert affine_in_layers(13.0, 16.0, 28) == 94.0
    assert affine_in_layers(13.0, 16.0, 1) == 13.0 and affine_in_layers(13.0, 16.0, 2) == 16.0


def test_bilinear_recovers_a_hand_counted_surface():
    # cost(L, A) = 5 + 7 L + 11 A + 2 L A
    def cost(layers, microsteps):
        return 5 + 7 * layers + 11 * microsteps + 2 * layers * microsteps

    points = (cost(1, 1), cost(2, 1), cost(1, 2), cost(2, 2))
    assert points == (25, 34, 38, 49)
    assert bilinear_in_layers_and_microsteps(*points, layers=28, microsteps=16) == 5 + 196 + 176 + 896
    for layers, microsteps in ((1, 1), (2, 1), (1, 2), (2, 2), (3, 5)):
        assert bilinear_in_layers_and_microsteps(*points, layers, microsteps) == cost(layers, microsteps)


def test_a_line_through_2_and_3_layers():
    # cost(L) = 10 + 3 L from L = 2, 3 (16, 19); the default pair of the records (bench.tpu_aot.compile)
    assert affine_in_layers(16.0, 19.0, 28, first=2) == 94.0
    assert bilinear_in_layers_and_microsteps(16.0, 19.0, 99.0, 123.0, 28, 1, first=2) == 94.0

    def cost(layers, microsteps):
        return 5 + 7 * layers + 11 * microsteps + 2 * layers * microsteps

    corners = (cost(2, 1), cost(3, 1), cost(2, 2), cost(3, 2))
    assert bilinear_in_layers_and_microsteps(*corners, 28, 16, first=2) == cost(28, 16)
    points = {(la, a): point(1.0, 1.0, float(cost(la, a))) for la in (2, 3) for a in (2, 3)}
    fields = whole_step_costs(points, layers=28, microsteps=16, devices=1)  # first=2, first_microsteps=2 by default
    assert fields["xla_optimal_s_per_step_per_device"] == cost(28, 16)
    assert fields["xla_optimal_source"] == bilinear_source(2, 2)
    assert bilinear_source(2, 2).endswith("of 2 and 3 layers x 2 and 3 micro-steps")
    assert affine_source(2) == "affine in layers, from unrolled 2- and 3-layer compiles"


def test_bilinear_with_one_microstep_is_the_affine_form():
    assert bilinear_in_layers_and_microsteps(13.0, 16.0, 99.0, 123.0, 28, 1) == affine_in_layers(13.0, 16.0, 28)


def test_gradient_accumulation_hand_count():
    """A step of A micro-batches over L layers: forward and backward of each layer per micro-batch (6 units), the
    head once per micro-batch (4 units), the update once per layer (1 unit) and a fixed 2: at L=28, A=16,
    2 + 28 + 16 * 4 + 28 * 16 * 6."""

    def cost(layers, microsteps):
        return 2 + layers * 1 + microsteps * 4 + layers * microsteps * 6

    points = [cost(1, 1), cost(2, 1), cost(1, 2), cost(2, 2)]
    assert bilinear_in_layers_and_microsteps(*points, 28, 16) == 2 + 28 + 64 + 2688


@pytest.mark.parametrize("layers, microsteps", [(0, 1), (1, 0)])
def test_counts_below_one_are_refused(layers, microsteps):
    with pytest.raises(ValueError, match=">= 1"):
        bilinear_in_layers_and_microsteps(1.0, 2.0, 3.0, 4.0, layers, microsteps)
    if microsteps == 1:
        with pytest.raises(ValueError, match=">= 1"):
            affine_in_layers(1.0, 2.0, layers)


def point(flops, bytes_accessed, seconds):
    return {"flops": flops, "bytes accessed": bytes_accessed, "optimal_seconds": seconds}


def test_whole_step_costs_sum_counts_over_devices_and_keep_seconds_per_device():
    points = {(1, 1): point(13.0, 100.0, 0.5), (2, 1): point(16.0, 150.0, 0.75)}
    fields = whole_step_costs(points, layers=28, microsteps=1, devices=8, first=1)
    assert fields["xla_flops_per_step_total"] == 94.0 * 8
    assert fields["xla_bytes_accessed_per_step_total"] == (100 + 27 * 50) * 8
    assert fields["xla_optimal_s_per_step_per_device"] == 0.5 + 27 * 0.25  # per device: each runs the same program
    assert fields["xla_flops_source"] == fields["xla_optimal_source"] == AFFINE_IN_LAYERS
    assert fields["xla_cost_points"][1] == {
        "layers": 2,
        "microsteps": 1,
        "xla_flops_per_step_per_device": 16.0,
        "xla_bytes_accessed_per_step_per_device": 150.0,
        "xla_optimal_s_per_step_per_device": 0.75,
    }
    head = {"schema_version": SCHEMA_VERSION, "kind": "tpu-aot", "variant": "v", "preset": "p", "scope": "model"}
    assert validate({**head, "status": "ok", "timestamp_utc": "t", **fields}) == []


def test_whole_step_costs_with_accumulation_use_four_points():
    def seconds(layers, microsteps):
        return 1 + 2 * layers + 3 * microsteps + 4 * layers * microsteps

    points = {(la, a): point(1.0, 1.0, float(seconds(la, a))) for la in (1, 2) for a in (1, 2)}
    fields = whole_step_costs(points, layers=28, microsteps=16, devices=256, first=1, first_microsteps=1)
    assert fields["xla_optimal_s_per_step_per_device"] == seconds(28, 16)
    assert fields["xla_optimal_source"] == BILINEAR_IN_LAYERS_AND_MICROSTEPS
    assert len(fields["xla_cost_points"]) == 4


def test_a_cost_the_compiler_did_not_report_is_none_and_says_so():
    points = {(1, 1): point(13.0, 100.0, None), (2, 1): point(16.0, 150.0, None)}
    fields = whole_step_costs(points, layers=28, microsteps=1, devices=8, first=1)
    assert fields["xla_optimal_s_per_step_per_device"] is None and fields["xla_flops_per_step_total"] == 94.0 * 8
    assert "reported no optimal_seconds" in fields["xla_optimal_source"]


def aot_record(strategy, seconds, **changes):
    record = {
        "kind": "tpu-aot", "status": "ok", "variant": f"parallel-h256-{strategy}-full", "strategy": strategy,
        "residual": "parallel", "d_head": 256, "remat": "full", "preset": "gptj-6b", "scope": "model",
        "mesh_dp": 32, "mesh_mp": 8, "batch": 32, "seq": 2048, "topology": "v3:8x16", "libtpu": "0.0.1",
        "xla_optimal_s_per_step_per_device": seconds,
        "xla_optimal_source": None if seconds is None else AFFINE_IN_LAYERS,
    }  # fmt: skip
    return {**record, **changes}


def test_xmap_takes_the_matching_shard_map_estimate_and_says_so():
    xmap, shard_map = aot_record("xmap", None), aot_record("shard_map", 0.33)
    other_head = aot_record("shard_map", 0.36, d_head=128, variant="parallel-h128-shard_map-full")
    out = substitute_optimal_seconds([xmap, other_head, shard_map])
    assert (
        out[0]["xla_optimal_s_per_step_per_device"] == 0.33 and out[0]["xla_optimal_own_compile_s_per_device"] is None
    )
    source = out[0]["xla_optimal_source"]
    assert source.startswith("substituted from the shard_map compile parallel-h256-shard_map-full by libtpu 0.0.1")
    assert "libtpu 0.0.1 reports no optimal_seconds" in source and AFFINE_IN_LAYERS in source
    assert out[1:] == [other_head, shard_map] and xmap["xla_optimal_s_per_step_per_device"] is None  # inputs untouched
    assert validate({"schema_version": SCHEMA_VERSION, "timestamp_utc": "t", **out[0]}) == []


def test_across_compilers_xmap_takes_the_current_compilers_estimate_and_keeps_its_own():
    records = [aot_record("xmap", 0.45), aot_record("shard_map", 0.33, libtpu="0.0.42.1")]
    out = substitute_optimal_seconds(records)
    assert (out[0]["xla_optimal_s_per_step_per_device"], out[0]["xla_optimal_own_compile_s_per_device"]) == (0.33, 0.45)
    assert "by libtpu 0.0.42.1" in out[0]["xla_optimal_source"]
    assert "libtpu 0.0.1, which compiled this one, estimated 0.45 s" in out[0]["xla_optimal_source"]
    assert substitute_optimal_seconds(records, across_compilers=False) == records


@pytest.mark.parametrize(
    "records",
    [
        [aot_record("xmap", None), aot_record("shard_map", 0.33, mesh_dp=16, mesh_mp=16)],  # another mesh
        [aot_record("xmap", None), aot_record("shard_map", 0.33, status="failed")],
        [aot_record("xmap", None), aot_record("pjit", 0.33)],  # not the same collectives
        [aot_record("xmap", 0.30), aot_record("shard_map", 0.33)],  # the same compiler's own estimate stays
    ],
    ids=["other-mesh", "failed-donor", "pjit-donor", "has-its-own"],
)
def test_no_substitution_without_a_matching_ok_shard_map_record(records):
    assert substitute_optimal_seconds(records)[0] == records[0]


def test_a_breakdown_extrapolates_label_by_label_and_is_set_against_the_estimate():
    """Each label is its own surface: ff_in = 2 L A ms, optimizer = 1 + L ms (once per step, however many
    micro-steps), a collective only at L >= 3 (absent is 0). At GPT-J's L = 28, A = 16 the parts sum to the
    estimate's own surface, so their ratio to it is 1."""

    def parts(layers, microsteps):
        found = {"ff_in": 2e-3 * layers * microsteps, "optimizer": 1e-3 * (1 + layers)}
        return found | ({"collective mp": 1e-4 * (layers - 2)} if layers >= 3 else {})

    points = {
        (layers, steps): {
            "flops": 1.0,
            "bytes accessed": 1.0,
            "optimal_seconds": sum(parts(layers, steps).values()),
            "components": parts(layers, steps),
        }
        for layers in (2, 3)
        for steps in (2, 3)
    }
    fields = whole_step_costs(points, layers=28, microsteps=16, devices=256, first=2)
    want = {"ff_in": 2e-3 * 28 * 16, "optimizer": 1e-3 * 29, "collective mp": 1e-4 * 26}
    assert fields["component_s_per_step_per_device"] == pytest.approx(want)
    assert fields["component_sum_to_optimal_ratio"] == pytest.approx(1.0)
    assert fields["component_source"].startswith("projection: per-op roofline")
    without = whole_step_costs(
        {p: {k: v for k, v in c.items() if k != "components"} for p, c in points.items()}, 28, 16, 256, 2
    )
    assert "component_s_per_step_per_device" not in without


def test_an_xmap_compile_not_extrapolated_takes_the_shard_map_estimate_and_breakdown_and_says_why():
    xmap = aot_record("xmap", None) | {"xla_optimal_source": "not extrapolated (tpu-aot --no-extrapolate)"}
    shard_map = aot_record("shard_map", 0.33, libtpu="0.0.42.1") | {
        "component_s_per_step_per_device": {"ff_in": 0.2, "unattributed": 0.0},
        "component_source": "hand-made",
        "component_sum_to_optimal_ratio": 0.2 / 0.33,
    }
    [out, _] = substitute_optimal_seconds([xmap, shard_map])
    assert out["xla_optimal_s_per_step_per_device"] == 0.33
    assert "(same collectives; not extrapolated (tpu-aot --no-extrapolate))" in out["xla_optimal_source"]
    assert out["component_s_per_step_per_device"] == {"ff_in": 0.2, "unattributed": 0.0}
    assert out["component_sum_to_optimal_ratio"] == pytest.approx(0.2 / 0.33)


def test_anchoring_at_two_micro_steps_leaves_out_the_program_that_does_not_accumulate():
    """cost(L, A) = 5 + 7 L + (11 + 2 L) A + 3 (L + 1) for A >= 2, the last term the sum of gradients (here
    once per step, of a size that grows with L) that a 1-micro-step program does not have. Through 2 and 3 micro-
    steps the 16-micro-step step comes out exact; through 1 and 2 it is off by 14 times that sum, and the intercept
    (the update's part) loses that sum."""

    def cost(layers, microsteps):
        accumulates = 3 * (layers + 1) if microsteps > 1 else 0
        return 5 + 7 * layers + (11 + 2 * layers) * microsteps + accumulates

    at = {(la, a): float(cost(la, a)) for la in (2, 3) for a in (1, 2, 3)}
    corners = (at[2, 2], at[3, 2], at[2, 3], at[3, 3])
    assert bilinear_in_layers_and_microsteps(*corners, 28, 16, first=2, first_microsteps=2) == cost(28, 16)
    from_one = bilinear_in_layers_and_microsteps(at[2, 1], at[3, 1], at[2, 2], at[3, 2], 28, 16, first=2)
    assert from_one - cost(28, 16) == 14 * 3 * 29  # charged to each of 15 extra micro-steps, not once
