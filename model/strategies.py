"""Strategies are drivers: each places the same global parameters and runs the same program.

- ``single``: one device, global view; the reference.
- ``pjit``: global view under ``jax.jit`` with ``NamedSharding`` in/out shardings; the block's sharding
  constraints guide the compiler, which inserts the collectives.
- ``shard_map``: local view; the block's Megatron f/g functions are the explicit collectives.
- ``xmap``: the same local-view step under ``xmap`` with named axes (jax 0.4.30 only, via model.compat).

Every step takes a batch with a leading micro-batch axis ([A, B, ...], ``model.program.accumulate``) and reduces
gradients over dp once per step, after the micro-batch loop. The FSDP layout (``model.config.Layout``; pjit and
shard_map) reduces them where they are made instead: each micro-step's gathered parameters transpose to a
reduce-scatter over dp, layer by layer, into the dp-split gradient sums, as FSDP does.

All drivers share one interface: ``place_params``, ``place_batch``, ``init_opt_state``, ``grad_step``
(loss and gradients, for equality tests) and ``train_step`` (forward, backward, AdamW update), plus
``to_global`` to bring any parameter-shaped result back to the global layout.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec

from model import compat
from model.config import FSDP_STRATEGIES, Layout, Mesh, Strategy
from model.program import Batch, GradFn, Params, Program, accumulate
from model.sharding import DP, MESH_AXES, MESH_RULES, MP, TensorParallel, param_axes, param_specs, spec_for

TrainStep = Callable[[Params, Any, Batch], tuple[Params, Any, jnp.ndarray]]


def make_mesh(mesh: Mesh, devices: list[Any] | None = None) -> jax.sharding.Mesh:
    devices = jax.devices() if devices is None else devices
    if len({d.process_index for d in devices}) > 1:
        # Several processes (hosts): each one's devices contiguous, row-major, so an mp group (two all-reduces
        # per layer) stays inside a host when mp divides its device count, and dp (one per step) spans hosts.
        devices = sorted(devices, key=lambda d: (d.process_index, d.id))
    return jax.sharding.Mesh(np.array(devices[: mesh.devices]).reshape(mesh.dp, mesh.mp), MESH_AXES)


class Driver:
    def __init__(
        self, program: Program, mesh: Mesh, devices: list[Any] | None = None, layout: Layout = Layout.MEGATRON
    ):
        self.program, self.mesh_shape, self.layout = program, mesh, layout
        self.mesh = make_mesh(mesh, devices)
        self.optimizer = program.optimizer()
        self.param_specs = param_specs(program.param_shapes(), layout)
        # The leading micro-batch axis is never sharded: every device sees all A micro-batches of its rows.
        self.batch_specs = {k: PartitionSpec(None, *spec_for(axes)) for k, axes in program.batch_axes.items()}

    def _named(self, specs: Any) -> Any:
        return jax.tree_util.tree_map(lambda s: NamedSharding(self.mesh, s), specs, is_leaf=_is_spec)

    def opt_specs(self) -> Any:
        """A PartitionSpec per optimizer-state leaf: a parameter's moments follow the parameter."""
        state_shapes = jax.eval_shape(self.optimizer.init, self.program.param_shapes())
        return optax.tree_map_params(
            self.optimizer,
            lambda _, spec: spec,
            state_shapes,
            self.param_specs,
            transform_non_params=lambda _: PartitionSpec(),
            is_leaf=_is_spec,
        )

    def place_params(self, params: Params) -> Params:
        shardings = self._named(self.param_specs)
        if jax.process_count() == 1:
            return jax.device_put(params, shardings)
        # Multi-controller: every process initialised the same global parameters (same seed, same program);
        # each fills the shards its own devices hold.
        return jax.tree_util.tree_map(_from_global_value, params, shardings)

    def place_batch(self, batch: Batch) -> Batch:
        shardings = {k: NamedSharding(self.mesh, self.batch_specs[k]) for k in batch}
        if jax.process_count() == 1:
            return {k: jax.device_put(v, shardings[k]) for k, v in batch.items()}
        # Multi-controller: each process feeds only its own rows, as a per-host input pipeline would.
        return {k: _from_process_rows(np.asarray(v), shardings[k]) for k, v in batch.items()}

    def init_opt_state(self, params: Params) -> Any:
        return jax.jit(self.optimizer.init, out_shardings=self._named(self.opt_specs()))(params)

    def to_global(self, tree: Any) -> Any:
        return jax.tree_util.tree_map(np.asarray, tree)

    def abstract_args(self) -> tuple[Params, Any, Batch]:
        """Shapes, dtypes and shardings of the train step's arguments: enough to lower and compile it without
        allocating anything (and for devices that are not present, such as a TPU topology)."""
        params = self.program.param_shapes()
        opt_state = jax.eval_shape(self.optimizer.init, params)
        batch = self.program.batch_shapes()
        return (
            _with_sharding(params, self._named(self.param_specs)),
            _with_sharding(opt_state, self._named(self.opt_specs())),
            _with_sharding(batch, self._named(self.batch_specs)),
        )

    def grad_step(self) -> Callable[[Params, Batch], tuple[jnp.ndarray, Params]]:
        raise NotImplementedError

    def train_step(self) -> TrainStep:
        raise NotImplementedError


class GlobalViewDriver(Driver):
    """single and pjit: the program sees whole arrays; under pjit the compiler partitions them."""

    def __init__(
        self,
        program: Program,
        mesh: Mesh,
        devices: list[Any] | None = None,
        constrain: bool = True,
        layout: Layout = Layout.MEGATRON,
    ):
        super().__init__(program, mesh, devices, layout)
        self.tp = TensorParallel(mesh=self.mesh if constrain else None, layout=layout)

    def accumulated_grad(self) -> GradFn:
        """Mean loss and gradients of a step's batch [A, B, ...]."""
        program = self.program
        if self.layout is Layout.MEGATRON and self.tp.mesh is not None and program.grad_accum > 1:
            return self._per_replica_accumulated_grad()
        grad_fn = jax.value_and_grad(program.loss_fn(self.tp))
        constrain = lambda t: t  # noqa: E731
        if self.layout is Layout.FSDP and self.tp.mesh is not None:
            # The running sums stay in the parameters' dp-split layout: each micro-step's gradients are
            # reduce-scattered into them (never a whole gradient per replica, as the Megatron path keeps).
            sums = self._named(self.param_specs)
            constrain = lambda t: (t[0], jax.lax.with_sharding_constraint(t[1], sums))  # noqa: E731
        return lambda params, batch: accumulate(
            grad_fn, params, batch, program.unroll_accum, constrain, program.grad_accum_dtype
        )

    def _per_replica_accumulated_grad(self) -> GradFn:
        """pjit with accumulation. In the global view the gradient of replicated parameters from dp-sharded rows
        is a sum over replicas, which the SPMD partitioner would all-reduce inside the micro-batch loop, once per
        micro-step. Instead each replica's gradient of its own rows is kept apart on a leading [dp] axis (vmap,
        sharded over dp by ``spmd_axis_name``) through the loop, and the replicas are averaged once after it."""
        dp, program = self.mesh_shape.dp, self.program
        grad_fn = jax.value_and_grad(program.loss_fn(_ReplicaView(mesh=self.mesh)))
        replica_grad = jax.vmap(grad_fn, in_axes=(None, 0), spmd_axis_name=DP)
        sums = (self._named(PartitionSpec(DP)), self._named(_per_replica(self.param_specs)))

        def replicas(params: Params, micro: Batch) -> tuple[jnp.ndarray, Params]:
            rows = jax.tree_util.tree_map(lambda a: a.reshape(dp, a.shape[0] // dp, *a.shape[1:]), micro)
            return replica_grad(params, rows)  # [dp] losses, [dp, ...] gradients

        def step(params: Params, batch: Batch) -> tuple[jnp.ndarray, Params]:
            constrain = lambda t: jax.lax.with_sharding_constraint(t, sums)  # noqa: E731
            loss, grads = accumulate(replicas, params, batch, program.unroll_accum, constrain, program.grad_accum_dtype)
            # The one dp reduction of the step: every replica's gradient is of its own mean loss. Summed in the
            # gradients' own dtype (jnp.mean and jnp.sum widen bf16 to f32, and the all-reduce with them).
            replica_mean = lambda g: jax.lax.reduce(g, np.zeros((), g.dtype), jax.lax.add, (0,)) / dp  # noqa: E731
            return loss.mean(0), jax.tree_util.tree_map(replica_mean, grads)

        return step

    def grad_step(self) -> Callable[[Params, Batch], tuple[jnp.ndarray, Params]]:
        params, batch = self._named(self.param_specs), self._named(self.batch_specs)
        return jax.jit(
            self.accumulated_grad(),
            in_shardings=(params, batch),
            out_shardings=(self._named(PartitionSpec()), params),
        )

    def train_step(self) -> TrainStep:
        grad_fn, optimizer = self.accumulated_grad(), self.optimizer

        def step(params: Params, opt_state: Any, batch: Batch) -> tuple[Params, Any, jnp.ndarray]:
            loss, grads = grad_fn(params, batch)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, loss

        state = (self._named(self.param_specs), self._named(self.opt_specs()))
        return jax.jit(
            step,
            in_shardings=(*state, self._named(self.batch_specs)),
            out_shardings=(*state, self._named(PartitionSpec())),
            donate_argnums=(0, 1),
        )


@dataclass(frozen=True)
class _ReplicaView(TensorParallel):
    """The global view of one dp replica's rows, under ``jax.vmap(..., spmd_axis_name=DP)``: vmap shards the
    replica axis over dp, so the batch dim inside is not sharded again."""

    def constrain(self, x: jnp.ndarray, axes: tuple[str, ...]) -> jnp.ndarray:
        spec = PartitionSpec(*(None if a == "batch" else MESH_RULES[a] for a in axes))
        return jax.lax.with_sharding_constraint(x, NamedSharding(self.mesh, spec))


def _per_replica(specs: Any) -> Any:
    return jax.tree_util.tree_map(lambda s: PartitionSpec(DP, *s), specs, is_leaf=_is_spec)


def local_grad(
    program: Program, tp: TensorParallel, specs: Any = None
) -> Callable[[Params, Batch], tuple[jnp.ndarray, Params]]:
    """Loss and gradients of one (dp, mp) shard over its micro-batches, averaged over data-parallel replicas.
    ``specs``: the parameters' PartitionSpecs; a leaf split over dp (the FSDP layout) already holds its gradient
    summed over replicas (the reduce-scatter that transposes its gather), so it is divided by dp, not all-reduced."""
    grad_fn = jax.value_and_grad(program.loss_fn(tp))
    split = [DP in spec for spec in jax.tree_util.tree_leaves(specs, is_leaf=_is_spec)] if specs else []

    def dp_mean(grads: Params) -> Params:
        if not any(split):
            return jax.lax.pmean(grads, DP)
        leaves, tree = jax.tree_util.tree_flatten(grads)
        replicated = jax.lax.pmean([g for g, s in zip(leaves, split) if not s], DP)
        means = iter(replicated)
        return tree.unflatten([g / tp.dp_size if s else next(means) for g, s in zip(leaves, split)])

    def step(params: Params, batch: Batch) -> tuple[jnp.ndarray, Params]:  # batch: [A, B/dp, ...]
        loss, grads = accumulate(grad_fn, params, batch, program.unroll_accum, sum_dtype=program.grad_accum_dtype)
        # Once per step, after the micro-batch loop. Every replica's gradient is of its own mean loss; the global
        # mean's gradient is their average.
        return jax.lax.pmean(loss, DP), dp_mean(grads)

    return step


def _is_spec(x: Any) -> bool:
    return isinstance(x, PartitionSpec)


def local_train(
    program: Program, tp: TensorParallel, optimizer: optax.GradientTransformation, specs: Any = None
) -> TrainStep:
    grad_step = local_grad(program, tp, specs)

    def step(params: Params, opt_state: Any, batch: Batch) -> tuple[Params, Any, jnp.ndarray]:
        loss, grads = grad_step(params, batch)
        updates, opt_state = optimizer.update(grads, opt_state, params)  # elementwise: local shards suffice
        return optax.apply_updates(params, updates), opt_state, loss

    return step


class ShardMapDriver(Driver):
    def __init__(
        self, program: Program, mesh: Mesh, devices: list[Any] | None = None, layout: Layout = Layout.MEGATRON
    ):
        super().__init__(program, mesh, devices, layout)
        self.tp = TensorParallel(axis=MP, size=mesh.mp, layout=layout, dp_size=mesh.dp)

    def _shard_map(self, fn: Callable, in_specs: Any, out_specs: Any) -> Callable:
        return compat.shard_map(fn, mesh=self.mesh, in_specs=in_specs, out_specs=out_specs)

    def grad_step(self) -> Callable[[Params, Batch], tuple[jnp.ndarray, Params]]:
        fn = self._shard_map(
            local_grad(self.program, self.tp, self.param_specs),
            in_specs=(self.param_specs, self.batch_specs),
            out_specs=(PartitionSpec(), self.param_specs),
        )
        return jax.jit(fn)

    def train_step(self) -> TrainStep:
        state = (self.param_specs, self.opt_specs())
        fn = self._shard_map(
            local_train(self.program, self.tp, self.optimizer, self.param_specs),
            in_specs=(*state, self.batch_specs),
            out_specs=(*state, PartitionSpec()),
        )
        return jax.jit(fn, donate_argnums=(0, 1))


def _from_global_value(x: Any, sharding: NamedSharding) -> jax.Array:
    """A global array from a value every process holds whole: each process copies out its devices' shards."""
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def _from_process_rows(global_value: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """A global array from this process's block of it: the bounding box of the shards its devices hold."""
    indices = sharding.addressable_devices_indices_map(global_value.shape).values()
    block = tuple(
        slice(min(i[dim].indices(n)[0] for i in indices), max(i[dim].indices(n)[1] for i in indices))
        for dim, n in enumerate(global_value.shape)
    )
    return jax.make_array_from_process_local_data(sharding, global_value[block], global_value.shape)


def _with_sharding(shapes: Any, shardings: Any) -> Any:
    return jax.tree_util.tree_map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, shardings)


def _mp_dim(spec: PartitionSpec) -> int | None:
    return next((i for i, axis in enumerate(spec) if axis == MP), None)


class XmapDriver(Driver):
    """Local view under xmap. xmap maps named axes over leading array dims, so every parameter and optimizer
    leaf is held as [mp, ...local shape] (replicated ones broadcast, as mesh-transformer-jax did) and every
    batch array as [dp, A, B/dp, ...]."""

    def __init__(self, program: Program, mesh: Mesh, devices: list[Any] | None = None):
        if not compat.has_xmap():
            raise RuntimeError(compat.HAS_XMAP_MESSAGE.format(version=jax.__version__))
        super().__init__(program, mesh, devices)
        self.tp = TensorParallel(axis=MP, size=mesh.mp)
        self.resources = {DP: DP, MP: MP}

    def _axes(self, tree: Any, axis: str) -> Any:
        return jax.tree_util.tree_map(lambda _: {0: axis}, tree)

    def _xmap(
        self,
        fn: Callable,
        in_axes: Any,
        out_axes: Any,
        resources: dict[str, str] | None = None,
        donate_argnums: tuple[int, ...] = (),
    ) -> Callable:
        resources = self.resources if resources is None else resources
        mapped = compat.xmap(
            fn, in_axes=in_axes, out_axes=out_axes, axis_resources=resources, donate_argnums=donate_argnums
        )

        def run(*args: Any) -> Any:
            with self.mesh:
                return mapped(*args)

        run.lower = lambda *args: self._lower(mapped, *args)  # type: ignore[attr-defined]
        return run

    def _lower(self, mapped: Any, *args: Any) -> Any:
        with self.mesh:
            return mapped.lower(*args)

    def place_params(self, params: Params) -> Params:
        mp = self.mesh_shape.mp

        def stack(x: Any, spec: PartitionSpec) -> jnp.ndarray:
            dim = _mp_dim(spec)
            x = np.asarray(x)
            shards = np.split(x, mp, axis=dim) if dim is not None else [x] * mp
            return jnp.asarray(np.stack(shards))  # [mp, ...local]

        return jax.tree_util.tree_map(stack, params, self.param_specs)

    def place_batch(self, batch: Batch) -> Batch:
        dp = self.mesh_shape.dp

        def by_replica(v: Any) -> jnp.ndarray:  # [A, B, ...] -> [dp, A, B/dp, ...]
            v = np.asarray(v)
            return jnp.asarray(np.moveaxis(v.reshape(v.shape[0], dp, -1, *v.shape[2:]), 1, 0))

        return {k: by_replica(v) for k, v in batch.items()}

    def abstract_args(self) -> tuple[Params, Any, Batch]:
        mp, dp = self.mesh_shape.mp, self.mesh_shape.dp
        local = jax.tree_util.tree_map_with_path(
            lambda path, s: jax.ShapeDtypeStruct(
                self.tp.local_shape(param_axes(path[-1].key, s.ndim), s.shape), s.dtype
            ),
            self.program.param_shapes(),
        )
        opt_state = jax.eval_shape(self.optimizer.init, local)

        def stacked(s: Any) -> jax.ShapeDtypeStruct:
            return jax.ShapeDtypeStruct((mp, *s.shape), s.dtype)

        batch = {
            k: jax.ShapeDtypeStruct((dp, s.shape[0], s.shape[1] // dp, *s.shape[2:]), s.dtype)
            for k, s in self.program.batch_shapes().items()
        }
        return jax.tree_util.tree_map(stacked, local), jax.tree_util.tree_map(stacked, opt_state), batch

    def to_global(self, tree: Any) -> Any:
        def unstack(x: Any, spec: PartitionSpec) -> np.ndarray:
            dim = _mp_dim(spec)
            x = np.asarray(x)
            return np.concatenate(list(x), axis=dim) if dim is not None else x[0]

        return jax.tree_util.tree_map(unstack, tree, self.param_specs)

    def init_opt_state(self, params: Params) -> Any:
        state_shapes = jax.eval_shape(self.optimizer.init, self.program.param_shapes())
        # The optimizer state has no batch dim: only mp is mapped here.
        init = self._xmap(
            self.optimizer.init, (self._axes(params, MP),), self._axes(state_shapes, MP), resources={MP: MP}
        )
        return init(params)

    def grad_step(self) -> Callable[[Params, Batch], tuple[jnp.ndarray, Params]]:
        shapes = self.program.param_shapes()
        in_axes = (self._axes(shapes, MP), self._axes(self.batch_specs, DP))
        return self._xmap(local_grad(self.program, self.tp), in_axes, ({}, self._axes(shapes, MP)))

    def train_step(self) -> TrainStep:
        shapes = self.program.param_shapes()
        state_shapes = jax.eval_shape(self.optimizer.init, shapes)
        state_axes = (self._axes(shapes, MP), self._axes(state_shapes, MP))
        fn = local_train(self.program, self.tp, self.optimizer)
        # Parameters and optimizer state are donated, as in the other drivers and in mesh-transformer-jax.
        return self._xmap(fn, (*state_axes, self._axes(self.batch_specs, DP)), (*state_axes, {}), donate_argnums=(0, 1))


def make_driver(
    strategy: Strategy,
    program: Program,
    mesh: Mesh,
    devices: list[Any] | None = None,
    layout: Layout = Layout.MEGATRON,
) -> Driver:
    """``layout``: where parameters live (model.sharding.PARAM_RULES); FSDP under pjit and shard_map only."""
    if layout is not Layout.MEGATRON and strategy not in FSDP_STRATEGIES:
        raise ValueError(f"the {layout.value} layout runs under {', '.join(s.value for s in FSDP_STRATEGIES)} only")
    if strategy is Strategy.SINGLE:
        return GlobalViewDriver(program, Mesh(1, 1), devices, constrain=False)
    if strategy is Strategy.PJIT:
        return GlobalViewDriver(program, mesh, devices, layout=layout)
    if strategy is Strategy.SHARD_MAP:
        return ShardMapDriver(program, mesh, devices, layout)
    return XmapDriver(program, mesh, devices)
