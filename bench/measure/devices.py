"""Simulated CPU devices: XLA reads the device count once, when JAX starts, so it is set before that."""

from __future__ import annotations

import os
import re
import sys

FLAG = "--xla_force_host_platform_device_count"


def request_cpu_devices(count: int) -> None:
    """Ask XLA for at least ``count`` host devices. Harmless on GPU and TPU, where it only affects the host."""
    if "jax" in sys.modules:
        return  # too late to change; validate_run reports a shortfall with the command that fixes it
    flags = os.environ.get("XLA_FLAGS", "")
    match = re.search(rf"{FLAG}=(\d+)", flags)
    if match and int(match.group(1)) >= count:
        return
    flags = re.sub(rf"{FLAG}=\d+", "", flags).strip()
    os.environ["XLA_FLAGS"] = f"{flags} {FLAG}={count}".strip()
