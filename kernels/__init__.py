"""Reference kernels the GPT-J block calls (attention, rotary)."""
