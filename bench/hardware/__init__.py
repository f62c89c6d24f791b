"""Hardware facts: the one peak table, the one topology parser, GPT-J's published figures. Pure code; no JAX
import. What follows from them for a compiled step (projections to TPU pods) is bench/projection."""
