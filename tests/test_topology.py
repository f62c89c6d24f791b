"""bench.hardware.topology: the one grammar of TPU topology names, every accepted and every refused form."""

from __future__ import annotations

import pytest

from bench.hardware import table as hardware
from bench.hardware.topology import ACCEPTED_FORM, GENERATIONS, Topology, TopologyError, TpuGeneration, parse_topology
from bench.tpu_aot import env


@pytest.mark.parametrize(
    "name, generation, dims, chips, cores, devices",
    [
        ("v3:8x16", TpuGeneration.V3, (8, 16), 128, 256, 256),  # GPT-J's v3-256
        ("v4:4x4x4", TpuGeneration.V4, (4, 4, 4), 64, 128, 64),  # megacore: a device per chip
        ("v4:4x4x8", TpuGeneration.V4, (4, 4, 8), 128, 256, 128),
        ("v5e:16x16", TpuGeneration.V5E, (16, 16), 256, 256, 256),
        ("v6e:8x8", TpuGeneration.V6E, (8, 8), 64, 64, 64),
        ("v5p:2x2x1", TpuGeneration.V5P, (2, 2, 1), 4, 8, 4),
        (" V2:4x4 ", TpuGeneration.V2, (4, 4), 16, 32, 32),  # case and surrounding space are ignored
    ],
)
def test_parse_topology_counts_chips_cores_and_devices(name, generation, dims, chips, cores, devices):
    topology = parse_topology(name)
    assert topology == Topology(generation, dims)
    assert (topology.generation, topology.dims) == (generation, dims)
    assert (topology.chips, topology.cores, topology.devices) == (chips, cores, devices)
    assert topology.name == name.strip().lower()


@pytest.mark.parametrize(
    "bad",
    [
        "v3",  # no dimensions
        "v3:8",  # too few dimensions for v3
        "v3:8x16x2",  # too many for v3
        "v4:4x4",  # too few for v4
        "v4:2x2x2x2",  # too many for v4
        "v7:2x2x1",  # unknown generation
        "v9:2x2",
        "tpu:8x16",
        "v3:0x4",  # chip counts are positive
        "v3:8x0",
        "v3:axb",
        "v3:8*16",
        "v3-256",  # an accelerator type, not a topology
        "",
    ],
)
def test_parse_topology_refuses_naming_the_accepted_form(bad):
    with pytest.raises(TopologyError) as error:
        parse_topology(bad)
    assert "bad TPU topology" in str(error.value) and ACCEPTED_FORM in str(error.value)


def test_v5litepod_is_v5e():
    """Cloud's accelerator-type prefix for v5e is accepted as the generation it names."""
    assert parse_topology("v5litepod:16x16") == parse_topology("v5e:16x16")
    assert parse_topology("v5litepod:4x4").name == "v5e:4x4"
    with pytest.raises(TopologyError, match="2 positive chip counts"):
        parse_topology("v5litepod:4x4x4")


def test_refusal_is_a_value_error_for_every_caller():
    for parse in (parse_topology, env.parse_topology, hardware.accelerator_for_topology, hardware.topology_chips):
        with pytest.raises(ValueError, match="bad TPU topology"):
            parse("v3:8x16x2")


def test_table_and_compile_env_read_the_same_topology():
    for generation in TpuGeneration:
        name = f"{generation.value}:{'x'.join(['2'] * GENERATIONS[generation].topology_rank)}"
        topology = parse_topology(name)
        accelerator = hardware.accelerator_for_topology(name)
        assert accelerator.tpu_generation is generation
        assert hardware.topology_chips(name) == topology.chips
        assert topology.devices == topology.chips * accelerator.devices_per_chip
