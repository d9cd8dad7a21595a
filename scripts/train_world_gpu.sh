#!/usr/bin/env bash
# Stage 1 of the shipped world-discrete (card: assets/world-discrete/README.md): both kinds in parallel on one GPU,
# then a quick evaluation. The shipped world-continuous was trained on CPU instead, from scratch in one command with
# `--relation-share 0.5 --geometry-weight 1` (its card); a new world-discrete should add those two flags (EXTRA).
# Usage: [EXTRA="--relation-share 0.5 --geometry-weight 1"] bash scripts/train_world_gpu.sh OUTDIR
set -u
OUT=${1:?OUTDIR}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 SILMM_THREADS=1
run() { python3 -m silmm.world.train --device cuda --workers 3 --max-minutes ${MAX_MINUTES:-5} ${EXTRA:-} "$@"; }
run --kind discrete   --out "$OUT/wd_a" --steps 5000 --batch-size 64 --lr 1.5e-3 > "$OUT/wd_a.log" 2>&1 &
run --kind continuous --out "$OUT/wc_a" --steps 5000 --batch-size 64 --lr 1.5e-3 > "$OUT/wc_a.log" 2>&1 &
run --kind discrete   --out "$OUT/wd_b" --steps 5000 --batch-size 96 --lr 8e-4 --seed 1 > "$OUT/wd_b.log" 2>&1 &
run --kind continuous --out "$OUT/wc_b" --steps 5000 --batch-size 96 --lr 8e-4 --seed 1 > "$OUT/wc_b.log" 2>&1 &
wait
[ "${SKIP_EVAL:-0}" = 1 ] && exit 0
for m in wd_a wc_a wd_b wc_b; do
  PYTHONPATH=.:${PYTHONPATH:-} python3 scripts/world_eval_quick.py "$OUT/eval_$m.json" "$OUT/$m" --device cuda > "$OUT/eval_$m.log" 2>&1 &
done
wait
