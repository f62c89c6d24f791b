"""The variant space and the presets: closed choices are enums, one variant is one frozen dataclass.

A variant's canonical name is ``{residual}-{head}-{strategy}-{remat}``; ``parallel-h256-xmap-full`` is the
configuration GPT-J-6B was trained with (Mesh Transformer JAX, 2021). Two choices that are not sweep axes extend the
name, each after a ``+``, in this order: a parameter layout other than Megatron's (``Layout``: ``+fsdp``), then an
attention kernel other than the reference (``kernels.choice.AttentionKernel``): ``parallel-h256-pjit-full+blockwise``,
``parallel-h256-pjit-full+fsdp``, ``parallel-h256-pjit-full+fsdp+blockwise``. The defaults have no suffix, so the
names of the 24 benchmarked variants are the Megatron layout's on the reference kernel.
"""

from __future__ import annotations

import dataclasses
import enum
import itertools
from dataclasses import dataclass
from typing import Any

from kernels.choice import AttentionKernel


class ConfigError(ValueError):
    """Bad user input: the message says what is valid."""


class _Choice(str, enum.Enum):
    @classmethod
    def parse(cls, text: str, axis: str) -> _Choice:
        for member in cls:
            if member.value == text:
                return member
        valid = ", ".join(m.value for m in cls)
        raise ConfigError(f"unknown {axis} {text!r}; valid {axis} values: {valid}")


class Residual(_Choice):
    PARALLEL = "parallel"  # GPT-J: y = x + attn(ln(x)) + ff(ln(x))
    SERIAL = "serial"  # GPT-2 / GPT-Neo: h = x + attn(ln_1(x)); y = h + ff(ln_2(h))


class Head(_Choice):
    H128 = "h128"
    H256 = "h256"

    @property
    def d_head(self) -> int:
        return int(self.value[1:])


class Activation(_Choice):
    """The feed-forward's nonlinearity."""

    GELU = "gelu"  # GPT-J, GPT-Neo: tanh-approximate GELU
    RELU = "relu"  # MaxText's 2023 decoder (its mlp_activations ["relu"])


class Strategy(_Choice):
    XMAP = "xmap"
    PJIT = "pjit"
    SHARD_MAP = "shard_map"
    SINGLE = "single"  # one device: the reference the other strategies are compared against


class Remat(_Choice):
    """What the backward pass recomputes of each block (``model.gptj.rematerialised`` applies it)."""

    NONE = "none"  # nothing: every activation the backward pass reads is kept from the forward
    FULL = "full"  # jax.checkpoint (hk.remat) around each block, as GPT-J: nothing saved, the whole forward rerun
    DOTS = "dots"  # jax.checkpoint_policies.dots_with_no_batch_dims_saveable: projection outputs saved, rest rerun
    ATTN = "attn"  # save_only_these_names(ATTENTION_OUTPUT): only the attention core's output saved, rest rerun


class Layout(_Choice):
    """Where parameters (and their optimizer state) live on the (dp, mp) mesh: ``model.sharding.PARAM_RULES``."""

    MEGATRON = "megatron"  # replicated over dp, split over mp by Megatron's rules (GPT-J's)
    FSDP = "fsdp"  # also split over dp on their embed dim, gathered per layer (fully sharded data parallelism)


# The strategies that run the FSDP layout: a second rules table under pjit, explicit gathers under shard_map.
FSDP_STRATEGIES = (Strategy.PJIT, Strategy.SHARD_MAP)


# The remat values of the 24 benchmarked variants; the named policies are chosen by name (--variant), not swept.
SWEPT_REMATS = (Remat.NONE, Remat.FULL)


AXES: dict[str, type[_Choice]] = {
    "residual": Residual,
    "head": Head,
    "strategy": Strategy,
    "remat": Remat,
}


KERNEL_SEPARATOR = "+"  # before each of a variant's non-default layout and attention kernel


@dataclass(frozen=True)
class Variant:
    residual: Residual
    head: Head
    strategy: Strategy
    remat: Remat
    # Not a sweep axis: kernels are compared against the reference on chosen variants, never multiplied by all 24.
    attention_kernel: AttentionKernel = AttentionKernel.reference
    # Not a sweep axis either: the FSDP layout is a point of the TPU design-space search (bench.tpu_aot.search).
    layout: Layout = Layout.MEGATRON

    @property
    def name(self) -> str:
        name = f"{self.residual.value}-{self.head.value}-{self.strategy.value}-{self.remat.value}"
        if self.layout is not Layout.MEGATRON:
            name += f"{KERNEL_SEPARATOR}{self.layout.value}"
        if self.attention_kernel is not AttentionKernel.reference:
            name += f"{KERNEL_SEPARATOR}{self.attention_kernel.value}"
        return name

    @property
    def reference_kernel_name(self) -> str:
        """The name of this variant on the reference kernel: the run a kernel's is paired with."""
        return self.replace(attention_kernel=AttentionKernel.reference).name

    @classmethod
    def parse(cls, name: str) -> Variant:
        axes, separator, suffix = name.partition(KERNEL_SEPARATOR)
        # strategy values contain "_" but never "-", so "-" splits the four axes unambiguously.
        parts = axes.split("-")
        if len(parts) != len(AXES):
            raise ConfigError(
                f"variant {name!r} is not of the form residual-head-strategy-remat[+layout][+kernel], "
                f"e.g. parallel-h256-xmap-full, parallel-h256-pjit-full+blockwise or parallel-h256-pjit-full+fsdp; "
                f"run `python -m bench list` for the benchmarked names"
            )
        values = [enum_cls.parse(part, axis) for (axis, enum_cls), part in zip(AXES.items(), parts)]
        layout = Layout.MEGATRON
        layout_values = {m.value for m in Layout if m is not Layout.MEGATRON}
        if separator and suffix.partition(KERNEL_SEPARATOR)[0] in layout_values:
            text, separator, suffix = suffix.partition(KERNEL_SEPARATOR)
            layout = Layout(text)
        kernel = _parse_kernel_suffix(suffix, name) if separator else AttentionKernel.reference
        return cls(*values, attention_kernel=kernel, layout=layout)

    def replace(self, **changes: Any) -> Variant:
        return dataclasses.replace(self, **changes)


def _parse_kernel_suffix(text: str, name: str) -> AttentionKernel:
    """The kernel after the last ``+`` of variant ``name``; the reference is the name without one (one spelling
    each, as the Megatron layout is)."""
    if text in (AttentionKernel.reference.value, Layout.MEGATRON.value):
        default = name.rpartition(KERNEL_SEPARATOR)[0]
        raise ConfigError(f"variant {name!r}: {text!r} is the default and takes no suffix; write {default!r}")
    try:
        return AttentionKernel.parse(text)
    except ValueError as error:
        layouts = ", ".join(m.value for m in Layout if m is not Layout.MEGATRON)
        raise ConfigError(
            f"variant {name!r}: {error} (reference: no suffix); a layout suffix ({layouts}) comes before the kernel's"
        ) from None


def all_variants() -> list[Variant]:
    """The 24 benchmarked variants (``single`` is the test reference, not a benchmarked strategy; remat none and
    full only, ``SWEPT_REMATS``)."""
    strategies = [s for s in Strategy if s is not Strategy.SINGLE]
    return [Variant(*combo) for combo in itertools.product(Residual, Head, strategies, SWEPT_REMATS)]


class Scope(_Choice):
    MODEL = "model"  # the preset's whole training step: embedding, L blocks, LM head, loss, AdamW update
    BLOCK = "block"  # one block forward and backward (and its AdamW update)


class Dtype(_Choice):
    FLOAT32 = "float32"
    BFLOAT16 = "bfloat16"


@dataclass(frozen=True)
class ModelConfig:
    """GPT-J architecture; the defaults are GPT-J-6B's (Mesh Transformer JAX configs/6B_roto_256.json)."""

    n_layers: int = 28
    d_model: int = 4096
    d_ff: int = 16384
    d_head: int = 256
    # 50257 tokens padded to 50400 (a multiple of 8 x 16 shards, and of 64 for the matmul units).
    vocab: int = 50400
    context: int = 2048
    # GPT-J rotates only the first 64 dims of each head; the rest pass through.
    rotary_dim: int = 64
    ln_eps: float = 1e-5
    residual: Residual = Residual.PARALLEL
    remat: Remat = Remat.FULL
    compute_dtype: Dtype = Dtype.BFLOAT16
    param_dtype: Dtype = Dtype.FLOAT32
    # How attention is computed (kernels.attention); a variant sets it from its name's +kernel suffix.
    attention_kernel: AttentionKernel = AttentionKernel.reference
    # Layers are stacked and scanned (one compiled block). Unrolled, XLA sees every layer: its cost analysis,
    # which counts a loop body once, then counts them all (GPT-J itself looped over layers in Python).
    unroll_layers: bool = False
    # The blockwise and pallas kernels loop over query and key blocks, with causal trip counts that depend on the
    # block index; unrolled, XLA's cost analysis sees every block pair (kernels.flash). Set only for the compiles
    # whose cost analysis is read (bench.tpu_aot.compile.unrolled); the reference kernel ignores it.
    unroll_attention_blocks: bool = False
    # The projections multiply one [B*T, D] matrix of tokens instead of a [B, T, D] array (model.gptj.project): the
    # same products, and the same program on any mesh (seq is never split). XLA CPU then runs the weight-gradient
    # GEMMs on their fast path: with [B, T, D], each transposed one operand first and ran at 195-331 GFLOP/s where
    # the flat form ran at 349-369 (each dot of the issue-12 block timed alone, jax 0.10.2, 2 cores, 2026-12-07);
    # the block ran 1.152x faster (reports/cpu-block, `nox -s cpu_block`). On for the CPU presets; off for the TPU
    # and GPU configurations, whose compiles (and the committed TPU compile cache) predate it and where it is
    # unmeasured.
    flat_tokens: bool = False
    # Attention heads; 0 means d_model / d_head (GPT-J, and the 24 variants). Explicit where the attention width
    # n_heads x d_head differs from d_model (MaxText 16B: 32 heads x 256 = 8192 at d_model 5120).
    attention_heads: int = 0
    activation: Activation = Activation.GELU
    # The LM head multiplies by the input embedding table transposed and has no weight or bias of its own
    # (MaxText's logits_via_embedding).
    tied_embeddings: bool = False
    # Local attention in some layers (GPT-Neo: global and local alternating). A local layer's query at t sees the
    # keys t - window + 1 .. t (Hugging Face modeling_gpt_neo.py's window_size, 256 for GPT-Neo 2.7B); layer i is
    # local when i % every == every - 1, so every=2 makes layers 1, 3, 5, ... local and layer 0 global, as GPT-Neo's
    # attention_types [[["global", "local"], 16]]. 0 and 0: every layer global.
    local_attention_window: int = 0
    local_attention_every: int = 0

    @property
    def n_heads(self) -> int:
        return self.attention_heads or self.d_model // self.d_head

    @property
    def attention_width(self) -> int:
        """H x K: the q/k/v projections' output width and the output projection's input."""
        return self.n_heads * self.d_head

    @property
    def n_local_layers(self) -> int:
        return self.n_layers // self.local_attention_every if self.local_attention_window else 0

    def layer_windows(self) -> tuple[int, ...]:
        """Keys each layer's query sees (itself included): the local window, or the context (global)."""
        every = self.local_attention_every
        local = [bool(self.local_attention_window) and i % every == every - 1 for i in range(self.n_layers)]
        return tuple(self.local_attention_window if is_local else self.context for is_local in local)

    def check_sizes(self) -> None:
        """Every size at least 1 (a zero ends in a division by zero, or fails only after compiling)."""
        sizes = {"n_layers": self.n_layers, "d_model": self.d_model, "d_ff": self.d_ff, "d_head": self.d_head}
        _check_positive(sizes | {"vocab": self.vocab, "context": self.context})
        if self.ln_eps <= 0:
            raise ConfigError(f"ln_eps must be positive, got {self.ln_eps}")

    def validate(self) -> None:
        self.check_sizes()
        if self.attention_heads < 0:
            raise ConfigError(f"attention_heads {self.attention_heads} must be at least 0 (0: d_model / d_head)")
        if not self.attention_heads and self.d_model % self.d_head:
            raise ConfigError(
                f"d_model {self.d_model} is not a multiple of d_head {self.d_head}; set attention_heads for an "
                f"attention width other than d_model"
            )
        self.check_local_attention()
        if not 0 <= self.rotary_dim <= self.d_head or self.rotary_dim % 2:
            raise ConfigError(f"rotary_dim {self.rotary_dim} must be even, at least 0 and at most d_head {self.d_head}")


    def check_local_attention(self) -> None:
        window, every = self.local_attention_window, self.local_attention_every
        if window < 0 or every < 0:
            raise ConfigError(
                f"local_attention_window {window} and local_attention_every {every} must be at least 0 "
                f"(both 0: no local attention)"
            )
        if bool(window) != bool(every):
            raise ConfigError(
                f"local_attention_window {window} with local_attention_every {every}: set both (e.g. 256 and 2, "
                f"every second layer local) or neither"
            )
        if every > self.n_layers:
            raise ConfigError(
                f"local_attention_every {every} is more than n_layers {self.n_layers}: no layer would be local"
            )
        if window and self.attention_kernel is not AttentionKernel.reference:
            raise ConfigError(
                f"local attention runs on the reference attention kernel only, not {self.attention_kernel.value!r}"
            )


def _check_positive(sizes: dict[str, int]) -> None:
    bad = [f"{name}={size}" for name, size in sizes.items() if size < 1]
    if bad:
        raise ConfigError(f"{', '.join(bad)}: sizes must be positive integers (at least 1)")


@dataclass(frozen=True)
class Mesh:
    dp: int = 1
    mp: int = 1

    @property
    def devices(self) -> int:
        return self.dp * self.mp

    @classmethod
    def parse(cls, text: str) -> Mesh:
        """``dp=2,mp=4`` (either key may be omitted and defaults to 1)."""
        sizes = {"dp": 1, "mp": 1}
        for item in filter(None, text.split(",")):
            key, sep, value = item.partition("=")
            if not sep or key.strip() not in sizes or not value.strip().isdigit() or int(value) < 1:
                raise ConfigError(f"bad mesh {text!r}; expected e.g. dp=2,mp=4 (positive integers, keys dp and mp)")
            sizes[key.strip()] = int(value)
        return cls(**sizes)

    def __str__(self) -> str:
        return f"dp={self.dp},mp={self.mp}"


@dataclass(frozen=True)
class Preset:
    """A workload: model dimensions, global batch and sequence, micro-batches per step, default mesh. Data,
    overridable by ``--set``."""

    name: str
    model: ModelConfig
    batch: int  # global sequences per micro-step (per step without gradient accumulation)
    seq: int
    mesh: Mesh
    learning_rate: float = 1.2e-4  # GPT-J-6B's peak learning rate
    weight_decay: float = 0.1  # GPT-J: on matrices only
    # Micro-batches per optimizer step: gradients of each are summed in grad_accum_dtype, then reduced over dp once
    # and applied by one AdamW update (model.program.accumulate).
    grad_accum: int = 1
    # The running sum's dtype. GPT-J summed in bf16 (mesh-transformer-jax mesh_transformer/transformer_shard.py,
    # CausalTransformer.train: the scan's carry is ``jnp.zeros_like(x).astype(jnp.bfloat16)``); on the v3-256 an f32
    # sum does not fit: parallel-h256-pjit-full asks for 15.89 GiB of 15.48 (libtpu 0.0.42.1, measured for issue 10).
    grad_accum_dtype: Dtype = Dtype.FLOAT32
    # The micro-batch loop is a lax.scan; unrolled, XLA's cost analysis (which counts a loop body once) sees every
    # micro-step, as unroll_layers does for the layers.
    unroll_accum: bool = False

    @property
    def tokens_per_step(self) -> int:
        """Tokens per optimizer step: every micro-batch counts."""
        return self.batch * self.seq * self.grad_accum

    def validate(self) -> None:
        """The checks that need no variant and no mesh (the variant sets d_head, so divisibility waits for it)."""
        _check_positive({"batch": self.batch, "seq": self.seq, "grad_accum": self.grad_accum})
        if self.learning_rate <= 0 or self.weight_decay < 0:
            raise ConfigError(
                f"learning_rate must be positive and weight_decay at least 0, got {self.learning_rate}, "
                f"{self.weight_decay}"
            )
        self.model.check_sizes()

    def check_scope(self, scope: Scope) -> None:
        """``--scope block`` runs one block's forward and backward on one batch: it has no micro-batch loop."""
        if scope is Scope.BLOCK and self.grad_accum > 1:
            raise ConfigError(
                f"grad_accum={self.grad_accum} with --scope block: gradient accumulation is defined for the whole "
                f"training step only; use --scope model, or --set grad_accum=1"
            )


PRESETS: dict[str, Preset] = {
    # Tests: seconds on a simulated 8-device CPU mesh. d_model 1024 keeps both head sizes and mp=4 legal.
    "tiny": Preset(
        "tiny",
        ModelConfig(
            n_layers=2,
            d_model=1024,
            d_ff=1024,
            vocab=256,
            context=64,
            compute_dtype=Dtype.FLOAT32,
            unroll_layers=True,
            flat_tokens=True,
        ),
        batch=4,
        seq=16,
        mesh=Mesh(dp=2, mp=4),
    ),
    # Meaningful CPU numbers: about a second a step on a 2-core machine with 8 simulated devices (batch 4: at
    # batch 8 a step took 2.3 s and the main job 21 min on the slowest machine seen, 8.4 GFLOP/s per device).
    "cpu": Preset(
        "cpu",
        ModelConfig(
            n_layers=2,
            d_model=1024,
            d_ff=4096,
            vocab=2048,
            context=256,
            compute_dtype=Dtype.FLOAT32,
            unroll_layers=True,
            flat_tokens=True,
        ),
        batch=4,
        seq=64,
        mesh=Mesh(dp=2, mp=4),
    ),
    # GPT-J-6B exactly, as it was trained: per-replica batch 1 x 2048 tokens on GPT-J's v3-256 mesh (dp=32 x mp=8),
    # 16 micro-batches per update (mesh-transformer-jax configs/6B_roto_256.json: per_replica_batch 1,
    # gradient_accumulation_steps 16), so 16 x 65,536 tokens per step.
    # The micro-batch gradients are summed in bf16, as GPT-J did (grad_accum_dtype above).
    "gptj-6b": Preset(
        "gptj-6b",
        ModelConfig(),
        batch=32,
        seq=2048,
        mesh=Mesh(dp=32, mp=8),
        grad_accum=16,
        grad_accum_dtype=Dtype.BFLOAT16,
    ),
    # GPT-Neo 2.7B dimensions, the article's comparison point (148k tokens/s on the same pod). Its 20 heads do not
    # split over mp=8, so on the same 256 cores the mesh is dp=64 x mp=4, one 2048-token sequence per replica as
    # GPT-J's (GPT-Neo's own Mesh TensorFlow layout is not this code's; the projection says so). Its vocabulary of
    # 50,257 is padded to 50,304 (a multiple of 64) so that the LM head splits over mp, as GPT-J padded to 50,400.
    "gpt-neo-2.7b": Preset(
        "gpt-neo-2.7b",
        ModelConfig(n_layers=32, d_model=2560, d_ff=10240, d_head=128, vocab=50304, residual=Residual.SERIAL),
        batch=64,
        seq=2048,
        mesh=Mesh(dp=64, mp=4),
    ),
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; valid presets: {', '.join(PRESETS)}")
    return PRESETS[name]


_PRESET_KEYS = {f.name: f.type for f in dataclasses.fields(Preset) if f.name not in ("name", "model", "mesh")}
_MODEL_KEYS = {f.name for f in dataclasses.fields(ModelConfig)}


def _convert(key: str, value: str, current: Any) -> Any:
    if isinstance(current, AttentionKernel):
        try:
            return AttentionKernel.parse(value)
        except ValueError as error:
            raise ConfigError(f"--set {key}={value}: {error}") from None
    if isinstance(current, enum.Enum):
        return type(current).parse(value, key)
    if isinstance(current, bool):
        if value not in ("true", "false"):
            raise ConfigError(f"--set {key}={value}: expected true or false")
        return value == "true"
    try:
        return type(current)(value)
    except ValueError:
        raise ConfigError(f"--set {key}={value}: expected a {type(current).__name__}") from None


def apply_overrides(preset: Preset, overrides: list[str]) -> Preset:
    """Apply ``key=value`` overrides (``seq=512``, ``n_layers=4``, ``compute_dtype=bfloat16``, ``mesh=dp=4,mp=2``)."""
    model_changes: dict[str, Any] = {}
    preset_changes: dict[str, Any] = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        if key == "mesh":
            preset_changes["mesh"] = Mesh.parse(value)
        elif key in _PRESET_KEYS:
            preset_changes[key] = _convert(key, value, getattr(preset, key))
        elif key in _MODEL_KEYS:
            model_changes[key] = _convert(key, value, getattr(preset.model, key))
        else:
            valid = sorted(set(_PRESET_KEYS) | _MODEL_KEYS | {"mesh"})
            raise ConfigError(f"unknown override key {key!r}; valid keys: {', '.join(valid)}")
    model = dataclasses.replace(preset.model, **model_changes)
    return dataclasses.replace(preset, model=model, **preset_changes)


# The model fields a variant sets (model_for): an override of one would be silently replaced, so runs refuse it.
VARIANT_FIELDS = {  # field -> variant axis
    "residual": "residual",
    "d_head": "head",
    "remat": "remat",
    "attention_kernel": "attention kernel",
}


def refuse_variant_fields(overrides: list[str]) -> None:
    """For commands that take ``--variant``: the variant, not ``--set``, chooses the residual, head size, remat and
    attention kernel."""
    for item in overrides:
        key = item.partition("=")[0]
        if key in VARIANT_FIELDS:
            example = "parallel-h256-pjit-full+blockwise" if key == "attention_kernel" else "parallel-h128-pjit-none"
            raise ConfigError(
                f"--set {item}: {key} is the variant's {VARIANT_FIELDS[key]} axis; choose it with --variant "
                f"(e.g. --variant {example}), not --set"
            )


def model_for(preset: Preset, variant: Variant) -> ModelConfig:
    """The preset's model with the variant's residual, head size, remat and attention kernel applied (d_model
    fixed)."""
    model = dataclasses.replace(
        preset.model,
        residual=variant.residual,
        d_head=variant.head.d_head,
        remat=variant.remat,
        attention_kernel=variant.attention_kernel,
    )
    model.validate()
    return model


def check_kernel_runs(kernel: AttentionKernel, platform: str) -> None:
    """That ``kernel`` runs on JAX platform ``platform`` (cpu, gpu, tpu) with the JAX of this process, which must be
    running: kernels.attention asks it whether ``jax.nn.dot_product_attention`` takes ``implementation``."""
    from kernels.attention import check_kernel_supported, dot_product_attention_has_implementation

    refusal = check_kernel_supported(kernel, platform, dot_product_attention_has_implementation())
    if refusal:
        raise ConfigError(refusal)


def check_layout(variant: Variant, model: ModelConfig, mesh: Mesh) -> None:
    """The FSDP layout runs under pjit and shard_map, and splits every parameter's embed dim (d_model) over dp."""
    if variant.layout is Layout.MEGATRON:
        return
    if variant.strategy not in FSDP_STRATEGIES:
        valid = ", ".join(s.value for s in FSDP_STRATEGIES)
        raise ConfigError(
            f"variant {variant.name!r}: the {variant.layout.value} layout runs under {valid}, not "
            f"{variant.strategy.value} (e.g. {variant.replace(strategy=Strategy.PJIT).name})"
        )
    if model.d_model % mesh.dp:
        raise ConfigError(
            f"variant {variant.name!r}: FSDP splits every parameter's embed dim over dp, and d_model {model.d_model} "
            f"is not divisible by dp={mesh.dp}; use a dp that divides {model.d_model}, or the Megatron layout"
        )


def validate_run(
    preset: Preset,
    variant: Variant,
    mesh: Mesh,
    device_count: int,
    scope: Scope = Scope.MODEL,
    platform: str | None = None,
) -> ModelConfig:
    """Every check that can fail on user input, before anything compiles. Returns the variant's model.

    ``platform``: the JAX platform the step will run on, once JAX is running; the variant's attention kernel is
    checked against it. None where the caller compiles for a platform other than JAX's own (tpu-aot).
    """
    preset.validate()
    preset.check_scope(scope)
    model = model_for(preset, variant)
    if platform is not None:
        check_kernel_runs(variant.attention_kernel, platform)
    if preset.seq > model.context:
        raise ConfigError(f"seq {preset.seq} is longer than the context {model.context}")
    if variant.strategy is Strategy.SINGLE and mesh.devices != 1:
        raise ConfigError(f"strategy single runs on one device; got mesh {mesh} (use dp=1,mp=1)")
    if model.n_heads % mesh.mp:
        origin = "attention_heads" if model.attention_heads else f"d_model {model.d_model} / d_head {model.d_head}"
        raise ConfigError(f"n_heads {model.n_heads} ({origin}) is not divisible by mp={mesh.mp}")
    for name, size in (("d_ff", model.d_ff), ("vocab", model.vocab)):
        if size % mesh.mp:
            raise ConfigError(f"{name} {size} is not divisible by mp={mesh.mp}")
    if preset.batch % mesh.dp:
        raise ConfigError(f"global batch {preset.batch} is not divisible by dp={mesh.dp}")
    check_layout(variant, model, mesh)
    if mesh.devices > device_count:
        raise ConfigError(
            f"mesh {mesh} needs {mesh.devices} devices but {device_count} are present; on CPU simulate them with "
            f"XLA_FLAGS=--xla_force_host_platform_device_count={mesh.devices} (set before JAX starts)"
        )
    return model
