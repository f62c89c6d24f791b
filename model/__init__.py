"""GPT-J model family: configs, the block written once, partitioning drivers."""
