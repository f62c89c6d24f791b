"""A variant's attention kernel in the whole model: the loss and gradients of the tiny model on a ``+kernel`` variant
equal the reference variant's (one device, GPT-J's remat), and a kernel this JAX lacks is refused before anything is
built. That every strategy computes the single-device model is tests/test_equivalence.py's.

Relative error as tests/test_kernels_attention.py: max |kernel - reference| / max |reference|, per gradient leaf.
The tiny preset's T = 16 is one block of the blockwise kernel; several blocks, partial blocks and unequal block sizes
are tests/test_kernels_attention.py's.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import numpy as np
import pytest
from conftest import require_devices

from bench.tpu_aot.compile import _lower
from kernels.attention import AttentionKernel, dot_product_attention_has_implementation
from model import compat
from model.config import ConfigError, Head, Mesh, Variant, apply_overrides, get_preset, validate_run
from model.program import Program
from model.strategies import make_driver

# One layer: every layer calls the same kernel, and the compile, not the run, is what a test here costs (a second
# layer adds a third to it on current JAX and doubles it on jax 0.4.30; CI time).
PRESET = apply_overrides(get_preset("tiny"), ["n_layers=1"])
MESH = Mesh(1, 1)
LOSS_RTOL, GRAD_RTOL = 1e-5, 1e-4  # the bounds for f32: round-off, not a different computation
HAS_DPA = dot_product_attention_has_implementation()


def variant(head: Head, kernel: AttentionKernel = AttentionKernel.reference) -> Variant:
    return Variant.parse(f"parallel-{head.value}-single-full").replace(attention_kernel=kernel)


def program_of(v: Variant) -> Program:
    cfg = validate_run(PRESET, v, MESH, len(jax.devices()), platform=jax.default_backend())
    return Program.from_preset(PRESET, cfg)


@functools.cache
def shared_params_and_batch() -> tuple[dict, dict]:
    """One initialisation for every variant here (one compile, not one per variant): d_model is fixed, so neither
    the head size nor the kernel changes a parameter's shape."""
    program = program_of(variant(Head.H256))
    return program.init_params(seed=0), program.example_batch(seed=0)


def relative_error(got, want) -> float:
    got, want = np.asarray(got, np.float32), np.asarray(want, np.float32)
    return float(np.abs(got - want).max() / np.abs(want).max())


@functools.cache
def loss_and_grads(v: Variant) -> tuple[float, dict, str]:
    """The variant's loss and gradients from its driver's gradient step, and that step's lowered program."""
    program = program_of(v)
    driver = make_driver(v.strategy, program, MESH)
    params, batch = shared_params_and_batch()
    params, batch = driver.place_params(params), driver.place_batch(batch)
    lowered = driver.grad_step().lower(params, batch)
    loss, grads = lowered.compile()(params, batch)
    return float(np.asarray(loss).reshape(-1)[0]), driver.to_global(grads), compat.lowered_text(lowered)


def assert_matches_reference(v: Variant) -> None:
    loss, grads, program = loss_and_grads(v)
    ref_loss, ref_grads, ref_program = loss_and_grads(variant(v.head))
    assert program != ref_program, "the kernel never reached the model: its program is the reference's"
    assert abs(loss - ref_loss) / abs(ref_loss) <= LOSS_RTOL
    errors = jax.tree_util.tree_map(relative_error, grads, ref_grads)
    assert max(jax.tree_util.tree_leaves(errors)) <= GRAD_RTOL, errors


@pytest.mark.parametrize("head", list(Head), ids=lambda h: h.value)
def test_blockwise_variant_matches_the_reference_variant(head):
    assert_matches_reference(variant(head, AttentionKernel.blockwise))


@pytest.mark.parametrize("head", list(Head), ids=lambda h: h.value)
def test_xla_variant_matches_the_reference_variant_where_this_jax_has_it(head):
    v = variant(head, AttentionKernel.xla)
    if HAS_DPA:
        assert_matches_reference(v)
        return
    # jax 0.4.30 has no dot_product_attention(implementation=...): the variant is refused before anything is built
    with pytest.raises(ConfigError, match=r"needs jax\.nn\.dot_product_attention\(implementation=\.\.\.\)"):
        program_of(v)


@pytest.mark.parametrize("name", ["parallel-h256-shard_map-full", "serial-h128-pjit-none"])
def test_unrolling_attention_blocks_leaves_a_reference_program_byte_identical(name):
    """The cost-analysis compiles set unroll_attention_blocks (bench.tpu_aot.compile.unrolled); the reference kernel
    ignores it, so its programs, and the compile cache's keys (bench.tpu_aot.cache), stay what they were. The tiny
    preset on 8 simulated devices, mesh dp=2 x mp=4, as the TPU compiles lower it."""
    require_devices(8)
    tiny, mesh = get_preset("tiny"), Mesh(2, 4)
    unrolled = dataclasses.replace(tiny, model=dataclasses.replace(tiny.model, unroll_attention_blocks=True))
    texts = [
        compat.lowered_text(_lower(p, Variant.parse(name), mesh, jax.devices()[:8])[0], debug_info=True)
        for p in (tiny, unrolled)
    ]
    assert texts[0] == texts[1]
