"""The collective kinds and mesh axes the report names, as record fields spell them (``comm_{axis}_{kind}_*``).

Read only here: when ``bench/analysis/collectives.py`` holds the suite's one table, these two become imports of it.
"""

KIND_LABELS = {  # collective kind in a record key: its name in the report
    "allreduce": "all-reduce",
    "allgather": "all-gather",
    "reducescatter": "reduce-scatter",
    "alltoall": "all-to-all",
    "collectivepermute": "collective-permute",
}
AXIS_LABELS = {"mp": "mp", "dp": "dp", "dpmp": "dp+mp", "none": "no mesh axis"}  # mesh axis in a record key: name
# the kinds the Megatron expectation does not have (it counts all-reduces only)
OTHER_KINDS = {kind: label for kind, label in KIND_LABELS.items() if kind != "allreduce"}
