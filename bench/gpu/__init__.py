"""``python -m bench.gpu``: the suite on one lent GPU in one command (``--dry-run``: the same path on CPU)."""
