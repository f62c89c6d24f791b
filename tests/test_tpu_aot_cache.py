"""bench.tpu_aot.cache: what a compile's key depends on, and a cache that never hands back a broken entry; and
the whole-step compile's use of it, with the compiler stood in for. No compile."""

import json

from bench.tpu_aot import cache as aot_cache
from bench.tpu_aot.cache import CompileCache, cache_from_flag, program_key

TEXT = "module @jit_step { func.func public @main(%arg0: tensor<4xf32>) -> tensor<4xf32> { ... } }"
LOCATED = """#loc2 = loc("/work/main/model/gptj.py":120:8 to :40)
#loc5 = loc("block"(#loc2))
#loc11 = loc("jit(step)/block/attn/qkv_proj/dot_general"(#loc5))
#loc12 = loc("jit(step)/block/ff/ff_in/dot_general"(#loc5))"""
COMPILER = {"jax": "0.10.2", "jaxlib": "0.10.2", "libtpu": "0.0.42.1", "topology": "v3:8x16"}


def key(text=TEXT, located=LOCATED, compiler=COMPILER, analysis="a") -> str:
    return program_key(text, located, compiler, analysis)


def test_the_key_follows_the_program_its_scopes_the_compiler_and_the_analysis():
    assert key() == key()
    assert key(text=TEXT.replace("4xf32", "8xf32")) != key()
    assert key(located=LOCATED.replace("ff_in", "ff_out")) != key()  # the component map reads the scopes
    assert key(compiler=COMPILER | {"libtpu": "0.0.1"}) != key()
    assert key(compiler=COMPILER | {"topology": "v3:2x2"}) != key()
    assert key(analysis="b") != key()


def test_source_files_lines_and_frames_do_not_change_the_key():
    moved = LOCATED.replace('/work/main/model/gptj.py":120:8 to :40', '/tmp/clone/model/gptj.py":131:4 to :9')
    moved = moved.replace('loc("block"(#loc2))', 'loc("_block_body"(#loc2))')
    assert key(located=moved) == key()


def test_the_analysis_digest_reads_the_analysis_modules():
    assert len(aot_cache.analysis_digest()) == 64
    assert all((aot_cache.ROOT / path).is_file() for path in aot_cache.ANALYSIS_SOURCES)


def test_an_entry_round_trips_and_is_counted(tmp_path):
    cache = CompileCache(tmp_path)
    assert cache.get("k") is None
    cache.put("k", {"flops": 1.0, "components": {"ff_in": 0.5}}, {"variant": "v"})
    assert cache.get("k") == {"flops": 1.0, "components": {"ff_in": 0.5}} and cache.hits == 1
    assert [p.name for p in tmp_path.iterdir()] == ["k.json"]  # no temporary file left behind


def test_a_broken_or_foreign_entry_is_a_miss_named_in_one_line(tmp_path, capsys):
    cache = CompileCache(tmp_path)
    (tmp_path / "half.json").write_text('{"key": "half", "value": {"flo')
    foreign = {"key": "not-other", "about": {}, "value": {}}
    (tmp_path / "other.json").write_text(json.dumps({**foreign, "checksum": aot_cache.entry_checksum(foreign)}))
    listed = {"key": "list", "about": {}, "value": [1]}
    (tmp_path / "list.json").write_text(json.dumps({**listed, "checksum": aot_cache.entry_checksum(listed)}))
    (tmp_path / "legacy.json").write_text(json.dumps({"key": "legacy", "about": {}, "value": {"flops": 1.0}}))
    assert cache.get("absent") is None and capsys.readouterr().err == ""  # a miss, not a broken entry
    for name, why in [
        ("half", "is not JSON"),
        ("other", "holds another key's entry"),
        ("list", "holds another key's entry, or no value"),
        ("legacy", "does not match its checksum"),
    ]:
        assert cache.get(name) is None
        lines = capsys.readouterr().err.splitlines()
        assert len(lines) == 1 and f"entry {tmp_path / name}.json {why}" in lines[0]
    assert cache.hits == 0


def test_every_committed_entry_carries_its_checksum():
    """The committed cache (reports/tpu-aot-cache) is verified like any other: no entry is taken on trust."""
    committed = sorted((aot_cache.ROOT / "reports" / "tpu-aot-cache").glob("*.json"))
    assert committed
    for path in committed:
        entry = json.loads(path.read_text())
        assert entry["checksum"] == aot_cache.entry_checksum(entry) and entry["key"] == path.stem, path


def test_a_truncated_or_altered_entry_is_named_compiled_again_and_rewritten(tmp_path, monkeypatch, capsys):
    import types

    from bench.tpu_aot import compile as aot_compile
    from bench.tpu_aot import env as aot_env

    stats = dict(zip(aot_cache.MEMORY_STATS, (10, 20, 5, 7, 1)))
    compiles = []

    def compile_it(lowered):
        compiles.append(lowered)
        return types.SimpleNamespace(memory_analysis=lambda: types.SimpleNamespace(**stats)), "HloModule jit_step"

    monkeypatch.setattr(aot_env, "compile_with_optimized_hlo", compile_it)
    monkeypatch.setattr(aot_compile, "_lower", lambda *args: ("lowered", None, None))
    monkeypatch.setattr(aot_compile, "_key", lambda *args, **kwargs: "k")
    cache, named = CompileCache(tmp_path), types.SimpleNamespace(name="v")
    path = tmp_path / "k.json"

    def main_compile():
        return aot_compile._main_compile(named, named, None, [], COMPILER, cache)[-1]["compile_from_cache"]

    assert main_compile() is False and main_compile() is True and len(compiles) == 1
    good = path.read_text()
    altered = json.loads(good)
    altered["value"]["memory"]["temp_size_in_bytes"] = 1  # parseable, and wrong
    for broken, why in [(good[: len(good) // 2], "is not JSON"), (json.dumps(altered), "does not match its checksum")]:
        path.write_text(broken)
        capsys.readouterr()
        assert main_compile() is False  # compiled again
        lines = capsys.readouterr().err.splitlines()
        assert len(lines) == 1 and f"compile cache: entry {path} {why}" in lines[0]
        rewritten = json.loads(path.read_text())  # as the new compile made it
        assert rewritten["checksum"] == aot_cache.entry_checksum(rewritten)
        assert rewritten["value"]["memory"] == json.loads(good)["value"]["memory"] == stats
        assert main_compile() is True and capsys.readouterr().err == ""
    assert len(compiles) == 3


def test_none_turns_the_cache_off(tmp_path):
    off = cache_from_flag("none", tmp_path / "default")
    off.put("k", {"a": 1}, {})
    assert off.directory is None and off.get("k") is None and not (tmp_path / "default").exists()
    assert cache_from_flag(None, tmp_path / "default").directory == tmp_path / "default"
    assert cache_from_flag(str(tmp_path / "mine"), tmp_path / "default").directory == tmp_path / "mine"


def test_a_whole_step_compile_is_kept_as_its_raw_outputs():
    """The HLO goes in gzip'd and comes back byte for byte; the memory analysis comes back in the shape
    bench.compile.step.memory_fields reads."""
    from types import SimpleNamespace

    from bench.compile.step import memory_fields

    hlo = "HloModule jit_step\n" + "ENTRY %main { ... }\n" * 1000
    stats = dict(zip(aot_cache.MEMORY_STATS, (10, 20, 5, 7, 1)))
    compiled = SimpleNamespace(memory_analysis=lambda: SimpleNamespace(**stats))
    entry = aot_cache.main_compile_entry(compiled, hlo, compile_s=12.5)
    assert len(entry["hlo_gz_b64"]) < len(hlo) / 10 and aot_cache.unpack_text(entry["hlo_gz_b64"]) == hlo
    kept = json.loads(json.dumps(entry))  # what a cache file holds
    assert memory_fields(aot_cache.CachedCompile(kept["memory"])) == memory_fields(compiled)
    assert memory_fields(compiled)["mem_peak_estimate_bytes_per_device"] == 10 + 20 - 5 + 7


def test_the_version_of_an_entry_kind_is_in_its_key():
    assert program_key(TEXT, LOCATED, COMPILER, "a", version=aot_cache.POINT_KEY_VERSION) != key()


def test_an_unrolled_compile_is_kept_as_its_hlo_and_costs_and_its_breakdown_is_memoised():
    """The HLO of an unrolled program goes in xz'd (its repeated layers fold away) and comes back byte for byte;
    a breakdown is handed back only for the analysis digest and prices it was derived with."""
    hlo = "HloModule jit_step\n" + "".join(
        f"%fusion.{i} = bf16[2048,512] fusion(%p), kind=kOutput\n" for i in range(3000)
    )
    entry = aot_cache.point_compile_entry({"flops": 1.0, "optimal_seconds": 2.0}, hlo)
    assert aot_cache.unpack_text_xz(entry["hlo_xz_b64"]) == hlo and len(entry["hlo_xz_b64"]) < len(hlo) / 20
    assert entry["flops"] == 1.0 and aot_cache.components_of(entry, "m") is None  # nothing derived yet
    memo = aot_cache.memo_key("digest", [61.5e12, 9e11, 2])
    assert memo != aot_cache.memo_key("digest", [61.5e12, 9e11, 1]) and memo != aot_cache.memo_key("other", [1])
    kept = json.loads(json.dumps(aot_cache.with_components(entry, {"ff_in": 0.5}, memo)))
    assert aot_cache.components_of(kept, memo) == {"ff_in": 0.5}
    assert aot_cache.components_of(kept, aot_cache.memo_key("changed analysis", [61.5e12, 9e11, 2])) is None


def test_a_refusal_is_kept_and_raised_again_in_the_compilers_words(tmp_path, monkeypatch):
    """A compile the compiler refuses (Mosaic on v3, or out of HBM) is kept as its message; the next run raises it
    again from the cache instead of compiling for minutes to be told the same. Other errors are not kept."""
    import types

    import pytest

    from bench.tpu_aot import compile as aot_compile
    from bench.tpu_aot import env as aot_env
    from model import compat

    mosaic = "INTERNAL: Mosaic failed to compile TPU kernel: E2001: CompileTimeMosaicUnsupportedRhsType: vector<8xbf16>"
    calls = []
    xla_error = compat.compiler_errors()[0]  # what XLA raises, in this JAX's spelling

    def refuse(lowered):
        calls.append(lowered)
        raise xla_error(mosaic if len(calls) == 1 else "a transient failure")

    monkeypatch.setattr(aot_env, "compile_with_optimized_hlo", refuse)
    monkeypatch.setattr(aot_compile, "_lower", lambda *args: ("lowered", None, None))
    monkeypatch.setattr(aot_compile, "_key", lambda *args, **kwargs: "k")
    cache, variant = CompileCache(tmp_path), types.SimpleNamespace(name="v")
    preset = types.SimpleNamespace(name="p")
    with pytest.raises(xla_error, match="Mosaic failed"):
        aot_compile._main_compile(preset, variant, None, [], COMPILER, cache)
    with pytest.raises(aot_compile.CompilerRefused, match="Mosaic failed to compile TPU kernel: E2001.*compile cache"):
        aot_compile._main_compile(preset, variant, None, [], COMPILER, cache)
    assert len(calls) == 1  # the second answer came from the cache
    assert aot_compile.compiler_refusal_fields(str(aot_compile.CompilerRefused(mosaic)))["refused_by_compiler"]
    (tmp_path / "k.json").unlink()
    calls.append("again")
    with pytest.raises(xla_error, match="transient"):
        aot_compile._main_compile(preset, variant, None, [], COMPILER, cache)
    assert not (tmp_path / "k.json").exists()  # not a refusal: not kept
