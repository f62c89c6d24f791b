"""The attention kernels as one closed choice, importable without JAX.

The variant space (``model.config``) and the record schema name a kernel before JAX starts; the kernels themselves,
and which platform runs each, are ``kernels.attention``'s.
"""

from __future__ import annotations

import enum


class AttentionKernel(enum.Enum):
    reference = "reference"
    xla = "xla"
    blockwise = "blockwise"
    cudnn = "cudnn"
    pallas = "pallas"

    @classmethod
    def parse(cls, text: str) -> AttentionKernel:
        try:
            return cls(text)
        except ValueError:
            valid = ", ".join(k.value for k in cls)
            raise ValueError(f"unknown attention kernel {text!r}; valid kernels: {valid}") from None
