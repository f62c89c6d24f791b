"""Compile-only runs for TPU topologies without a TPU: libtpu's environment, and the records they produce."""
