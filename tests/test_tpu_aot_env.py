"""TPU ahead-of-time compile environment: pure helpers everywhere, real libtpu compiles where libtpu is installed.

The `tpu_aot` tests need the .venv-tpu (jax 0.10.2) or .venv-tpu-xmap (jax 0.4.30) environment from
requirements/tpu.txt / requirements/tpu-xmap.txt; elsewhere they skip, saying so.
"""

import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import skip_without_xmap
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from bench.analysis import hlo as hlo_parser
from bench.tpu_aot.env import (
    ACCEPTED_FORM,
    TopologyError,
    accelerator_type_for,
    apply_tpu_compile_env,
    compile_with_optimized_hlo,
    installed_jax_is_legacy,
    libtpu_available,
    topology_devices,
    tpu_compile_env,
)
from model import compat

# --- accelerator types (topology strings are parsed, and tested, in bench.hardware.topology) ----------------------


# Hand counts against the Cloud TPU docs' own examples: v3-8 is one 2x2 host (4 chips, 8 cores), "v4-32 ... 16
# chips", "v5p-32 ... 32 TensorCores (16 chips)", v5e and v6e types count chips.
@pytest.mark.parametrize(
    "topology, accelerator_type",
    [
        ("v3:2x2", "v3-8"),
        ("v3:8x16", "v3-256"),
        ("v2:4x4", "v2-32"),
        ("v4:2x2x1", "v4-8"),
        ("v4:2x2x4", "v4-32"),
        ("v5p:2x2x4", "v5p-32"),
        ("v5e:2x2", "v5litepod-4"),
        ("v5e:16x16", "v5litepod-256"),
        ("v6e:16x16", "v6e-256"),
    ],
)
def test_accelerator_type_follows_cloud_naming(topology, accelerator_type):
    assert accelerator_type_for(topology) == accelerator_type


# --- environment -------------------------------------------------------------------------------------------------


def test_compile_env_keeps_runtime_on_cpu_and_skips_metadata_server():
    before = dict(os.environ)
    env = tpu_compile_env("v3:8x16", jax_legacy=False)
    assert env == {
        "JAX_PLATFORMS": "cpu",
        "TPU_SKIP_MDS_QUERY": "1",
        "TPU_WORKER_HOSTNAMES": "localhost",
        "TPU_WORKER_ID": "0",
        "TPU_ACCELERATOR_TYPE": "v3-256",
        "ALLOW_MULTIPLE_LIBTPU_LOAD": "1",
    }
    assert dict(os.environ) == before  # pure: nothing set


def test_legacy_env_adds_pjrt_compatibility_only():
    modern, legacy = tpu_compile_env("v4:2x2x1", jax_legacy=False), tpu_compile_env("v4:2x2x1", jax_legacy=True)
    assert legacy == {**modern, "ENABLE_PJRT_COMPATIBILITY": "1"}


def test_compile_env_rejects_bad_topology():
    with pytest.raises(TopologyError, match="expected"):
        tpu_compile_env("v3:8x16x2", jax_legacy=False)


def test_legacy_flag_matches_the_running_jax():
    major, minor = (int(p) for p in jax.__version__.split(".")[:2])
    assert installed_jax_is_legacy() == ((major, minor) < (0, 5))


@pytest.mark.parametrize(
    "version, release",
    [("0.4.30", (0, 4, 30)), ("0.10.2", (0, 10, 2)), ("0.4.30rc1", (0, 4, 30)), ("0.5.0.dev20250101", (0, 5, 0))],
)
def test_version_tuple_reads_the_release(version, release):
    assert compat.version_tuple(version) == release


def test_version_predicates_and_unreadable_versions():
    assert compat.jax_needs_pjrt_compatibility("0.4.30") and compat.jax_needs_pjrt_compatibility("0.4.38")
    assert not compat.jax_needs_pjrt_compatibility("0.5.0") and not compat.jax_needs_pjrt_compatibility("0.10.2")
    assert compat.jaxlib_cpu_collectives_deadlock("0.4.30") and not compat.jaxlib_cpu_collectives_deadlock("0.4.31")
    with pytest.raises(ValueError, match="cannot read a release number"):
        compat.version_tuple("unknown")


def test_apply_refuses_once_jax_is_imported():
    before = dict(os.environ)
    with pytest.raises(RuntimeError, match="before `import jax`"):
        apply_tpu_compile_env("v3:2x2")
    assert dict(os.environ) == before


# --- real compiles with libtpu ------------------------------------------------------------------------------------

needs_libtpu = pytest.mark.skipif(
    not libtpu_available(),
    reason="libtpu is not installed here; run in .venv-tpu (requirements/tpu.txt) or .venv-tpu-xmap",
)


@pytest.fixture(scope="module")
def tpu_env():
    """libtpu reads TPU_* when its plugin first initialises (at the first topology request), so setting them after
    conftest imported jax still counts; JAX_PLATFORMS=cpu was set by conftest before that import."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in tpu_compile_env("v3:2x2", jax_legacy=installed_jax_is_legacy()).items():
            patch.setenv(name, value)
        yield


def all_reduces(hlo_text: str) -> list[str]:
    return [line for line in hlo_text.splitlines() if re.search(r"\ball-reduce(-start)?\(", line) and " = " in line]


@pytest.mark.tpu_aot
@needs_libtpu
@pytest.mark.parametrize(
    "topology, devices, kind",
    [("v3:2x2", 8, "TPU v3"), ("v4:2x2x1", 4, "TPU v4"), ("v5e:2x2", 4, "TPU v5 lite"), ("v3:4x4", 32, "TPU v3")],
)
def test_topology_devices(tpu_env, topology, devices, kind):
    found = topology_devices(topology)
    assert len(found) == devices  # v4 is megacore: one device per chip, as on a real v4 VM
    assert {d.device_kind for d in found} == {kind}


@pytest.mark.tpu_aot
@needs_libtpu
def test_compiler_rejection_is_reported_with_its_words(tpu_env):
    with pytest.raises(TopologyError) as error:
        topology_devices("v3:3x3")  # well-formed, but v3 hosts hold 2x2 chips
    assert "not divisible" in str(error.value) and ACCEPTED_FORM in str(error.value)


@pytest.mark.tpu_aot
@needs_libtpu
def test_megatron_mlp_compiles_for_v3_with_hand_counted_flops(tpu_env):
    mesh = Mesh(np.array(topology_devices("v3:2x2")).reshape(2, 4), ("dp", "mp"))
    batch, seq, d_model, d_ff = 4, 128, 1024, 1024

    def spec(shape, partition):
        return jax.ShapeDtypeStruct(shape, jnp.bfloat16, sharding=NamedSharding(mesh, partition))

    x, w1, w2 = (
        spec((batch, seq, d_model), P("dp")),
        spec((d_model, d_ff), P(None, "mp")),
        spec((d_ff, d_model), P("mp")),
    )

    def loss(w1, w2, x):
        return jnp.mean((jax.nn.gelu(x @ w1) @ w2).astype(jnp.float32) ** 2)  # [B, T, F] sharded F, then psum(mp)

    step = jax.jit(
        jax.value_and_grad(loss, argnums=(0, 1)), out_shardings=(NamedSharding(mesh, P()), (w1.sharding, w2.sharding))
    )
    compiled, hlo = compile_with_optimized_hlo(step.lower(w1, w2, x))

    # Per device: 5 matmuls of [B/dp*T, D] x [D, F/mp] (2 forward, dh, dW1, dW2), 2 flops per multiply-add; gelu and
    # the loss add under 1% at this D.
    matmul_flops = 5 * 2 * (batch // 2) * seq * d_model * (d_ff // 4)
    assert compat.cost_analysis(compiled)["flops"] == pytest.approx(matmul_flops, rel=0.02)
    assert compiled.memory_analysis().argument_size_in_bytes == 2 * (x.size // 2 + w1.size // 4 + w2.size // 4)
    # The dump is this compile's module, with every replica group spelled out (as_text() prints {} on jax 0.4.30).
    assert len(all_reduces(hlo)) == len(all_reduces(compiled.as_text())) >= 2
    collectives = hlo_parser.parse_collectives(hlo, np.arange(mesh.size).reshape(mesh.devices.shape))
    # Forward partial sums over mp; loss and weight gradients over dp (XLA may fuse the two gradient reductions).
    assert {c.mesh_axis for c in collectives} == {"mp", "dp"}


@pytest.mark.tpu_aot
@needs_libtpu
@pytest.mark.parametrize("lowering", ["mpmd", "spmd", "spmd_manual"])
def test_xmap_psum_attributes_to_mp_on_tpu(tpu_env, lowering):
    skip_without_xmap()
    mesh = Mesh(np.array(topology_devices("v3:2x2")).reshape(2, 4), ("dp", "mp"))
    flags = {
        "experimental_xmap_spmd_lowering": lowering != "mpmd",
        "experimental_xmap_spmd_lowering_manual": lowering == "spmd_manual",
    }
    saved = {name: getattr(jax.config, name) for name in flags}
    try:
        for name, value in flags.items():
            jax.config.update(name, value)
        summed = compat.xmap(
            lambda x: jax.lax.psum(x, "mp"),
            in_axes=({0: "dp", 1: "mp"},),
            out_axes={0: "dp"},
            axis_resources={"dp": "dp", "mp": "mp"},
        )
        with mesh:
            compiled, hlo = compile_with_optimized_hlo(summed.lower(jax.ShapeDtypeStruct((2, 4, 128), jnp.float32)))
    finally:
        for name, value in saved.items():
            jax.config.update(name, value)
    header = compiled.as_text().splitlines()[0]
    assert ("replica_count=8" in header) == (lowering == "mpmd")  # MPMD: one replica per mesh position
    # Logical ids (replica ids under MPMD, partition ids under SPMD) are positions in the flattened mesh.
    collectives = hlo_parser.parse_collectives(hlo, np.arange(mesh.size).reshape(mesh.devices.shape))
    assert [(c.kind, c.mesh_axis, c.group_size) for c in collectives] == [
        (hlo_parser.CollectiveKind.ALL_REDUCE, "mp", 4)
    ]
