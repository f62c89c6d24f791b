"""GPT-J's published training throughput, in ONE place, with the numbers derived from it.

Published facts are stored as published (with the wording and the source); everything derived from them
(FLOP/s, utilisation) is computed by bench/flops.py and bench/hardware.py, never typed in.

Sources:
- ARTICLE: Aran Komatsuzaki, "GPT-J-6B: 6B JAX-Based Transformer", 2021-06-04,
  https://arankomatsuzaki.wordpress.com/2021/06/04/gpt-j/ . Its throughput sentence, as quoted in
  kingoflolz/mesh-transformer-jax#235: "Throughput of the 6B GPT-J for training (151k tokens/s) is faster
  than the 2.7B GPT-Neo (148k tokens/s) on the same hardware (TPU v3-256 pod)". The 5.4 / 13.4 / 8.1 PFLOP/s and
  "about 60%" figures are from the same article (body not re-read here; 5.4 is corroborated by secondary summaries).
- README: kingoflolz/mesh-transformer-jax README.md, "Model Details" table (n_parameters 6,053,381,344).
- CONFIG_256: kingoflolz/mesh-transformer-jax configs/6B_roto_256.json, the v3-256 run's configuration
  ("cores_per_replica": 8, "per_replica_batch": 1, "gradient_accumulation_steps": 16, "tpu_size": 256).
- LEVANTER: stanford-crfm/levanter docs/Levanter-1.0-Release.md, "Training Performance on TPU": MFU and HFU (HFU "as
  measured by the profiler") of GPT-2-architecture models trained with FSDP on a TPU v3-256; the 6.7B row is
  "| 6.7B | 47.3% | 71.5% |". A peer on the same pod, different code and parallelism: not a projection input.
- BENCHMARK_PY: kingoflolz/mesh-transformer-jax benchmark.py, which prints "effective flops (not including attn)"
  = 6 N tokens/s and "MXU flops" = (8 N tokens + attn_flops)/s with
  ``attn_flops = global_batch * (seq ** 2) * it * 32 * 5120 * 16`` -- 16 L d_model seq per token with L=32,
  d_model=5120 hard-coded, not GPT-J-6B's 28 x 4096. benchmarks.md's 6B run (v3-32) prints exactly that ratio.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.analysis import flops
from bench.hardware import table as hardware
from model.config import ModelConfig

ARTICLE = "Komatsuzaki 2021, 'GPT-J-6B: 6B JAX-Based Transformer' (arankomatsuzaki.wordpress.com/2021/06/04/gpt-j/)"
README = "kingoflolz/mesh-transformer-jax README.md, Model Details"
BENCHMARK_PY = "kingoflolz/mesh-transformer-jax benchmark.py"
CONFIG_256 = "kingoflolz/mesh-transformer-jax configs/6B_roto_256.json"
LEVANTER = "stanford-crfm/levanter docs/Levanter-1.0-Release.md, Training Performance on TPU"


@dataclass(frozen=True)
class Published:
    """A number as a source printed it."""

    value: float
    unit: str
    wording: str  # in quotes where a stored copy of the source was read; "paraphrase:" where it was not
    source: str


TOKENS_PER_S = Published(151_000, "tokens/s", '"151k tokens/s"', ARTICLE)
GPT_NEO_2_7B_TOKENS_PER_S = Published(148_000, "tokens/s", '"148k tokens/s" "(TPU v3-256 pod)"', ARTICLE)
DEVICES = Published(256, "TPU v3 cores", '"TPU v3-256 pod"', ARTICLE)  # 128 chips x 2 cores, one JAX device per core
DEVICE_KIND = "TPU v3"
EFFECTIVE_PFLOPS = Published(5.4, "PFLOP/s", "paraphrase: 5.4 PFLOPs of 6N effective FLOP/s", ARTICLE)
THEORETICAL_PFLOPS = Published(13.4, "PFLOP/s", "paraphrase: 13.4 PFLOPs theoretical peak of the v3-256", ARTICLE)
HARDWARE_PFLOPS = Published(8.1, "PFLOP/s", "paraphrase: 8.1 PFLOPs, about 60%, counting attention and remat", ARTICLE)
GRAD_ACCUM = Published(16, "micro-batches per update", '"gradient_accumulation_steps": 16', CONFIG_256)
LEVANTER_6_7B_MFU = Published(0.473, "fraction of peak", '"| 6.7B | 47.3% | 71.5% |" (MFU column)', LEVANTER)
LEVANTER_6_7B_HFU = Published(0.715, "fraction of peak", '"| 6.7B | 47.3% | 71.5% |" (HFU column)', LEVANTER)
LEVANTER_SETUP = "GPT-2 architecture, 6.7B parameters, FSDP, TPU v3-256 (Levanter, JAX/Haliax)"
N_PARAMS_README = Published(6_053_381_344, "parameters", '"n_parameters | 6,053,381,344"', README)

SHAPE = ModelConfig()  # GPT-J-6B: 28 layers, d_model 4096, d_ff 16384, vocab 50400, context 2048
SEQ = SHAPE.context
# The Hugging Face checkpoint's count (bench.analysis.flops.gptj_param_count): 6,050,882,784.
N_PARAMS_HF = flops.gptj_param_count(SHAPE.n_layers, SHAPE.d_model, SHAPE.d_ff, SHAPE.vocab)
# benchmark.py's hard-coded attention shape (see module docstring).
BENCHMARK_PY_ATTN_LAYERS = 32
BENCHMARK_PY_ATTN_D_MODEL = 5120


def effective_flops_per_s(n_params: int = N_PARAMS_HF) -> float:
    """GPT-J's 6N FLOP/s at 151k tokens/s."""
    return flops.flops_6n(n_params, TOKENS_PER_S.value)


def theoretical_flops_per_s(basis: hardware.PeakBasis = hardware.PeakBasis.GPTJ) -> float:
    """Peak of the 256 v3 cores on ``basis`` (GPTJ: 52.5 TFLOP/s per core; SPEC: 61.5)."""
    peak_per_device, _ = hardware.peak_flops_per_s_per_device(DEVICE_KIND, basis)
    return DEVICES.value * peak_per_device


def hardware_flops_per_s_total(n_params: int = N_PARAMS_HF, *, as_benchmark_py: bool = False) -> float:
    """(8 N + 16 L d_model seq) x 151k tokens/s: full remat, GPT-J-6B's shape or benchmark.py's constants."""
    n_layers, d_model = SHAPE.n_layers, SHAPE.d_model
    if as_benchmark_py:
        n_layers, d_model = BENCHMARK_PY_ATTN_LAYERS, BENCHMARK_PY_ATTN_D_MODEL
    return flops.hardware_flops(n_params, n_layers, d_model, SEQ, TOKENS_PER_S.value, remat=True)


def utilisation(flops_per_s: float, basis: hardware.PeakBasis = hardware.PeakBasis.GPTJ) -> float:
    """``flops_per_s`` over the v3-256 peak on ``basis``."""
    peak_per_device, source = hardware.peak_flops_per_s_per_device(DEVICE_KIND, basis)
    return flops.mfu(flops_per_s, int(DEVICES.value), peak_per_device, peak_source=source)
