"""Every strategy computes the single-device loss and gradients (f32, tiny preset, 8 simulated devices)."""

import dataclasses
import functools
import itertools

import jax
import numpy as np
import pytest
from conftest import current_jax_only_unless, require_devices, skip_without_xmap

from model.config import SWEPT_REMATS, Head, Mesh, Remat, Residual, Strategy, Variant, get_preset, model_for
from model.program import Program
from model.strategies import make_driver

PRESET = get_preset("tiny")
LOSS_RTOL, GRAD_RTOL = 1e-5, 1e-4  # the bounds for f32: round-off, not a different computation


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.linalg.norm(actual - expected) / np.linalg.norm(expected))


@functools.cache
def run(residual: Residual, head: Head, remat: Remat, strategy: Strategy) -> tuple[float, dict]:
    variant = Variant(residual, head, strategy, remat)
    program = Program.from_preset(PRESET, model_for(PRESET, variant))
    driver = make_driver(strategy, program, PRESET.mesh)
    params, batch = program.init_params(seed=0), program.example_batch(seed=0)
    loss, grads = driver.grad_step()(driver.place_params(params), driver.place_batch(batch))
    return float(np.asarray(loss).reshape(-1)[0]), driver.to_global(grads)


def assert_matches_reference(residual, head, remat, strategy):
    loss, grads = run(residual, head, remat, strategy)
    ref_loss, ref_grads = run(residual, head, remat, Strategy.SINGLE)
    assert abs(loss - ref_loss) / abs(ref_loss) <= LOSS_RTOL
    errors = jax.tree_util.tree_map(relative_error, grads, ref_grads)
    worst = max(jax.tree_util.tree_leaves(errors))
    print(f"{strategy.value} {residual.value}-{head.value}-{remat.value}: worst gradient relative error {worst:.2e}")
    assert worst <= GRAD_RTOL, errors


# The swept remat values; the named checkpoint policies have their own equality tests (tests/test_remat_policies.py).
AXES = list(itertools.product(Residual, Head, SWEPT_REMATS))
IDS = [f"{r.value}-{h.value}-{m.value}" for r, h, m in AXES]
# jax 0.4.30 runs pjit and shard_map as xmap's baselines: there they are checked at GPT-J's residual and head size
# (CI time; current JAX checks every case)
GPTJ_AXES_ON_LEGACY_JAX = [
    pytest.param(*axes, id=name, marks=current_jax_only_unless(axes[:2] == (Residual.PARALLEL, Head.H256)))
    for axes, name in zip(AXES, IDS)
]


@pytest.mark.parametrize("residual, head, remat", GPTJ_AXES_ON_LEGACY_JAX)
@pytest.mark.parametrize("strategy", [Strategy.PJIT, Strategy.SHARD_MAP], ids=lambda s: s.value)
def test_strategy_matches_single_device(strategy, residual, head, remat):
    require_devices(PRESET.mesh.devices)
    assert_matches_reference(residual, head, remat, strategy)


@pytest.mark.parametrize("residual, head, remat", AXES, ids=IDS)
def test_xmap_matches_single_device(residual, head, remat):
    skip_without_xmap()
    require_devices(PRESET.mesh.devices)
    assert_matches_reference(residual, head, remat, Strategy.XMAP)


@pytest.mark.parametrize("residual", list(Residual), ids=lambda r: r.value)
def test_remat_changes_nothing(residual):
    loss, grads = run(residual, Head.H256, Remat.NONE, Strategy.SINGLE)
    loss_remat, grads_remat = run(residual, Head.H256, Remat.FULL, Strategy.SINGLE)
    # Recomputation runs the same operations; XLA may fuse them differently, hence round-off-level bounds.
    assert abs(loss - loss_remat) <= 1e-6 * abs(loss)
    errors = jax.tree_util.tree_map(relative_error, grads_remat, grads)
    assert max(jax.tree_util.tree_leaves(errors)) <= 1e-5


@pytest.mark.parametrize("residual", list(Residual), ids=lambda r: r.value)
@pytest.mark.parametrize("strategy", [Strategy.SINGLE, Strategy.PJIT, Strategy.SHARD_MAP], ids=lambda s: s.value)
def test_flat_tokens_change_nothing(strategy, residual):
    """The projections over one [B*T, D] matrix compute what they compute over [B, T, D] (model.gptj.project)."""
    require_devices(PRESET.mesh.devices if strategy is not Strategy.SINGLE else 1)
    assert PRESET.model.flat_tokens, "tiny runs the flat form, so every other equality test covers it"
    results = []
    for flat in (True, False):
        preset = dataclasses.replace(PRESET, model=dataclasses.replace(PRESET.model, flat_tokens=flat))
        program = Program.from_preset(preset, model_for(preset, Variant(residual, Head.H128, strategy, Remat.FULL)))
        driver = make_driver(strategy, program, PRESET.mesh if strategy is not Strategy.SINGLE else Mesh())
        params, batch = program.init_params(seed=0), program.example_batch(seed=0)
        loss, grads = driver.grad_step()(driver.place_params(params), driver.place_batch(batch))
        results.append((float(np.asarray(loss).reshape(-1)[0]), driver.to_global(grads)))
    (loss, grads), (ref_loss, ref_grads) = results
    # The same products in the same order; XLA may block the GEMMs differently, hence round-off-level bounds.
    assert abs(loss - ref_loss) <= 1e-6 * abs(ref_loss)
    errors = jax.tree_util.tree_map(relative_error, grads, ref_grads)
    assert max(jax.tree_util.tree_leaves(errors)) <= 1e-5, errors


def test_parallel_and_serial_blocks_differ():
    loss_p, _ = run(Residual.PARALLEL, Head.H256, Remat.NONE, Strategy.SINGLE)
    loss_s, _ = run(Residual.SERIAL, Head.H256, Remat.NONE, Strategy.SINGLE)
    assert abs(loss_p - loss_s) > 1e-4


def test_causality_of_the_whole_model():
    import haiku as hk

    from model.gptj import logits_fn
    from model.sharding import TensorParallel

    cfg = dataclasses.replace(PRESET.model)
    fn = hk.without_apply_rng(hk.transform(lambda ids: logits_fn(cfg, TensorParallel(), ids)))
    ids = np.arange(12, dtype=np.int32)[None] % cfg.vocab
    params = fn.init(jax.random.PRNGKey(0), ids)
    changed = ids.copy()
    changed[0, 8:] = 3
    a, b = np.asarray(fn.apply(params, ids)), np.asarray(fn.apply(params, changed))
    np.testing.assert_array_equal(a[0, :8], b[0, :8])
    assert not np.allclose(a[0, 8:], b[0, 8:])


# Gradient accumulation: 2 micro-batches of the tiny batch equal one step on the doubled batch, same data.
ACCUM = dataclasses.replace(PRESET, grad_accum=2)
DOUBLED = dataclasses.replace(PRESET, batch=2 * PRESET.batch)
# GPT-J's own configuration: accumulation meets remat (a checkpoint inside the micro-batch scan). The block's
# residual and head size are orthogonal to accumulation, and test_strategy_matches_single_device covers them.
ACCUM_VARIANTS = [(Residual.PARALLEL, Head.H256, Remat.FULL)]
ACCUM_IDS = [f"{r.value}-{h.value}-{m.value}" for r, h, m in ACCUM_VARIANTS]


def accumulation_inputs(residual, head, remat, strategy):
    """An accumulating program and driver, its parameters, its [2, B, T] batch, and that batch as [1, 2B, T]."""
    variant = Variant(residual, head, strategy, remat)
    program = Program.from_preset(ACCUM, model_for(ACCUM, variant))
    driver = make_driver(strategy, program, ACCUM.mesh)
    batch = program.example_batch(seed=0)
    doubled = {k: v.reshape(1, -1, *v.shape[2:]) for k, v in batch.items()}
    return program, driver, program.init_params(seed=0), batch, doubled


@functools.cache
def run_accumulated(residual, head, remat, strategy) -> tuple[float, dict, float, dict]:
    """(loss, gradients) of 2 accumulated micro-batches under ``strategy``, and of the single-device step on the
    doubled batch."""
    program, driver, params, batch, doubled = accumulation_inputs(residual, head, remat, strategy)
    loss, grads = driver.grad_step()(driver.place_params(params), driver.place_batch(batch))
    reference = Program.from_preset(DOUBLED, program.cfg)
    single = make_driver(Strategy.SINGLE, reference, DOUBLED.mesh)
    ref_loss, ref_grads = single.grad_step()(single.place_params(params), single.place_batch(doubled))
    as_float = lambda x: float(np.asarray(x).reshape(-1)[0])  # noqa: E731
    return as_float(loss), driver.to_global(grads), as_float(ref_loss), single.to_global(ref_grads)


def assert_accumulation_matches_doubled_batch(residual, head, remat, strategy):
    loss, grads, ref_loss, ref_grads = run_accumulated(residual, head, remat, strategy)
    assert abs(loss - ref_loss) / abs(ref_loss) <= LOSS_RTOL
    errors = jax.tree_util.tree_map(relative_error, grads, ref_grads)
    worst = max(jax.tree_util.tree_leaves(errors))
    print(f"{strategy.value} accumulation 2, {residual.value}-{head.value}-{remat.value}: worst error {worst:.2e}")
    assert worst <= GRAD_RTOL, errors


@pytest.mark.current_jax_only  # accumulation under pjit and shard_map: xmap's baselines there run at 1
@pytest.mark.parametrize("residual, head, remat", ACCUM_VARIANTS, ids=ACCUM_IDS)
@pytest.mark.parametrize("strategy", [Strategy.SINGLE, Strategy.PJIT, Strategy.SHARD_MAP], ids=lambda s: s.value)
def test_accumulation_equals_one_step_on_the_doubled_batch(strategy, residual, head, remat):
    require_devices(PRESET.mesh.devices)
    assert_accumulation_matches_doubled_batch(residual, head, remat, strategy)


@pytest.mark.parametrize("residual, head, remat", ACCUM_VARIANTS, ids=ACCUM_IDS)
def test_xmap_accumulation_equals_one_step_on_the_doubled_batch(residual, head, remat):
    skip_without_xmap()
    require_devices(PRESET.mesh.devices)
    assert_accumulation_matches_doubled_batch(residual, head, remat, Strategy.XMAP)


def test_an_unrolled_micro_batch_loop_computes_the_scanned_one():
    # 3 micro-batches: a scan of length 3 is the micro-batch loop (tiny's 2 layers scan over length 2 on jax 0.4.30)
    scanned = dataclasses.replace(ACCUM, grad_accum=3)
    unrolled = dataclasses.replace(scanned, unroll_accum=True)
    variant = Variant.parse("parallel-h256-single-full")
    results, loops = [], []
    for preset in (scanned, unrolled):
        program = Program.from_preset(preset, model_for(preset, variant))
        driver = make_driver(Strategy.SINGLE, program, Mesh(1, 1))
        step = driver.grad_step()
        results.append(step(driver.place_params(program.init_params()), driver.place_batch(program.example_batch())))
        params, _, batch = driver.abstract_args()
        loops.append("length=3" in str(jax.make_jaxpr(driver.accumulated_grad())(params, batch)))
    assert loops == [True, False]
    (loss, grads), (loss_unrolled, grads_unrolled) = results
    assert abs(float(loss) - float(loss_unrolled)) <= 1e-6 * abs(float(loss))
    errors = jax.tree_util.tree_map(relative_error, grads_unrolled, grads)
    assert max(jax.tree_util.tree_leaves(errors)) <= 1e-5


@pytest.mark.current_jax_only  # accumulation under pjit and shard_map: xmap's baselines there run at 1
def test_accumulated_train_steps_update_once_per_step():
    """Two steps of 2 accumulated micro-batches trace the losses of two single-device steps on the doubled batch
    (an update per micro-batch would not)."""
    require_devices(PRESET.mesh.devices)
    losses = {}
    for strategy in [Strategy.SINGLE, Strategy.PJIT, Strategy.SHARD_MAP]:
        inputs = accumulation_inputs(Residual.PARALLEL, Head.H256, Remat.FULL, strategy)
        program, driver, params, batch, doubled = inputs
        if strategy is Strategy.SINGLE:  # the reference: no accumulation, the doubled batch
            program = Program.from_preset(DOUBLED, program.cfg)
            driver, batch = make_driver(strategy, program, DOUBLED.mesh), doubled
        params = driver.place_params(params)
        opt_state, placed = driver.init_opt_state(params), driver.place_batch(batch)
        step, trace = driver.train_step(), []
        for _ in range(2):
            params, opt_state, loss = step(params, opt_state, placed)
            trace.append(float(np.asarray(loss).reshape(-1)[0]))
        losses[strategy] = trace
    assert losses[Strategy.SINGLE][1] < losses[Strategy.SINGLE][0]
    for strategy in (Strategy.PJIT, Strategy.SHARD_MAP):
        np.testing.assert_allclose(losses[strategy], losses[Strategy.SINGLE], rtol=1e-5)
