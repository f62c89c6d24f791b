"""Pure helpers about profiler traces that the measuring and the reporting side share (no JAX)."""

from __future__ import annotations

import shlex
from pathlib import Path


def tensorboard_command(log_dir: Path, port: int = 6006) -> str:
    """The command that serves ``log_dir``'s profiles on http://localhost:PORT only (Profile tab).

    TensorBoard is used because ``--host localhost`` binds the loopback interface; ``xprof --logdir DIR`` works
    without TensorBoard but its 2.24 server has no host flag and listens on every interface (and on gRPC 50051).
    Needs ``tensorboard`` next to the plugin: see VIEWER_INSTALL_HINT.
    """
    if not 0 < port < 65536:
        raise ValueError(f"port must be in 1..65535, got {port!r}")
    return f"tensorboard --logdir {shlex.quote(str(log_dir))} --host localhost --port {port}"
