"""Projections of TPU training throughput: models over tpu-aot records (what the compiler says of a step, priced
with bench/hardware's facts), and their validation against published runs. Pure code; no JAX import."""
