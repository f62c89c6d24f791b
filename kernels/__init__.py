"""Kernels the GPT-J block calls: attention (a reference and the kernels that replace it) and rotary embedding."""
