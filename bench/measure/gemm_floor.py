"""The GEMM floor of a compiled step: every dot of its optimized HLO timed alone, at its own shapes, element types
and dimension numbers, one after another on this process's first device (``bench run --gemm-floor``).

Where the calibrated peak (bench.measure.calibrate) is the best a square GEMM reaches here, the floor is what the
step's own GEMMs reach: their sum is the time no fusion or scheduling of the rest can beat, so a step's HFU splits
into the floor's share of the peak (how fast XLA's GEMMs run at these shapes) and the step's share of the floor
(what everything around them costs). The CPU block's runs (reports/cpu-block) found its weight-gradient GEMMs
at 195-331 GFLOP/s alone against 445-500 GFLOP/s calibrations: a cost of the dots' form that no elementwise fusion could
recover.

What is timed: ``lax.dot_general`` on operands of ones in the default (row-major) layout, jitted alone, the best of
``repeats`` runs after one warm-up (``bench.measure.calibrate.best_time``, as the calibration: noise only adds
time). XLA's CPU pipeline gives dot operands the default layout and writes any transpose as a copy of its own, so
there a dot alone is the program's dot; on other platforms the compiler may choose other layouts inside the
program. Identical dots are timed once.

Devices: simulated CPU devices share the host's cores, so the floor of a CPU step is every device's dots in turn
(dots per device x devices); on an accelerator each device runs its own, and the floor is one device's. jaxlib
0.4.30's oneDNN matmul custom calls are timed as the dots they compute (bench.analysis.gemms); a convolution is
counted as untimed, with its FLOPs.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from bench.analysis.gemms import Gemm, program_gemms
from bench.measure.calibrate import best_time

DEFAULT_REPEATS = 5
_DTYPES = {"f32": np.float32, "f64": np.float64, "f16": np.float16, "s32": np.int32, "s8": np.int8}


def _jax_dtype(hlo_type: str) -> Any:
    import jax.numpy as jnp

    if hlo_type == "bf16":
        return jnp.bfloat16
    if hlo_type not in _DTYPES:
        raise ValueError(f"no JAX type for HLO element type {hlo_type!r}")
    return _DTYPES[hlo_type]


def time_gemm(gemm: Gemm, device: Any, repeats: int = DEFAULT_REPEATS) -> float:
    """Best seconds of ``repeats`` runs of one dot alone on ``device``."""
    import jax
    import jax.numpy as jnp

    dimensions = ((gemm.lhs_contracting, gemm.rhs_contracting), (gemm.lhs_batch, gemm.rhs_batch))
    out_dtype = _jax_dtype(gemm.out_dtype)

    def dot(a: Any, b: Any) -> Any:
        return jax.lax.dot_general(a, b, dimensions, preferred_element_type=out_dtype)

    lhs = jax.device_put(jnp.ones(gemm.lhs, _jax_dtype(gemm.lhs_dtype)), device)
    rhs = jax.device_put(jnp.ones(gemm.rhs, _jax_dtype(gemm.rhs_dtype)), device)
    run = jax.jit(dot)
    return best_time(lambda: run(lhs, rhs), repeats)[0]


def gemm_floor_fields(
    hlo_text: str,
    devices: int,
    platform: str,
    peak_flops_per_s_per_device: float | None = None,
    repeats: int = DEFAULT_REPEATS,
) -> dict[str, Any]:
    """The record's ``gemm_floor_*`` fields for one compiled step (its per-device optimized HLO) run on ``devices``
    of this process; with the devices' peak, also the floor's FLOP/s over it (over all of them on CPU, whose
    simulated devices share the cores)."""
    import jax

    found = program_gemms(hlo_text)
    device = jax.local_devices()[0]
    sharing = devices if platform == "cpu" else 1  # simulated CPU devices take turns on the same cores
    seconds: dict[tuple, float] = {}
    by_component: dict[str, float] = defaultdict(float)
    total_s = total_flops = 0.0
    for gemm in found.gemms:
        if gemm.signature not in seconds:
            seconds[gemm.signature] = time_gemm(gemm, device, repeats)
        step_s = seconds[gemm.signature] * gemm.executions * sharing
        by_component[gemm.component] += step_s
        total_s += step_s
        total_flops += gemm.flops * gemm.executions * sharing
    rate = total_flops / total_s if total_s else None
    return {
        "gemm_floor_s_per_step": total_s,
        "gemm_floor_flops_per_s_total": rate,
        "gemm_floor_peak_frac": rate / (peak_flops_per_s_per_device * sharing)
        if rate and peak_flops_per_s_per_device
        else None,
        "gemm_floor_component_s_per_step": dict(sorted(by_component.items())),
        "gemm_floor_dots": sum(g.executions for g in found.gemms) * sharing,
        "gemm_floor_distinct_dots": len(seconds),
        "gemm_floor_untimed_matmuls": found.untimed_matmuls * sharing,
        "gemm_floor_untimed_flops_per_step_total": found.untimed_flops * sharing,
        "gemm_floor_repeats": repeats,
    }
