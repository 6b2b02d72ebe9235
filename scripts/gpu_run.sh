#!/usr/bin/env bash
# The one-shot GPU run (issue 14), on a lent device machine (docs/training.md, "A GPU run"):
# from the repository root, with gpu/ from scripts/gpu_pack.sh carried and $OUT set by the
# device tool. Trains the gpu-h200 recipe for about five minutes in bf16 with torch.compile,
# exports the 4-bit GGUF to $OUT/hrgc-gpu.gguf, scores it and the shipped model on the held-out
# test split, and prints tokens/s, MFU and peak memory against the estimate last.
#
#   RECIPE=gpu-h200 MINUTES=5 TRAIN_TIMEOUT=420 bash scripts/gpu_run.sh
#
# A rehearsal without a GPU (what the tests cannot afford; about three minutes here):
#   OUT=/tmp/gpu-out PYTHON=.venv/bin/python INSTALL=0 DEVICE=cpu MINUTES=0.5 \
#     SETS="data.batch_size=4 data.workers=2 run.compile=false run.eval_every=20 run.eval_batches=2 run.checkpoint_every=20 run.log_every=5" \
#     bash scripts/gpu_run.sh
set -euo pipefail
: "${OUT:?set OUT to the folder whose files come back}"
RECIPE=${RECIPE:-gpu-h200}
MINUTES=${MINUTES:-5}
TRAIN_TIMEOUT=${TRAIN_TIMEOUT:-420}
PY=${PYTHON:-python3}
# A rehearsal on a machine without a GPU: DEVICE=cpu MINUTES=0.5 SETS="data.batch_size=8 ..."
DEVICE=${DEVICE:-cuda}
read -r -a SETS <<< "${SETS:-}"
SET_ARGS=()
for s in "${SETS[@]}"; do SET_ARGS+=(--set "$s"); done
T0=$SECONDS
say() { echo "[gpu_run +$((SECONDS - T0)) s] $*" | tee -a "$OUT/steps.log"; }
[ -d gpu/wheels ] && [ -f gpu/data/manifest.json ] || { echo "gpu_run: no gpu/ here: run scripts/gpu_pack.sh DATA first and carry gpu" >&2; exit 2; }

DEPS=/tmp/hrm-deps DATA=/tmp/hrm-data RUN=/tmp/hrm-run
if [ "${INSTALL:-1}" = 1 ]; then  # INSTALL=0: the packages are there already (a rehearsal)
  $PY -m pip install -q --no-index --no-deps --target "$DEPS" gpu/wheels/*.whl
fi
export PYTHONPATH="$PWD:$DEPS${PYTHONPATH:+:$PYTHONPATH}"
$PY benchmarks/gpu_run.py check --device "$DEVICE" | tee -a "$OUT/steps.log"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv > "$OUT/nvidia-smi.csv" || true
rm -rf "$DATA" "$RUN"; mkdir -p "$DATA"
$PY - "$DATA" <<'PYEOF'
import lzma, shutil, sys
from pathlib import Path
dst = Path(sys.argv[1])
for f in Path("gpu/data").iterdir():
    if f.suffix == ".xz":
        with lzma.open(f) as src, open(dst / f.stem, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 22)
    else:
        shutil.copy(f, dst / f.name)
PYEOF
say "data unpacked: $(du -sh "$DATA" | cut -f1)"

STEPS=$($PY benchmarks/gpu_run.py data-rate "$DATA" --recipe "$RECIPE" --minutes "$MINUTES" "${SET_ARGS[@]}" | tee -a "$OUT/steps.log" | tail -1)
say "training (the batch builders feed at most $STEPS steps in $MINUTES min)"
set +e
timeout -s INT -k 30 "$TRAIN_TIMEOUT" $PY -m hrm_lsp.cli train --recipe "$RECIPE" --data "$DATA" \
  --out "$RUN" --device "$DEVICE" --set "schedule.max_minutes=$MINUTES" --set "schedule.steps=$STEPS" "${SET_ARGS[@]}" \
  > "$OUT/train.log" 2>&1
rc=$?
set -e
tr '\r' '\n' < "$OUT/train.log" | grep -E "eval step|recipe |training |steps|interrupted|Error|error" | tail -20 || true
say "train exit status $rc"
cp "$RUN/metrics.jsonl" "$RUN/config.json" "$OUT/" 2>/dev/null || true
$PY -m hrm_lsp.cli export "$RUN" --out "$OUT/hrgc-gpu.gguf" 2>&1 | tail -3
say "exported $(du -h "$OUT/hrgc-gpu.gguf" | cut -f1)"
$PY benchmarks/heldout.py --data "$DATA" --split test --batches 64 "$OUT/hrgc-gpu.gguf" \
  hrm_lsp/assets/hrgc-default.gguf 2>&1 | tee "$OUT/heldout.txt" | tail -6
$PY benchmarks/gpu_run.py report "$RUN" --train-log "$OUT/train.log" | tee "$OUT/report.md"
say "done"
