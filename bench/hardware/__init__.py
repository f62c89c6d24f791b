"""Hardware facts and what follows from them: the one peak table, the one topology parser, GPT-J's published
figures, and projections to TPU pods. Pure code; no JAX import."""
