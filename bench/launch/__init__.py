"""Running many: the sweep (a process per variant), the per-process ``jax.distributed`` session, the local
multi-process launcher."""
