"""The design-space search at 6B (``nox -s tpu_search``, ``python -m bench tpu-search``): which mesh, remat policy,
micro-batch and parameter layout GPT-J should have chosen on its own pod, and on newer TPUs.

Planning is pure (no JAX at module level): the grid is data, one frozen ``SearchPoint`` per compile, every input is
checked before the first compile, and pruning is a function of the records already written. ``run_search`` then
compiles each point's whole step through bench.tpu_aot.compile: the compiler's fit and memory, the collectives, and
the projection's work as the per-op roofline of that program with every loop body times its trip count
(``hlo_roofline_s_per_step_per_device``, bench/projection/throughput.py's HLO_ROOFLINE). One compile a point: the four
unrolled compiles of the compiler's own estimate (``--extrapolate``) would make it five, and the default grid would
no longer fit its hour on two cores; they stay as a cross-check, which the report sets beside the ranking.

The global batch per update is kept fixed (GPT-J's 512 sequences of 2048 tokens): a point's per-replica micro-batch
m sets ``batch = dp x m`` sequences per micro-step and ``grad_accum = global batch / (dp x m)`` micro-steps.

Pruning. Once the compiler refuses a point for memory (its record says ``fits_hbm`` false with the compiler's
figures), a point that needs at least as much memory is recorded as pruned, citing the refused sibling, and not
compiled. P needs at least Q's memory when both are the same variant but for remat, on the same mesh, topology and
preset, and

- P's micro-batch is at least Q's: the parameters, optimizer state and gradient sum are the same arrays, and every
  activation the step keeps has a batch dimension m (accumulation only changes the scan's trip count); and
- P's remat keeps at least what Q's keeps (``KEEPS_AT_LEAST``): ``full`` keeps each block's input only; ``attn``
  that and the attention output; ``dots`` that and every projection output (the attention core's einsums have batch
  dimensions, so ``dots`` does not keep the attention output: ``attn`` and ``dots`` are not ordered); ``none`` keeps
  everything either keeps.

Both hold for the arrays the program keeps; the compiler could in principle rematerialise on its own under memory
pressure and fit what the rule prunes. ``--no-prune`` compiles every point, to check the rule where that matters.
Points are compiled in an order where every point's possible pruners come first (``compile_order``), and a worker
(``shard``) takes whole groups of points that can prune each other, so two workers never need each other's
refusals.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.hardware.topology import parse_topology
from model.config import (
    ConfigError,
    Head,
    Layout,
    Mesh,
    Preset,
    Remat,
    Residual,
    Strategy,
    Variant,
    apply_overrides,
    get_preset,
    validate_run,
)

# GPT-J's update: 512 sequences of 2048 tokens (mesh-transformer-jax configs/6B_roto_256.json: per-replica batch 1 x
# 32 replicas x 16 accumulation steps).
GPTJ_GLOBAL_BATCH = 512
MICRO_BATCHES = (1, 2)
SEARCH_REMATS = (Remat.NONE, Remat.FULL, Remat.DOTS, Remat.ATTN)
MP_DEGREES = (4, 8, 16)  # the mp of the grid's meshes; dp is the rest of the topology's devices
ANCHOR_MP = 8  # GPT-J's tensor-parallel degree (dp=32 x mp=8 on the v3-256)
ANCHOR = Variant(Residual.PARALLEL, Head.H256, Strategy.SHARD_MAP, Remat.FULL)  # GPT-J's choice, shard_map driver
# GPT-J's own driver: compiled in the jax 0.4.30 environment (whole step only: its libtpu is another compiler, so the
# ranking keeps the shard_map twin's estimate).
ANCHOR_XMAP = ANCHOR.replace(strategy=Strategy.XMAP)
# The other residual and head size at GPT-J's point: the sign of parallel-over-serial and h256-over-h128 per TPU
# generation.
SIGN_CHECKS = (ANCHOR.replace(residual=Residual.SERIAL), ANCHOR.replace(head=Head.H128))

# remat -> the remats whose kept activations it keeps all of (itself included); see the module docstring.
KEEPS_AT_LEAST: Mapping[Remat, frozenset[Remat]] = {
    Remat.FULL: frozenset({Remat.FULL}),
    Remat.ATTN: frozenset({Remat.ATTN, Remat.FULL}),
    Remat.DOTS: frozenset({Remat.DOTS, Remat.FULL}),
    Remat.NONE: frozenset(Remat),
}
# Within a group, least kept first: every possible pruner of a point comes before it (compile_order).
REMAT_ORDER = (Remat.FULL, Remat.ATTN, Remat.DOTS, Remat.NONE)

# The quick grid: the tiny preset on a v3-8 (8 devices), a handful of points, in CI's time.
QUICK_TOPOLOGY = "v3:2x2"
QUICK_PRESET = "tiny"
QUICK_GLOBAL_BATCH = 8


@dataclass(frozen=True)
class SearchPoint:
    """One compile of the search: a variant on a mesh of a topology with per-replica micro-batch ``micro_batch``."""

    variant: Variant
    mesh: Mesh
    micro_batch: int  # sequences per replica per micro-step
    grad_accum: int  # micro-steps per update
    topology: str
    preset: str
    anchor: bool = False  # GPT-J's own choice

    @property
    def batch(self) -> int:
        """Global sequences per micro-step."""
        return self.mesh.dp * self.micro_batch

    @property
    def key(self) -> str:
        """The point's name in records (``search_point``): unique within a topology and preset."""
        return f"{self.variant.name} dp={self.mesh.dp},mp={self.mesh.mp} m={self.micro_batch}"

    @property
    def overrides(self) -> list[str]:
        return [f"batch={self.batch}", f"grad_accum={self.grad_accum}"]

    @property
    def group(self) -> tuple[Any, ...]:
        """What the points that can prune each other share: all but remat and micro-batch."""
        return (self.variant.replace(remat=Remat.FULL), self.mesh, self.topology, self.preset)

    def resolved_preset(self) -> Preset:
        return apply_overrides(get_preset(self.preset), self.overrides)


def point(
    variant: Variant, mesh: Mesh, micro_batch: int, topology: str, preset: str, global_batch: int, anchor: bool = False
) -> SearchPoint:
    """A point keeping ``global_batch`` sequences per update; ConfigError where dp x m does not divide it."""
    per_micro_step = mesh.dp * micro_batch
    if micro_batch < 1 or global_batch % per_micro_step:
        raise ConfigError(
            f"{variant.name} on dp={mesh.dp},mp={mesh.mp} with micro-batch {micro_batch}: dp x micro-batch = "
            f"{per_micro_step} does not divide the global batch of {global_batch} sequences per update; use a "
            f"micro-batch that does (the global batch is kept fixed)"
        )
    return SearchPoint(variant, mesh, micro_batch, global_batch // per_micro_step, topology, preset, anchor)


def grid_meshes(devices: int, mp_degrees: Sequence[int] = MP_DEGREES) -> list[Mesh]:
    """dp x mp meshes spanning every device, one per tensor-parallel degree (v3:8x16: 64x4, 32x8, 16x16)."""
    return [Mesh(devices // mp, mp) for mp in mp_degrees if devices % mp == 0 and devices >= mp]


def valid_meshes_text(devices: int) -> str:
    pairs = [f"{devices // mp}x{mp}" for mp in (1, 2, 4, 8, 16, 32) if devices % mp == 0 and mp <= devices]
    return f"dp x mp = {devices}, e.g. {', '.join(pairs)}"


def parse_meshes(text: str, devices: int, topology: str) -> list[Mesh]:
    """``--meshes 64x4,32x8``: each must span the topology's devices."""
    meshes = []
    for item in filter(None, (t.strip() for t in text.split(","))):
        dp, sep, mp = item.partition("x")
        if not sep or not dp.isdigit() or not mp.isdigit() or int(dp) < 1 or int(mp) < 1:
            raise ConfigError(
                f"--meshes {text!r}: {item!r} is not DPxMP (e.g. 32x8); valid: {valid_meshes_text(devices)}"
            )
        mesh = Mesh(int(dp), int(mp))
        if mesh.devices != devices:
            raise ConfigError(
                f"--meshes: {item} has {mesh.devices} devices but topology {topology} has {devices}; valid meshes "
                f"have {valid_meshes_text(devices)}"
            )
        meshes.append(mesh)
    if not meshes:
        raise ConfigError(f"--meshes {text!r} names no mesh; valid: {valid_meshes_text(devices)}")
    return meshes


def parse_remats(text: str) -> list[Remat]:
    """``--remats none,full``: each a remat policy (model.config.Remat)."""
    remats = [Remat.parse(t.strip(), "remat") for t in text.split(",") if t.strip()]
    if not remats:
        raise ConfigError(f"--remats {text!r} names no policy; valid remat values: {', '.join(r.value for r in Remat)}")
    return remats


@dataclass(frozen=True)
class Grid:
    """What a search compiles: the axes, and where."""

    topology: str
    preset: str
    global_batch: int
    meshes: tuple[Mesh, ...]
    remats: tuple[Remat, ...] = SEARCH_REMATS
    micro_batches: tuple[int, ...] = MICRO_BATCHES
    fsdp: bool = True  # FSDP with mp on every mesh, and FSDP alone (dp = every device, mp = 1)
    fsdp_remats: tuple[Remat, ...] | None = None  # FSDP's remats and micro-batches where fewer (None: the same)
    fsdp_micro_batches: tuple[int, ...] | None = None
    sign_checks: bool = True  # serial and h128 at GPT-J's point
    xmap_anchor: bool = True  # GPT-J's own driver at GPT-J's point (jax 0.4.30 environment)


def default_grid(topology: str = "v3:8x16", meshes: Sequence[Mesh] | None = None, **changes: Any) -> Grid:
    """GPT-J-6B, 512 sequences per update, the meshes of MP_DEGREES on ``topology``'s devices."""
    devices = parse_topology(topology).devices
    found = tuple(meshes) if meshes is not None else tuple(grid_meshes(devices))
    return Grid(topology, "gptj-6b", GPTJ_GLOBAL_BATCH, found, **changes)


def quick_grid(topology: str = QUICK_TOPOLOGY) -> Grid:
    """A handful of points in CI's time (``QUICK_POINTS`` of the tiny preset on a v3-8, 8 sequences per update):
    GPT-J's choice on dp x mp=2, with micro-batch 2 and with remat none; FSDP with mp and FSDP alone."""
    devices = parse_topology(topology).devices
    meshes = (Mesh(devices // 2, 2),)
    return Grid(
        topology,
        QUICK_PRESET,
        QUICK_GLOBAL_BATCH,
        meshes,
        remats=(Remat.FULL, Remat.NONE),
        fsdp_remats=(Remat.FULL,),
        fsdp_micro_batches=(1,),
        sign_checks=False,
    )


# The quick grid's points, by (remat, layout, mp, micro-batch): each is several compiles on 2 slow cores (a tiny
# compile took 25-40 s there with two at a time), so the grid is cut to these.
QUICK_POINTS = (
    (Remat.FULL, Layout.MEGATRON, 2, 1),
    (Remat.FULL, Layout.MEGATRON, 2, 2),
    (Remat.NONE, Layout.MEGATRON, 2, 1),
    (Remat.FULL, Layout.FSDP, 2, 1),
    (Remat.FULL, Layout.FSDP, 1, 1),
)


def is_quick_point(p: SearchPoint) -> bool:
    return p.variant.strategy is Strategy.XMAP or (p.variant.remat, p.variant.layout, p.mesh.mp, p.micro_batch) in (
        QUICK_POINTS
    )


def anchor_mesh(grid: Grid) -> Mesh:
    """GPT-J's tensor-parallel degree where the grid has it, else the grid's first mesh."""
    return next((m for m in grid.meshes if m.mp == ANCHOR_MP), grid.meshes[0])


def build_points(grid: Grid) -> list[SearchPoint]:
    """Every point of ``grid``, the anchor marked, after the checks that need no compile (check_points)."""
    devices = parse_topology(grid.topology).devices
    make = lambda v, mesh, m, anchor=False: point(v, mesh, m, grid.topology, grid.preset, grid.global_batch, anchor)  # noqa: E731
    layouts = (Layout.MEGATRON, Layout.FSDP) if grid.fsdp else (Layout.MEGATRON,)
    base = anchor_mesh(grid)
    fsdp_remats = grid.fsdp_remats or grid.remats
    fsdp_micro_batches = grid.fsdp_micro_batches or grid.micro_batches
    points = []
    for layout in layouts:
        remats, micro_batches = (
            (fsdp_remats, fsdp_micro_batches) if layout is Layout.FSDP else (grid.remats, grid.micro_batches)
        )
        for mesh in grid.meshes:
            for remat in remats:
                for m in micro_batches:
                    variant = ANCHOR.replace(remat=remat, layout=layout)
                    is_anchor = variant == ANCHOR and mesh == base and m == 1
                    points.append(make(variant, mesh, m, is_anchor))
    if grid.fsdp:  # FSDP alone: every device a data-parallel replica
        alone = Mesh(devices, 1)
        points += [
            make(ANCHOR.replace(remat=r, layout=Layout.FSDP), alone, m) for r in fsdp_remats for m in fsdp_micro_batches
        ]
    if grid.sign_checks:
        points += [make(v, base, 1) for v in SIGN_CHECKS]
    if grid.xmap_anchor:
        points.append(make(ANCHOR_XMAP, base, 1, True))
    check_points(points)
    return points


def check_points(points: Iterable[SearchPoint]) -> None:
    """Every check that can fail on the grid's input, before any compile: the mesh spans the topology, and
    model.config.validate_run (divisibility, the FSDP layout's strategy and its d_model over dp)."""
    for p in points:
        devices = parse_topology(p.topology).devices
        if p.mesh.devices != devices:
            raise ConfigError(
                f"{p.key}: mesh dp={p.mesh.dp},mp={p.mesh.mp} has {p.mesh.devices} devices but topology {p.topology} "
                f"has {devices}; valid meshes have {valid_meshes_text(devices)}"
            )
        try:
            validate_run(p.resolved_preset(), p.variant, p.mesh, devices)
        except ConfigError as error:
            raise ConfigError(f"search point {p.key} on {p.topology}: {error}") from None


def compile_order(points: Iterable[SearchPoint]) -> list[SearchPoint]:
    """Groups in their first-seen order; within one, micro-batch ascending, then remat by REMAT_ORDER: every point
    that could prune another (``dominates``) comes before it."""
    groups: dict[tuple, list[SearchPoint]] = {}
    for p in points:
        groups.setdefault(p.group, []).append(p)
    key = lambda p: (p.micro_batch, REMAT_ORDER.index(p.variant.remat))  # noqa: E731
    return [p for members in groups.values() for p in sorted(members, key=key)]


def compiles_of(p: SearchPoint, extrapolate: bool = False) -> int:
    """Compiles a point costs when nothing is cached or pruned: the whole step, and with ``extrapolate`` 4 unrolled
    compiles more where it accumulates gradients and 2 where it does not (bench.tpu_aot.compile.extrapolation_grid)."""
    return 1 + (4 if p.grad_accum > 1 else 2) * extrapolate


def shard(points: Sequence[SearchPoint], index: int, count: int, extrapolate: bool = False) -> list[SearchPoint]:
    """Worker ``index`` of ``count``'s points, in compile order: whole groups (a refusal prunes only in its own
    group), the costliest first (``compiles_of``) to the worker with the least so far (the first on a tie)."""
    if not 0 <= index < count:
        raise ConfigError(f"--shard {index}/{count}: expected K/N with 0 <= K < N")
    ordered = compile_order(points)
    costs: dict[tuple, int] = {}
    for p in ordered:
        costs[p.group] = costs.get(p.group, 0) + compiles_of(p, extrapolate)
    loads, owner = [0] * count, {}
    for group in sorted(costs, key=lambda g: -costs[g]):  # stable: first-seen order among equal costs
        worker = loads.index(min(loads))
        owner[group], loads[worker] = worker, loads[worker] + costs[group]
    return [p for p in ordered if owner[p.group] == index]


def dominates(refused: SearchPoint, p: SearchPoint) -> str | None:
    """Why ``p`` needs at least the memory of ``refused`` (the module docstring's rules), or None."""
    if p == refused or p.group != refused.group or p.micro_batch < refused.micro_batch:
        return None
    if refused.variant.remat not in KEEPS_AT_LEAST[p.variant.remat]:
        return None
    parts = []
    if p.micro_batch > refused.micro_batch:
        parts.append(f"micro-batch {p.micro_batch} > {refused.micro_batch}: every kept activation is larger")
    if p.variant.remat is not refused.variant.remat:
        parts.append(f"remat {p.variant.remat.value} keeps all that {refused.variant.remat.value} keeps")
    return "; ".join(parts) + " (same variant otherwise, mesh, topology and preset)"


@dataclass(frozen=True)
class Refusal:
    """A point the compiler refused for memory, with its figures (bytes per device)."""

    point: SearchPoint
    required_bytes: float | None
    available_bytes: float | None


def pruner(p: SearchPoint, refusals: Iterable[Refusal]) -> tuple[Refusal, str] | None:
    """The first refusal that dominates ``p``, with the rule, or None."""
    for refusal in refusals:
        rule = dominates(refusal.point, p)
        if rule:
            return refusal, rule
    return None


# --- records ---------------------------------------------------------------------------------------------------


def search_fields(p: SearchPoint) -> dict[str, Any]:
    """What a search record adds to a tpu-aot record (bench.records.schema.Search)."""
    return {"search_point": p.key, "search_micro_batch": p.micro_batch, "search_anchor": p.anchor}


def _same_run(record: Mapping[str, Any], p: SearchPoint, jax_version: str) -> bool:
    return (
        record.get("search_point") == p.key
        and record.get("topology") == p.topology
        and record.get("preset") == p.preset
        and record.get("jax") == jax_version
    )


def is_final(record: Mapping[str, Any]) -> bool:
    """A search record a rerun keeps: compiled (ok), refused for memory, or pruned. Other failures compile again."""
    return record.get("status") == "ok" or record.get("fits_hbm") is False


def finished(records: Iterable[Mapping[str, Any]], p: SearchPoint, jax_version: str) -> bool:
    return any(_same_run(r, p, jax_version) and is_final(r) for r in records)


def refusals_in(records: Iterable[Mapping[str, Any]], points: Iterable[SearchPoint], jax_version: str) -> list[Refusal]:
    """The compiler's memory refusals among ``records`` (not prunes: a pruned point was never compiled)."""
    found = []
    for p in points:
        for r in records:
            if _same_run(r, p, jax_version) and r.get("fits_hbm") is False and not r.get("pruned_by"):
                required = r.get("oom_required_bytes_per_device") or r.get("mem_peak_estimate_bytes_per_device")
                available = r.get("oom_available_hbm_bytes_per_device") or r.get("hbm_bytes_per_device")
                found.append(Refusal(p, required, available))
                break
    return found


def pruned_record(p: SearchPoint, refusal: Refusal, rule: str) -> dict[str, Any]:
    """A failed tpu-aot record for a point not compiled: it needs at least ``refusal``'s memory."""
    from bench.records.context import base_record
    from bench.records.schema import RecordKind
    from model.config import Scope

    record = base_record(p.variant, p.resolved_preset(), p.mesh, Scope.MODEL, repeat=0, kind=RecordKind.TPU_AOT)
    gib = 2**30
    figures = (
        f"{refusal.required_bytes / gib:.2f} GiB of {refusal.available_bytes / gib:.2f}"
        if refusal.required_bytes and refusal.available_bytes
        else "figures not recorded"
    )
    record.update(
        search_fields(p),
        backend="tpu",
        topology=p.topology,
        fits_hbm=False,
        pruned_by=refusal.point.key,
        pruned_rule=rule,
        pruned_by_required_bytes_per_device=refusal.required_bytes,
        pruned_by_available_bytes_per_device=refusal.available_bytes,
        error=f"pruned, not compiled: the compiler refused {refusal.point.key} ({figures}); {rule}",
    )
    return record


def run_search(
    points: Sequence[SearchPoint], out: Path, cache: Any = None, extrapolate: bool = False, prune: bool = True
) -> int:
    """Compile ``points`` in compile order (one topology), pruning as refusals come; skip points ``out`` already
    holds a final record of (``is_final``: reruns resume). Returns the number of failures that are not findings."""
    import jax

    from bench.records.schema import Status
    from bench.records.store import append_record, load_records
    from bench.tpu_aot.compile import _print, check_mesh, compile_record, is_finding
    from bench.tpu_aot.env import topology_devices

    ordered = compile_order(points)
    if not ordered:
        return 0
    topologies = {p.topology for p in ordered}
    if len(topologies) != 1:
        raise ConfigError(f"one topology per search run, got {sorted(topologies)}")
    devices = topology_devices(ordered[0].topology)
    failures = 0
    for p in ordered:
        check_mesh(p.mesh, len(devices), p.topology)
        records = load_records(out).records  # reread: a resumed run, and the refusals so far
        if finished(records, p, jax.__version__):
            print(f"skip {p.key}: already recorded in {out}", file=sys.stderr)
            continue
        found = pruner(p, refusals_in(records, ordered, jax.__version__)) if prune else None
        start = time.perf_counter()
        if found:
            record = pruned_record(p, *found)
            print(f"{p.key}: pruned ({record['error']})", file=sys.stderr)
        else:
            record = compile_record(p.resolved_preset(), p.variant, p.mesh, p.topology, devices, cache, extrapolate)
            record.update(search_fields(p))
            if record.get("fits_hbm") is False and record["status"] != Status.OK.value:  # a finding, not a failure
                print(f"{p.key}: does not fit: {record['error'][:200]}", file=sys.stderr)
            else:
                _print({**record, "variant": p.key}, time.perf_counter() - start)
        append_record(out, record)
        failures += record["status"] != Status.OK.value and not is_finding(record)
    return failures


def describe(points: Sequence[SearchPoint]) -> str:
    """The plan, one line per point in compile order (``--list``)."""
    return "\n".join(
        f"{p.topology} {p.preset} {p.key}: batch {p.batch} x accumulation {p.grad_accum}" + (" (GPT-J)" * p.anchor)
        for p in compile_order(points)
    )
