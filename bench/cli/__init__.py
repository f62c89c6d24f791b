"""``python -m bench``: the argument parser, the commands, and the run spec every command line resolves to."""
