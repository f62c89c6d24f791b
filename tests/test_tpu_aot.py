"""The tiny preset compiled for a small TPU topology (v3:2x2) through the same path as `nox -s tpu_aot`.

Needs libtpu (requirements/tpu.txt or tpu-xmap.txt): `nox -s tests_tpu_aot`. Elsewhere these tests are deselected
by the default sessions (`-m "not tpu_aot"`) and skip with that reason if run by hand.
"""

import os

import pytest
from conftest import skip_without_xmap

from bench.records.schema import validate
from bench.tpu_aot.compile import compile_record
from bench.tpu_aot.env import installed_jax_is_legacy, libtpu_available, topology_devices, tpu_compile_env
from model.config import Mesh, Strategy, Variant, get_preset

pytestmark = [
    pytest.mark.tpu_aot,
    pytest.mark.skipif(not libtpu_available(), reason="needs libtpu: run `nox -s tests_tpu_aot`"),
]
TOPOLOGY = "v3:2x2"  # 4 chips, 8 TPU v3 cores


@pytest.fixture(scope="module")
def devices():
    """libtpu reads its variables at the first topology request, after conftest imported jax; set them first."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in tpu_compile_env(TOPOLOGY, jax_legacy=installed_jax_is_legacy()).items():
            patch.setenv(name, value)
        yield topology_devices(TOPOLOGY)


def test_compile_only_variables_are_set_on_this_path(devices):
    assert os.environ["TPU_SKIP_MDS_QUERY"] == "1"
    assert os.environ["TPU_WORKER_HOSTNAMES"] == "localhost" and os.environ["TPU_WORKER_ID"] == "0"
    assert os.environ["TPU_ACCELERATOR_TYPE"] == "v3-8"
    assert len(devices) == 8 and devices[0].device_kind == "TPU v3"


@pytest.mark.parametrize("name", ["parallel-h256-shard_map-full", "serial-h128-xmap-none", "parallel-h256-pjit-none"])
def test_tiny_preset_compiles_for_v3_and_its_collectives_match_the_model(devices, name):
    variant = Variant.parse(name)
    if variant.strategy is Strategy.XMAP:
        skip_without_xmap()
    record = compile_record(get_preset("tiny"), variant, Mesh(2, 4), TOPOLOGY, devices)
    assert record["status"] == "ok", record.get("error")
    assert record["kind"] == "tpu-aot" and record["backend"] == "tpu" and record["device_kind"] == "TPU v3"
    assert validate(record) == []
    assert record["fits_hbm"] and record["hbm_bytes_per_device"] == 16 * 2**30
    assert record["peak_flops_per_device"] == 61.5e12 and record["peak_flops_per_device_gptj_basis"] == 52.5e12
    if variant.strategy is not Strategy.PJIT:  # local-view code: the collectives are exactly the model's
        want = record["expected_mp_layer_allreduce_bytes"] + record["expected_mp_other_allreduce_bytes"]
        assert record["comm_mp_allreduce_bytes"] == want
    assert record["xla_flops_per_step"] > 0 and record["xla_bytes_accessed_per_step"] > 0
