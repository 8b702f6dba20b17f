#!/usr/bin/env bash
# Where a pretraining step's time goes, ours against PyTorch, in one call on the lent GPU
# machine: `trainer bench-ops` (each piece of a step timed alone: projections, attention,
# a decoder layer, LM head + loss, model, step) with matmuls in each of $COMPUTE (default
# "bf16 f32"), then scripts/gpu/bench_torch_ops.py (eager transformers, f32 and bf16
# autocast) on the same shapes; then the side-by-side table (scripts/ops_table.py).
#   run (device tool) with carry [".device"], where .device/trainer is
#   `cargo build --release -p trainer --features cuda` (stripped).
# Writes ops.jsonl, logs and ops-table.md to ${OUT:-/tmp/ops-out}.
set -uo pipefail
OUT=${OUT:-/tmp/ops-out}
BIN=${TRAINER_BIN:-.device/trainer}
MODEL=${MODEL:-configs/models/llama-3.2-1b-shape.json}
SHAPE="--batch ${BATCH:-1} --seq ${SEQ:-2048} --repeats ${REPEATS:-5}"
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
for c in ${COMPUTE:-bf16 f32}; do
  echo "== ours, matmuls in $c"
  timeout "${OURS_TIMEOUT:-300}" "$BIN" bench-ops --model "$MODEL" $SHAPE --compute-dtype "$c" 2> "$OUT/ours-$c.log" | tee -a "$OUT/ops.jsonl" \
    || { echo "ours ($c): exit $?"; tail -20 "$OUT/ours-$c.log"; }
done
echo "== pytorch"
timeout "${TORCH_TIMEOUT:-240}" python3 scripts/gpu/bench_torch_ops.py --config "$MODEL" $SHAPE 2> "$OUT/torch.log" | tee -a "$OUT/ops.jsonl" \
  || { echo "pytorch: exit $?"; tail -20 "$OUT/torch.log"; }
python3 scripts/ops_table.py "$OUT/ops.jsonl" | tee "$OUT/ops-table.md"
