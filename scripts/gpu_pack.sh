#!/usr/bin/env bash
# Pack what the one-shot GPU run (scripts/gpu_run.sh) carries to the device machine into
# gpu/ (git-ignored): the prepared data (shards xz-compressed: the 68 MB train shard of the
# shipped model's data packs to about 9 MB) and the wheels of the Python packages training
# and export need that the device image lacks (tree-sitter, tree-sitter-go, gguf, pathspec),
# for its Python 3.12, pinned to the versions installed here.
#
#   scripts/gpu_pack.sh DATA_DIR      # a prepared data directory (hrm-lsp prepare)
#
# Then, on the device machine, from the repository root with gpu/ carried:
#   bash scripts/gpu_run.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:?usage: scripts/gpu_pack.sh PREPARED_DATA_DIR}
[ -f "$DATA/manifest.json" ] || { echo "gpu_pack: $DATA is not a prepared data directory (no manifest.json)" >&2; exit 2; }
PY=.venv/bin/python
pins=()
for pkg in tree-sitter tree-sitter-go gguf pathspec; do
  v=$($PY -m pip show "$pkg" 2>/dev/null | sed -n 's/^Version: //p')
  [ -n "$v" ] || { echo "gpu_pack: $pkg is not installed here (scripts/bootstrap.sh dev)" >&2; exit 2; }
  pins+=("$pkg==$v")
done
rm -rf gpu
mkdir -p gpu/wheels gpu/data
$PY -m pip download -q --only-binary=:all: --no-deps --python-version 3.12 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 \
  --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64 --platform any \
  -d gpu/wheels "${pins[@]}"
for f in "$DATA"/*; do
  [ -f "$f" ] || continue  # the work/ folder of preparation is not needed
  case "$f" in
    *.bin) xz -T0 -6 -c "$f" > "gpu/data/$(basename "$f").xz" ;;
    *) cp "$f" gpu/data/ ;;
  esac
done
du -sh gpu gpu/wheels gpu/data
