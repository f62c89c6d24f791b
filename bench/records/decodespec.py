"""One checked ``bench decode`` command line: what the CLI resolves and the decode measurement and compile read."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from model.config import Mesh, Preset, Strategy, Variant


@dataclass(frozen=True)
class DecodeSpec:
    preset: Preset
    variants: tuple[Variant, ...]
    mesh: Mesh  # for the sharded strategies; single runs on one device
    batches: tuple[int, ...]
    contexts: tuple[int, ...]  # cache lengths, tokens
    prompt_tokens: int
    new_tokens: int
    temperature: float
    top_p: float
    out: Path | None
    resume: bool
    left_out: str | None = None

    def mesh_of(self, variant: Variant) -> Mesh:
        return Mesh(1, 1) if variant.strategy is Strategy.SINGLE else self.mesh
