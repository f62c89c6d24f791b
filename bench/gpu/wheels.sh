#!/usr/bin/env bash
# Puts the wheels that `python -m bench.gpu` needs on the lent H200 into .whl/ (git-ignored), at the versions
# requirements/current.txt pins. The H200 image (/work/.library/device/KINDS.md) has jax 0.11.2, optax, numpy, pandas,
# matplotlib, tabulate and absl-py, but not dm-haiku and jmp (the model), nor xprof and its plugin (the trace's
# summary; without them the traced run records profile_error and the rest still runs). Usage, from the repo root:
#   bash bench/gpu/wheels.sh
# then carry .whl in the device tool's run (README, "Measuring on a GPU").
set -euo pipefail
cd "$(dirname "$0")/../.."
pins=(dm-haiku jmp xprof tensorboard_plugin_profile gviz-api)
spec=()
for name in "${pins[@]}"; do
  line=$(grep -i "^${name}==" requirements/current.txt) || { echo "no pin for ${name} in requirements/current.txt" >&2; exit 1; }
  spec+=("${line}")
done
mkdir -p .whl
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "${spec[@]}"
du -sh .whl
