"""The accelerator table, device-kind lookup, TPU v3's two peak bases, and the CPU GEMM calibration."""

from __future__ import annotations

import json
from types import SimpleNamespace

import jax
import pytest

from bench.hardware import cpu
from bench.hardware import table as hardware
from bench.hardware.table import PeakBasis
from bench.hardware.topology import TpuGeneration
from bench.measure import calibrate


@pytest.mark.parametrize(
    "device_kind, name, per_device_tflops",
    [
        ("TPU v2", "TPU v2", 22.5),  # 45 per chip / 2 cores
        ("TPU v3", "TPU v3", 61.5),  # 123 per chip / 2 cores
        ("TPU v4", "TPU v4", 275.0),  # megacore: one device per chip
        ("TPU v5 lite", "TPU v5e", 197.0),
        ("TPU v5", "TPU v5p", 459.0),
        ("TPU v5p", "TPU v5p", 459.0),
        ("TPU v6 lite", "TPU v6e (Trillium)", 918.0),
        ("NVIDIA A100-SXM4-80GB", "NVIDIA A100 SXM4 80GB", 312.0),
        ("NVIDIA H100 80GB HBM3", "NVIDIA H100 SXM5", 989.0),
        ("NVIDIA H200", "NVIDIA H200 SXM", 989.0),
        ("nvidia  h200", "NVIDIA H200 SXM", 989.0),  # case and spacing do not matter
    ],
)
def test_device_kind_lookup(device_kind, name, per_device_tflops):
    assert hardware.accelerator_for_device_kind(device_kind).name == name
    peak, source = hardware.peak_flops_per_s_per_device(device_kind)
    assert peak == pytest.approx(per_device_tflops * 1e12)
    assert source


@pytest.mark.parametrize("device_kind", ["cpu", "TPU v4 lite", "NVIDIA H100 PCIe", "NVIDIA H200 NVL", "TPU v7", ""])
def test_unknown_device_kind_has_no_peak(device_kind):
    assert hardware.peak_flops_per_s_per_device(device_kind) is None


def test_table_rows_are_unambiguous_and_sourced():
    kinds = [hardware._normalise(p) for a in hardware.ACCELERATORS for p in a.device_kind_patterns]
    generations = [a.tpu_generation for a in hardware.ACCELERATORS if a.tpu_generation is not None]
    assert len(kinds) == len(set(kinds))
    assert len(generations) == len(set(generations)) == len(TpuGeneration)
    for accelerator in hardware.ACCELERATORS:
        assert accelerator.source and accelerator.peak_bf16_flops_per_chip > 0 and accelerator.devices_per_chip >= 1


def test_v3_peak_bases():
    spec, _ = hardware.peak_flops_per_s_per_device("TPU v3", PeakBasis.SPEC)
    gptj, gptj_source = hardware.peak_flops_per_s_per_device("TPU v3", PeakBasis.GPTJ)
    assert spec == pytest.approx(61.5e12)  # 123 TFLOP/s per chip / 2 cores
    assert gptj == pytest.approx(52.5e12)  # 420 TFLOP/s per v3-8 board / 8 cores
    assert "13.4" in gptj_source
    # GPT-J's 13.4 PFLOP/s = 256 cores x 52.5 TFLOP/s = 13.44 PFLOP/s
    assert 256 * gptj == pytest.approx(13.4e15, rel=0.01)
    assert 256 * spec != pytest.approx(13.4e15, rel=0.01)


def test_gptj_basis_only_exists_for_v3():
    with pytest.raises(ValueError, match="TPU v3 only"):
        hardware.peak_flops_per_s_per_device("TPU v4", PeakBasis.GPTJ)
    assert hardware.peak_flops_per_s_per_device("unknown chip", PeakBasis.GPTJ) is None


def test_v3_memory_per_core():
    v3 = hardware.accelerator_for_device_kind("TPU v3")
    assert v3.hbm_bytes_per_device == 16 * 2**30  # 32 GiB per chip = 16 GiB per core
    assert v3.hbm_bandwidth_bytes_per_s == 900e9


def test_topology_lookup():
    assert hardware.accelerator_for_topology("v3:8x16").name == "TPU v3"
    assert hardware.topology_chips("v3:8x16") == 128  # 256 cores: GPT-J's v3-256
    assert hardware.accelerator_for_topology("v4:4x4x8").name == "TPU v4"
    assert hardware.accelerator_for_topology("v5litepod:16x16").name == "TPU v5e"
    assert hardware.accelerator_for_topology("v5e:16x16").name == "TPU v5e"
    for bad in ["v3", "v9:2x2", "v3:8", "v3:8x0", "v3:axb", "v4:2x2x2x2"]:
        with pytest.raises(ValueError, match="bad TPU topology"):
            hardware.accelerator_for_topology(bad)


# --- CPU GEMM calibration --------------------------------------------------------------------------------------------

FAST = dict(sizes=(64, 128), repeats=2)  # the real default sweeps 256..1024; tests only need a positive number


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(calibrate.CACHE_ENV, str(tmp_path))
    return tmp_path


def test_calibration_measures_then_reads_cache(cache_dir):
    first = calibrate.calibrate_cpu_peak("float32", **FAST)
    assert first.flops_per_device > 0 and not first.cached
    assert "GEMM calibration" in first.source and "float32" in first.source
    second = calibrate.calibrate_cpu_peak("float32", **FAST)
    assert second.cached
    assert (second.flops_per_device, second.source) == (first.flops_per_device, first.source)
    entries = json.loads((cache_dir / "calibration.json").read_text())
    assert len(entries) == 1
    assert [p.name for p in cache_dir.iterdir()] == ["calibration.json"]  # no temporary file left behind


def test_calibration_cache_is_keyed_by_dtype_and_devices(cache_dir):
    calibrate.calibrate_cpu_peak("float32", **FAST)
    assert not calibrate.calibrate_cpu_peak("bfloat16", **FAST).cached
    one_device = jax.local_devices(backend="cpu")[:1]
    if len(jax.local_devices(backend="cpu")) > 1:
        assert not calibrate.calibrate_cpu_peak("float32", one_device, **FAST).cached
    keys = [json.loads(k) for k in json.loads((cache_dir / "calibration.json").read_text())]
    assert {k["dtype"] for k in keys} == {"float32", "bfloat16"}
    assert all(k["jax"] == jax.__version__ for k in keys)


def test_corrupt_cache_is_measured_again(cache_dir):
    (cache_dir / "calibration.json").write_text("{not json")
    with pytest.warns(UserWarning, match="unreadable calibration cache"):
        peak = calibrate.calibrate_cpu_peak("float32", **FAST)
    assert not peak.cached
    json.loads((cache_dir / "calibration.json").read_text())


def test_default_cache_path(monkeypatch):
    monkeypatch.delenv(calibrate.CACHE_ENV, raising=False)
    assert calibrate.cache_path().parts[-3:] == (".cache", "gptj-bench", "calibration.json")


def test_calibration_rejects_bad_input(cache_dir):
    with pytest.raises(ValueError, match="CPU devices only"):
        calibrate.calibrate_cpu_peak("float32", [SimpleNamespace(platform="gpu")], **FAST)
    with pytest.raises(ValueError, match="floating type"):
        calibrate.calibrate_cpu_peak("int32", **FAST)
    with pytest.raises(ValueError, match="positive integers"):
        calibrate.calibrate_cpu_peak("float32", sizes=(0,))


# --- the CPU's theoretical peak ---------------------------------------------------------------------------------------

LSCPU = """Architecture:            x86_64
CPU(s):                  8
Model name:              Test CPU
Thread(s) per core:      2
Core(s) per socket:      4
Socket(s):               1
CPU max MHz:             3000.0000
Flags:                   fpu sse2 avx fma avx2
"""


def test_theoretical_peak_by_hand():
    # 4 cores x 3.0e9 Hz x 8 f32 lanes (AVX2) x 2 FLOPs per FMA x 2 FMA units = 384e9
    assert cpu.theoretical_f32_peak_flops(4, 3.0e9, 8, 2) == 384e9
    facts = cpu.parse_lscpu(LSCPU, usable_cpus=8)
    assert (facts.cores, facts.max_clock_hz, facts.f32_lanes, facts.fma_units) == (4, 3.0e9, 8, 2)
    flops, source = cpu.theoretical_peak(facts)
    assert flops == 384e9 and "4 cores x 3.00 GHz x 8 f32 lanes" in source and "Test CPU" in source
    with pytest.raises(ValueError, match="positive"):
        cpu.theoretical_f32_peak_flops(0, 3.0e9, 8, 2)


def test_theoretical_peak_reads_avx512_and_the_usable_cores():
    facts = cpu.parse_lscpu(LSCPU.replace("avx2", "avx2 avx512f"), usable_cpus=4)  # 4 hyperthreads = 2 cores
    assert (facts.f32_lanes, facts.cores) == (16, 2)
    assert cpu.theoretical_peak(facts)[0] == 2 * 3.0e9 * 16 * 2 * 2


def test_no_theoretical_peak_without_a_maximum_clock_or_fma():
    # a KVM guest's lscpu has no "CPU max MHz": its nominal clock is no ceiling under turbo (module docstring)
    flops, source = cpu.theoretical_peak(cpu.parse_lscpu(LSCPU.replace("CPU max MHz:             3000.0000\n", "")))
    assert flops is None and "CPU max MHz" in source
    no_fma = cpu.parse_lscpu(LSCPU.replace(" fma avx2", ""))
    assert cpu.theoretical_peak(no_fma)[0] is None and no_fma.f32_lanes is None
