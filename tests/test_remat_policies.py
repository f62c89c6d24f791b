"""The named remat policies (``dots``, ``attn``) compute what ``none`` computes: loss and gradients, f32, tiny preset,
under every strategy; and they stay out of the 24 benchmarked variants."""

import functools
import itertools

import jax
import numpy as np
import pytest
from conftest import current_jax_only_unless, require_devices, skip_without_xmap

from model.config import (
    ConfigError,
    Head,
    Mesh,
    Remat,
    Residual,
    Strategy,
    Variant,
    all_variants,
    get_preset,
    model_for,
)
from model.program import Program
from model.strategies import make_driver

PRESET = get_preset("tiny")
# test_equivalence's bounds: a strategy against the single device (f32), and remat against none on one device.
LOSS_RTOL, GRAD_RTOL = 1e-5, 1e-4
REMAT_LOSS_RTOL, REMAT_GRAD_RTOL = 1e-6, 1e-5
POLICIES = [Remat.DOTS, Remat.ATTN]
MESHED = [Strategy.PJIT, Strategy.SHARD_MAP, Strategy.XMAP]


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.linalg.norm(actual - expected) / np.linalg.norm(expected))


def _driver(residual: Residual, remat: Remat, strategy: Strategy):
    variant = Variant(residual, Head.H256, strategy, remat)
    program = Program.from_preset(PRESET, model_for(PRESET, variant))
    mesh = Mesh(1, 1) if strategy is Strategy.SINGLE else PRESET.mesh
    return program, make_driver(strategy, program, mesh)


@functools.cache
def run(residual: Residual, remat: Remat, strategy: Strategy) -> tuple[float, dict]:
    program, driver = _driver(residual, remat, strategy)
    params, batch = program.init_params(seed=0), program.example_batch(seed=0)
    loss, grads = driver.grad_step()(driver.place_params(params), driver.place_batch(batch))
    return float(np.asarray(loss).reshape(-1)[0]), driver.to_global(grads)


def worst_gradient_error(grads: dict, reference: dict) -> float:
    return max(jax.tree_util.tree_leaves(jax.tree_util.tree_map(relative_error, grads, reference)))


@pytest.mark.current_jax_only  # the named policies are not swept on CPU: jax 0.4.30 checks them under xmap alone
@pytest.mark.parametrize("residual", list(Residual), ids=lambda r: r.value)
@pytest.mark.parametrize("remat", POLICIES, ids=lambda m: m.value)
def test_policy_equals_none_on_one_device(remat, residual):
    loss, grads = run(residual, remat, Strategy.SINGLE)
    ref_loss, ref_grads = run(residual, Remat.NONE, Strategy.SINGLE)
    assert abs(loss - ref_loss) <= REMAT_LOSS_RTOL * abs(ref_loss)
    assert worst_gradient_error(grads, ref_grads) <= REMAT_GRAD_RTOL


@pytest.mark.parametrize("residual", list(Residual), ids=lambda r: r.value)
@pytest.mark.parametrize("remat", POLICIES, ids=lambda m: m.value)
@pytest.mark.parametrize(
    "strategy", [pytest.param(s, id=s.value, marks=current_jax_only_unless(s is Strategy.XMAP)) for s in MESHED]
)
def test_policy_under_a_strategy_equals_none_on_one_device(strategy, remat, residual):
    if strategy is Strategy.XMAP:
        skip_without_xmap()
    require_devices(PRESET.mesh.devices)
    loss, grads = run(residual, remat, strategy)
    ref_loss, ref_grads = run(residual, Remat.NONE, Strategy.SINGLE)
    assert abs(loss - ref_loss) / abs(ref_loss) <= LOSS_RTOL
    worst = worst_gradient_error(grads, ref_grads)
    print(f"{strategy.value} {residual.value}-h256-{remat.value}: worst gradient relative error {worst:.2e}")
    assert worst <= GRAD_RTOL


def _grad_program_text(remat: Remat) -> str:
    program, driver = _driver(Residual.PARALLEL, remat, Strategy.SINGLE)
    params, batch = program.init_params(seed=0), program.example_batch(seed=0)
    return jax.jit(driver.grad_step()).lower(params, batch).as_text()


@pytest.mark.current_jax_only  # the policies' own code is JAX's checkpoint, the same call in both
def test_each_policy_is_applied():
    """Equal results alone would also pass if a policy were ignored: each value lowers to its own program."""
    texts = {remat: _grad_program_text(remat) for remat in Remat}
    assert len(set(texts.values())) == len(Remat), [m.value for m in Remat]


def test_the_benchmarked_variants_keep_none_and_full_only():
    variants = all_variants()
    assert len(variants) == 24
    assert {v.remat for v in variants} == {Remat.NONE, Remat.FULL}
    strategies = [Strategy.XMAP, Strategy.PJIT, Strategy.SHARD_MAP]
    expected = {
        f"{r.value}-{h.value}-{s.value}-{m}"
        for r, h, s, m in itertools.product(Residual, Head, strategies, ["none", "full"])
    }
    assert {v.name for v in variants} == expected


@pytest.mark.parametrize("name", ["parallel-h256-pjit-dots", "serial-h128-shard_map-attn+xla"])
def test_policy_names_parse_and_round_trip(name):
    assert Variant.parse(name).name == name


def test_a_bad_remat_value_lists_the_valid_ones():
    with pytest.raises(ConfigError, match=r"unknown remat 'dot'; valid remat values: none, full, dots, attn"):
        Variant.parse("parallel-h256-pjit-dot")
