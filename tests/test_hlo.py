"""bench.analysis.hlo (collectives in optimized HLO), .collectives (kinds) and .comm (wire bytes), by hand count.

Snippets in tests/data/hlo are real XLA CPU output unless their header comment says hand-written.
Per-device shapes on the (dp=2, mp=4) mesh: an [8, 16] f32 input sharded P("dp", "mp") is
[4, 4] f32 = 64 bytes per device.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import require_devices

from bench.analysis import comm
from bench.analysis.hlo import (
    Collective,
    CollectiveKind,
    GroupMode,
    async_overlap,
    device_groups,
    instruction_opcodes,
    iota_replica_groups,
    mesh_axis_of_groups,
    parse_collectives,
    parse_replica_groups,
    shape_bytes,
    shape_bytes_by_dtype,
)
from bench.records.collectives import AXIS_LABELS, KIND_LABELS, OpForm, axis_key, collective_opcode, mesh_axis_values
from model import compat

DATA = Path(__file__).parent / "data" / "hlo"
MESH = np.arange(8).reshape(2, 4)  # SPMD partition id at each (dp, mp) position
MP_GROUPS = ((0, 1, 2, 3), (4, 5, 6, 7))
DP_GROUPS = ((0, 4), (1, 5), (2, 6), (3, 7))


def parse(name: str) -> list[Collective]:
    return parse_collectives((DATA / name).read_text(), MESH)


def by_kind(collectives: list[Collective], kind: CollectiveKind) -> list[Collective]:
    return [c for c in collectives if c.kind is kind]


# --- shapes and groups --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ("(f32[8,16]{1,0}, bf16[4])", {"f32": 512, "bf16": 8}),
        ("f32[]", {"f32": 4}),
        ("pred[3]{0}", {"pred": 3}),
        ("s4[3]", {"s4": 2}),  # 12 bits round up to 2 bytes
        ("token[]", {"token": 0}),
        ("f32[<=8,2]", {"f32": 64}),  # bounded dynamic dim counts at its bound
        ("bf16[128,256]{1,0:T(8,128)(2,1)}", {"bf16": 65536}),  # TPU tiled layout ignored
        ("((f32[2]), c64[2], s64[1], u8[5])", {"f32": 8, "c64": 16, "s64": 8, "u8": 5}),
    ],
)
def test_shape_bytes_by_dtype(shape: str, expected: dict[str, int]) -> None:
    assert shape_bytes_by_dtype(shape) == expected
    assert shape_bytes(shape) == sum(expected.values())


def test_unknown_dtype_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown HLO element type 'q7'"):
        shape_bytes_by_dtype("q7[4]")


def test_iota_replica_groups_match_hand_expansion() -> None:
    assert iota_replica_groups(2, 4, [8]) == MP_GROUPS
    # iota(8) as [2, 4] transposed to [4, 2]: rows are the columns of [[0,1,2,3],[4,5,6,7]]
    assert iota_replica_groups(4, 2, [2, 4], [1, 0]) == DP_GROUPS
    # element [i, j, k] of iota(8).reshape(2, 2, 2) is 4i + 2j + k; T(2,1,0) walks k, then j, then i
    assert iota_replica_groups(2, 4, [2, 2, 2], [2, 1, 0]) == ((0, 4, 2, 6), (1, 5, 3, 7))


def test_parse_replica_groups_forms() -> None:
    assert parse_replica_groups("{}") == ()
    assert parse_replica_groups("{{0,1},{2,3}}") == ((0, 1), (2, 3))
    assert parse_replica_groups("[4,2]<=[2,4]T(1,0)") == DP_GROUPS
    with pytest.raises(ValueError, match="need 8 ids, got 6"):
        parse_replica_groups("[2,4]<=[6]")
    with pytest.raises(ValueError, match="expected"):
        parse_replica_groups("0,1,2")


def test_device_groups_follow_group_mode() -> None:
    # 2 replicas x 2 partitions: flattened id = replica * 2 + partition
    assert device_groups(((0, 1),), GroupMode.CROSS_PARTITION, 2, 2) == ((0, 1), (2, 3))
    assert device_groups(((0, 1),), GroupMode.CROSS_REPLICA, 2, 2) == ((0, 2), (1, 3))
    assert device_groups(((0, 1),), GroupMode.CROSS_REPLICA_AND_PARTITION, 2, 2) == ((0, 1, 2, 3),)
    assert device_groups((), GroupMode.FLATTENED_ID, 2, 2) == ((0, 1, 2, 3),)


def test_mesh_axis_of_groups_uses_mesh_positions() -> None:
    names = ("dp", "mp")
    assert mesh_axis_of_groups(MP_GROUPS, MESH, names) == "mp"
    assert mesh_axis_of_groups(DP_GROUPS, MESH, names) == "dp"
    assert mesh_axis_of_groups(((0, 5),), MESH, names) == "dp+mp"
    assert mesh_axis_of_groups(((3,),), MESH, names) == "none"
    column_major = np.array([[0, 2, 4, 6], [1, 3, 5, 7]])  # ids placed down the dp axis first
    assert mesh_axis_of_groups(((0, 1),), column_major, names) == "dp"
    assert mesh_axis_of_groups(((0, 2),), column_major, names) == "mp"
    with pytest.raises(ValueError, match=r"device ids \[9\] are not in the mesh"):
        mesh_axis_of_groups(((0, 9),), MESH, names)


# --- snippets -----------------------------------------------------------------------------------


def test_tuple_allreduce() -> None:
    # jax 0.10.2 combines psum((a, b)) into one tuple all-reduce; CPU reduces bf16 in f32, so b: bf16[4] -> f32[4]
    (ar,) = parse("tuple_allreduce.txt")
    assert ar.kind is CollectiveKind.ALL_REDUCE
    assert ar.payload_bytes == 4 * 4 * 4 + 4 * 4
    assert ar.bytes_by_dtype == (("f32", 80),)
    assert (ar.group_size, ar.replica_groups, ar.mesh_axis) == (4, MP_GROUPS, "mp")
    assert (ar.channel_id, ar.use_global_device_ids, ar.group_mode) == (1, True, GroupMode.FLATTENED_ID)
    assert (ar.multiplier, ar.is_async, ar.empty_groups) == (1, False, False)


def test_async_pairs_count_once_at_start() -> None:
    collectives = parse("async_gpu.txt")
    assert sorted(c.kind.key for c in collectives) == ["allgather", "allreduce", "collectivepermute", "reducescatter"]
    assert all(c.is_async and c.multiplier == 1 for c in collectives)
    (ar,) = by_kind(collectives, CollectiveKind.ALL_REDUCE)
    assert ar.bytes_by_dtype == (("f32", 8 * 16 * 4), ("bf16", 4 * 2))
    assert (ar.payload_bytes, ar.dtypes, ar.mesh_axis) == (520, ("f32", "bf16"), "mp")
    (ag,) = by_kind(collectives, CollectiveKind.ALL_GATHER)
    assert ag.payload_bytes == 8 * 2  # result bf16[8]; the start's shape also holds the operand
    assert (ag.replica_groups, ag.group_size, ag.mesh_axis) == (DP_GROUPS, 2, "dp")
    (cp,) = by_kind(collectives, CollectiveKind.COLLECTIVE_PERMUTE)
    assert cp.payload_bytes == 512
    assert cp.source_target_pairs[:2] == ((0, 4), (4, 0))
    assert cp.mesh_axis == "dp"
    (rs,) = by_kind(collectives, CollectiveKind.REDUCE_SCATTER)
    assert (rs.computation, rs.payload_bytes, rs.replica_groups) == ("wrapped_reduce_scatter", 512, MP_GROUPS)


@pytest.mark.parametrize("name", ["while_nested.txt", "while_nested_jax0430.txt"])
def test_nested_while_multipliers_multiply(name: str) -> None:
    # inner fori_loop(0, 3) with psum over mp inside outer fori_loop(0, 5) that also psums over dp
    collectives = parse(name)
    assert sorted((c.mesh_axis, c.multiplier) for c in collectives) == [("dp", 5), ("mp", 15)]
    assert all(c.trip_counts_known and c.payload_bytes == 64 for c in collectives)


def test_jax0430_trip_counts_are_inferred_without_backend_config() -> None:
    text = (DATA / "while_nested_jax0430.txt").read_text()
    assert "known_trip_count" not in text  # jaxlib 0.4.30's CPU pipeline does not annotate loops
    assert "known_trip_count" in (DATA / "while_nested.txt").read_text()


def test_async_pairs_with_compute_under_them_are_overlappable() -> None:
    """async_overlap.txt (hand-written, scheduled order): a 3-trip loop whose body has an mp all-reduce with a fusion
    under it and a dp all-gather with nothing under it; then a synchronous dp all-reduce, and a wrapped mp
    reduce-scatter with a convolution under it (the fusion just before its start does not count)."""
    text = (DATA / "async_overlap.txt").read_text()
    collectives = {c.name: c for c in parse_collectives(text, MESH)}
    overlapped = {name: (c.overlapped, c.mesh_axis, c.multiplier) for name, c in collectives.items()}
    assert overlapped == {
        "ars": (True, "mp", 3),
        "ags": (False, "dp", 3),
        "rs": (True, "mp", 1),
        "sync": (False, "dp", 1),
    }
    # payload per device: f32[4,4] = 64 bytes; the all-gather's is its result, f32[8,4] = 128
    assert async_overlap(text, MESH) == {
        "mp": {"overlappable": 3 * 64 + 64, "exposed": 0},
        "dp": {"overlappable": 0, "exposed": 3 * 128 + 64},
    }


def test_async_pairs_with_nothing_between_are_exposed() -> None:
    assert not any(c.overlapped for c in parse("async_gpu.txt"))
    assert not any(c.overlapped for c in parse("while_nested.txt"))  # synchronous collectives


def test_allgather_payload_is_result_and_reducescatter_payload_is_operand() -> None:
    collectives = parse("allgather_reducescatter_jax0430.txt")
    (ag,) = by_kind(collectives, CollectiveKind.ALL_GATHER)
    (rs,) = by_kind(collectives, CollectiveKind.REDUCE_SCATTER)
    assert (ag.payload_bytes, ag.group_size, ag.mesh_axis) == (16 * 4 * 4, 4, "mp")  # f32[4,4] -> f32[16,4]
    assert (rs.payload_bytes, rs.group_size, rs.mesh_axis) == (16 * 4 * 4, 2, "dp")  # f32[16,4] -> f32[8,4]
    assert comm.collective_wire_bytes(ag) == 192  # 3/4 * 256
    assert comm.collective_wire_bytes(rs) == 128  # 1/2 * 256


def test_iota_groups_from_gspmd() -> None:
    # a @ b contracts over dp ([4,2]<=[2,4]T(1,0)), c @ d over mp ([2,4]<=[8])
    dp, mp = parse("iota_groups.txt")
    assert (dp.replica_groups, dp.mesh_axis, dp.payload_bytes) == (DP_GROUPS, "dp", 16 * 16 * 4)
    assert (mp.replica_groups, mp.mesh_axis, mp.payload_bytes) == (MP_GROUPS, "mp", 16 * 32 * 4)


def test_collective_permute_and_alltoall() -> None:
    collectives = parse("permute_alltoall.txt")
    (cp,) = by_kind(collectives, CollectiveKind.COLLECTIVE_PERMUTE)
    (a2a,) = by_kind(collectives, CollectiveKind.ALL_TO_ALL)
    shift = tuple((d, 4 * (d // 4) + (d + 1) % 4) for d in range(8))  # i -> i+1 mod 4 within each dp row
    assert sorted(cp.source_target_pairs) == sorted(shift)
    assert (cp.multiplier, cp.payload_bytes, cp.mesh_axis) == (2, 8 * 4 * 4, "mp")  # scan of length 2
    assert (a2a.payload_bytes, a2a.group_size, a2a.mesh_axis) == (4 * 2 * 4 * 4, 4, "mp")  # 4 x f32[2,4]
    assert a2a.group_mode is GroupMode.CROSS_PARTITION  # all-to-all has no use_global_device_ids field
    totals = comm.summarize(collectives)
    assert totals["comm_collectivepermute_wire_bytes_per_device"] == 2 * 128
    assert totals["comm_alltoall_wire_bytes_per_device"] == 96  # 3/4 * 128


def test_empty_groups_multiple_call_paths_and_conditional() -> None:
    layer, then = parse("empty_groups_calls.txt")
    # %layer runs 4 times from the loop body and once from ENTRY
    assert (layer.computation, layer.multiplier) == ("layer", 5)
    assert (layer.empty_groups, layer.group_size, layer.mesh_axis) == (True, 8, "dp+mp")
    assert (layer.group_mode, layer.channel_id) == (GroupMode.CROSS_REPLICA, None)
    assert (then.computation, then.multiplier, then.mesh_axis) == ("then", 1, "mp")


def test_counted_loop_inferred_and_unknown() -> None:
    text = (DATA / "empty_groups_calls.txt").read_text()
    inferred = text.replace(', backend_config={"known_trip_count":{"n":"4"}}', "")
    layer, _ = parse_collectives(inferred, MESH)
    assert (layer.multiplier, layer.trip_counts_known) == (5, True)
    unknown = inferred.replace("direction=LT", "direction=NE")
    layer, then = parse_collectives(unknown, MESH)
    assert (layer.multiplier, layer.trip_counts_known) == (2, False)  # loop counted once
    assert then.trip_counts_known


def test_no_mesh_leaves_axis_unset() -> None:
    (ar,) = parse_collectives((DATA / "tuple_allreduce.txt").read_text())
    assert ar.mesh_axis is None
    with pytest.raises(ValueError, match="pass mesh_ids"):
        comm.summarize([ar])
    assert comm.summarize([ar], axis_names=None)["comm_allreduce_count"] == 1


def test_text_without_entry_is_rejected() -> None:
    with pytest.raises(ValueError, match="no ENTRY computation"):
        parse_collectives("HloModule m\n")


# --- wire bytes ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "wire"),
    [
        (CollectiveKind.ALL_REDUCE, 1536),  # 2 * 3/4 * 1024
        (CollectiveKind.ALL_GATHER, 768),  # 3/4 * 1024
        (CollectiveKind.REDUCE_SCATTER, 768),
        (CollectiveKind.ALL_TO_ALL, 768),
        (CollectiveKind.COLLECTIVE_PERMUTE, 1024),
    ],
)
def test_wire_bytes_hand_counts(kind: CollectiveKind, wire: float) -> None:
    assert comm.wire_bytes(kind, 1024, 4) == wire


def test_wire_bytes_edge_groups() -> None:
    assert comm.allreduce_wire_bytes(1000, 1) == 0  # alone: nothing to send
    assert comm.allreduce_wire_bytes(1000, 2) == 1000  # 2 * 1/2 * S
    assert comm.allgather_wire_bytes(300, 3) == 200
    with pytest.raises(ValueError, match="group_size must be >= 1"):
        comm.wire_bytes(CollectiveKind.ALL_REDUCE, 8, 0)


def test_axis_labels() -> None:
    assert comm.axis_labels(("dp", "mp")) == ["dp", "mp", "dp+mp", "none"]


def test_summarize_nested_loops() -> None:
    totals = comm.summarize(parse("while_nested.txt"))
    assert totals["comm_allreduce_count"] == 20
    assert totals["comm_mp_allreduce_count"] == 15
    assert totals["comm_dp_allreduce_count"] == 5
    assert totals["comm_mp_allreduce_bytes_per_device"] == 15 * 64
    assert totals["comm_mp_wire_bytes_per_device"] == 15 * 1.5 * 64  # n=4: 2 * 3/4
    assert totals["comm_dp_wire_bytes_per_device"] == 5 * 1.0 * 64  # n=2: 2 * 1/2
    assert totals["comm_dpmp_wire_bytes_per_device"] == 0
    assert totals["comm_wire_bytes_per_device"] == 15 * 96 + 5 * 64
    assert totals["comm_bytes_per_device"] == 20 * 64
    assert totals["comm_dtype_f32_bytes_per_device"] == 20 * 64
    assert totals["comm_allgather_count"] == 0
    assert totals["comm_trip_counts_known"] is True


def test_summarize_async_mixed_dtypes() -> None:
    totals = comm.summarize(parse("async_gpu.txt"))
    assert totals["comm_dtype_f32_bytes_per_device"] == 512 + 512 + 512  # all-reduce part, permute, reduce-scatter
    assert totals["comm_dtype_bf16_bytes_per_device"] == 8 + 16
    assert totals["comm_mp_allreduce_wire_bytes_per_device"] == 780  # 2 * 3/4 * 520
    assert totals["comm_dp_wire_bytes_per_device"] == 8 + 512  # all-gather 1/2 * 16, permute 512
    assert totals["comm_mp_reducescatter_wire_bytes_per_device"] == 384  # 3/4 * 512


# --- live compile -------------------------------------------------------------------------------


def test_live_shard_map_scan() -> None:
    """psum over mp in a scan of 3 and one psum over dp, compiled now by this venv's XLA."""
    import jax
    from jax import lax
    from jax.sharding import Mesh
    from jax.sharding import PartitionSpec as P

    require_devices(8)
    mesh = Mesh(np.array(jax.devices()[:8]).reshape(2, 4), ("dp", "mp"))

    def step(x):  # x: [4, 4] f32 per device
        def body(carry, _):
            return lax.psum(carry, "mp") * 0.5, None

        carry, _ = lax.scan(body, x, None, length=3)
        return lax.psum(carry, "dp")

    fn = compat.shard_map(step, mesh=mesh, in_specs=P("dp", "mp"), out_specs=P("dp", "mp"))
    text = jax.jit(fn).lower(np.ones((8, 16), np.float32)).compile().as_text()
    totals = comm.summarize(parse_collectives(text, MESH))
    assert totals["comm_mp_allreduce_count"] == 3
    assert totals["comm_dp_allreduce_count"] == 1
    assert totals["comm_mp_allreduce_bytes_per_device"] == 3 * 64
    assert totals["comm_dp_allreduce_bytes_per_device"] == 64
    assert totals["comm_wire_bytes_per_device"] == 3 * 96 + 64  # n=4: 2 * 3/4 * 64; n=2: 2 * 1/2 * 64
    assert totals["comm_trip_counts_known"] is True


def test_mesh_form_of_replica_groups_from_current_xla():
    # Printed by jax 0.10.2's CPU compiler for a pjit (GSPMD) step on a (dp=2, mp=4) mesh.
    from bench.analysis.hlo import mesh_replica_groups

    transposed = mesh_replica_groups("mesh['axis_0'=4,'axis_1'=1,'axis_2'=2]", "([2,4]T(1,0)) {'axis_0'}")
    assert transposed == ((0, 1, 2, 3), (4, 5, 6, 7))  # ids [0,4,1,5,2,6,3,7] laid on (4,1,2), along axis_0
    plain = mesh_replica_groups("mesh['axis_0'=2,'axis_1'=1,'axis_2'=4] {'axis_2'}", None)
    assert plain == ((0, 1, 2, 3), (4, 5, 6, 7))
    across = mesh_replica_groups("mesh['axis_0'=2,'axis_1'=1,'axis_2'=4] {'axis_0'}", None)
    assert across == ((0, 4), (1, 5), (2, 6), (3, 7))


def test_mesh_form_in_an_instruction_line():
    line = (
        "  ROOT %all-reduce.16 = f32[2,16,1024]{2,1,0} all-reduce(%p), channel_id=23, "
        "replica_groups=mesh['axis_0'=4,'axis_1'=1,'axis_2'=2], device_ids=([2,4]T(1,0)) {'axis_0'}, "
        "use_global_device_ids=true, to_apply=%add"
    )
    text = """HloModule m, num_partitions=8

%add (a: f32[], b: f32[]) -> f32[] {
  %a = f32[] parameter(0)
  %b = f32[] parameter(1)
  ROOT %s = f32[] add(%a, %b)
}

ENTRY %main (p: f32[2,16,1024]) -> f32[2,16,1024] {
  %p = f32[2,16,1024]{2,1,0} parameter(0)
LINE
}
""".replace("LINE", line)
    (collective,) = parse_collectives(text, np.arange(8).reshape(2, 4))
    assert collective.group_size == 4 and collective.mesh_axis == "mp"
    assert collective.payload_bytes == 2 * 16 * 1024 * 4


# --- the collective-kinds table -------------------------------------------------------------------------------------


def test_collective_opcodes_name_kind_and_form() -> None:
    assert collective_opcode("all-reduce") == (CollectiveKind.ALL_REDUCE, OpForm.SYNC)
    assert collective_opcode("all-gather-start") == (CollectiveKind.ALL_GATHER, OpForm.START)
    assert collective_opcode("collective-permute-done") == (CollectiveKind.COLLECTIVE_PERMUTE, OpForm.DONE)
    assert collective_opcode("async-start") is None and collective_opcode("reduce") is None
    assert CollectiveKind.REDUCE_SCATTER.key == "reducescatter"


def test_report_labels_come_from_the_table() -> None:
    assert KIND_LABELS == {
        "allreduce": "all-reduce",
        "allgather": "all-gather",
        "reducescatter": "reduce-scatter",
        "alltoall": "all-to-all",
        "collectivepermute": "collective-permute",
    }
    assert list(AXIS_LABELS.items()) == [("mp", "mp"), ("dp", "dp"), ("dpmp", "dp+mp"), ("none", "no mesh axis")]
    assert [axis_key(axis) for axis in mesh_axis_values()] == ["dp", "mp", "dpmp", "none"]
    assert comm.axis_labels(("dp", "mp")) == mesh_axis_values(("dp", "mp"))


def test_instruction_opcodes_of_a_compiled_module() -> None:
    opcodes = instruction_opcodes((DATA / "tuple_allreduce.txt").read_text())
    assert "all-reduce" in opcodes.values()
    assert all(opcode and " " not in opcode for opcode in opcodes.values())
