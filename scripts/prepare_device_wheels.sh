#!/usr/bin/env bash
# Prepares, on a machine that reaches PyPI, what scripts/device_session.sh installs on a
# GPU machine that reaches no package index (Python 3.12, x86-64, torch already there):
#   .whl/         snakemake and what it needs beyond that machine's packages, torchao,
#                 mlcommons-loadgen (one call carries it, with .gpu1/)
#   .gpu1/ ...    the onnxruntime-gpu wheel unpacked, xz-compressed and cut into parts,
#                 .gpu1/total saying how many; each call carries one part, the first
#                 beside .whl/, so that a call stays under a transfer limit of LIMIT_MB
# Versions are this project's pins (envs/inferbench-gpu.yaml); the snakemake
# dependencies are those of the snakemake this venv runs.
# usage: scripts/prepare_device_wheels.sh [VENV_PYTHON]   (default .venv/bin/python)
set -euo pipefail
python=${1:-.venv/bin/python}
limit_mb=${LIMIT_MB:-64}
ort_gpu=${ORT_GPU:-onnxruntime-gpu==1.31.1}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
platforms=(--only-binary=:all: --python-version 3.12 --implementation cp
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
  --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64)

# snakemake's requirements, recursively, minus what the GPU machine's image holds
# (its package list: the device tool's KINDS.md) and pulp (only the ILP scheduler
# imports it; the session runs --scheduler greedy).
present="jinja2 markupsafe packaging psutil pyyaml requests tabulate wrapt attrs
  typing-extensions urllib3 idna certifi charset-normalizer pulp"
names=$("$python" - "$present" <<'PY'
import sys
from importlib import metadata
from packaging.requirements import Requirement
skip = {n.lower() for n in sys.argv[1].split()}
seen, todo = {}, ["snakemake"]
while todo:
    name = todo.pop()
    key = name.lower().replace("_", "-")
    if key in seen or key in skip:
        continue
    dist = metadata.distribution(name)
    seen[key] = f"{dist.metadata['Name']}=={dist.version}"
    for spec in dist.requires or []:
        req = Requirement(spec)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            todo.append(req.name)
print("\n".join(sorted(seen.values())))
PY
)
rm -rf .whl .gpu[0-9]*
mkdir -p .whl
for spec in $names torchao==0.18.0 mlcommons-loadgen==6.0.17; do
  # a pure-Python package published only as an sdist (connection_pool) is built here
  "$python" -m pip download -q --no-deps "${platforms[@]}" -d .whl "$spec" 2>/dev/null \
    || "$python" -m pip wheel -q --no-deps -w .whl "$spec"
done
echo "$(ls .whl | wc -l) wheels in .whl ($(du -sm .whl | cut -f1) MB)"

"$python" -m pip download -q --no-deps "${platforms[@]}" -d "$work" "$ort_gpu"
mkdir -p "$work/unpacked"
"$python" -m zipfile -e "$work"/onnxruntime_gpu-*.whl "$work/unpacked"
tar -C "$work/unpacked" -cf - . | xz -6 -T0 > "$work/ort.tar.xz"
# What a call may carry beside the part: the tracked tree, and .whl/ in the first call.
tree_mb=$(( $(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1) / 1000000 + 2 ))
first=$(( (limit_mb * 1048576 / 1000000 - tree_mb - $(du -sm .whl | cut -f1) - 1) * 1000000 ))
rest=$(( (limit_mb * 1048576 / 1000000 - tree_mb - 1) * 1000000 ))
size=$(stat -c %s "$work/ort.tar.xz")
offset=0 part=1
while [ "$offset" -lt "$size" ]; do
  chunk=$([ "$part" = 1 ] && echo "$first" || echo "$rest")
  mkdir -p ".gpu$part"
  dd if="$work/ort.tar.xz" of=".gpu$part/part_$part" bs=1M iflag=skip_bytes,count_bytes \
    skip="$offset" count="$chunk" status=none
  offset=$((offset + chunk)) part=$((part + 1))
done
echo $((part - 1)) > .gpu1/total
echo "onnxruntime-gpu in $((part - 1)) parts: $(du -b .gpu*/part_* | awk '{print $1}' | tr '\n' ' ')"
