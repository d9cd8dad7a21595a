#!/usr/bin/env bash
# The prepared one-call device check (docs/STATUS.md, "When a GPU is lent"), ending within BUDGET seconds:
# 1. issue 5: every benchmark scorer at real architecture sizes (random weights), batched and one image at a time
#    (`python -m eval.bench --real-size`), and Qwen2.5-VL-7B as the DPG judge (`python -m scripts.qwen_judge_bench`);
# 2. issue 2: the four world-discrete training variants of scripts/train_world_gpu.sh in the time that is left.
# Writes OUTDIR/{gpu.txt,bench.json,bench.log,qwen.json,qwen.log} and OUTDIR/train/.
# Usage: [DEVICE=cuda] [TINY=1 (a smoke run: tiny judges)] bash scripts/gpu_check.sh OUTDIR [BUDGET=540]
set -u
OUT=${1:?OUTDIR}
BUDGET=${2:-540}
START=$(date +%s)
DEVICE=${DEVICE:-cuda}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
  python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
  nproc; } > "$OUT/gpu.txt" 2>&1
size=--real-size; qsize=7b; [ -n "${TINY:-}" ] && size= && qsize=tiny
timeout 170 python3 -m eval.bench $size --device "$DEVICE" --json "$OUT/bench.json" > "$OUT/bench.log" 2>&1
echo "bench exit $? after $(( $(date +%s) - START )) s"; grep -v "Writing\|Loading" "$OUT/bench.log" | tail -12
timeout 100 python3 -m scripts.qwen_judge_bench --size $qsize --device "$DEVICE" --json "$OUT/qwen.json" > "$OUT/qwen.log" 2>&1
echo "qwen exit $? after $(( $(date +%s) - START )) s"; tail -6 "$OUT/qwen.log"
left=$(( BUDGET - ($(date +%s) - START) - 40 ))
minutes=$(python3 -c "print(max(0.2, round($left / 60, 2)))")
echo "training for $minutes minutes"
DEVICE=$DEVICE MAX_MINUTES=$minutes bash scripts/train_world_gpu.sh "$OUT/train"
cat "$OUT/train/done.txt"
python3 -c "import json,sys; [print(m, {k: json.load(open(f'$OUT/train/{m}/training.json'))[k] for k in ('steps_done', 'seconds', 'final')}) for m in sys.argv[1:]]" wd_a wd_b wd_c wd_d
echo "total $(( $(date +%s) - START )) s"
