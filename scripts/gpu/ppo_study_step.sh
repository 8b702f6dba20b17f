#!/usr/bin/env bash
# A PPO step at the study's scale, timed on the GPU machine (issue 27): configs/ppo.toml as
# shipped (256 prompts x 4 samples, responses up to 1,024 tokens, the study's mini-batches,
# bf16 products, the reference held in bf16, every layer recomputed in the update) on a
# randomly initialised model of the shape SHAPE (default the 3B shape; a random model
# answers with all 1,024 tokens, the worst case), with generated Countdown tasks in place of
# TinyZero's parquet file, one held-out task, no behavior tracking and no checkpoints
# (`--no-save`: a 3B PPO checkpoint is 77 GB), for STEPS steps (default 1). The GPU's
# memory in use is sampled every half second. PPO_KEYS sets `[ppo]` keys on top, e.g.
# PPO_KEYS='optimizer_state = "host"; micro_batch = 1' (what an 80 GB card needs at 3B).
# GPU_PROFILE=1 records every kernel of the first step (`--gpu-profile`), by part, summarised
# in $OUT/gpu-profile.txt (scripts/gpu_profile.py --parts --families).
# Writes the log, the metrics and the memory peak to $OUT.
#   run (device tool; the 3B shape needs an H200: needs_h200) with carry
#   [".device/trainer.xz", ".device/cache"], where .device/cache is a habits cache holding
#   the Llama-3 tokenizer (tokenizers/llama3/tokenizer.json.gz and tokenizer_config.json).
set -euo pipefail
OUT=${OUT:-/tmp/ppo-study-step}
source "$(dirname "$0")/trainer_binary.sh"
source "$(dirname "$0")/ppo_keys.sh"
mkdir -p "$OUT"
# Compiled kernels and autotune results travel between machines (scripts/gpu/cubecl_cache.sh).
source "$(dirname "$0")/cubecl_cache.sh"
trap save_cubecl_cache EXIT
export HABITS_CACHE=${HABITS_CACHE:-$PWD/.device/cache}
tok="$HABITS_CACHE/tokenizers/llama3/tokenizer.json"
[ -f "$tok" ] || gunzip -k "$tok.gz"
SHAPE=${SHAPE:-configs/models/llama-3.2-3b-shape.json}
RUN=runs/ppo-study-step
# The derived config lives in configs/ so that its paths resolve from the project root.
config=configs/ppo-study-step.toml
sed -e "s|^config = .*|config = \"$SHAPE\"|" -e '/^weights = /d' -e '/^parquet = /d' \
  -e 's/^eval_tasks = .*/eval_tasks = 1/' -e '/^\[track\]/,/^$/d' -e "s|^dir = .*|dir = \"$RUN\"|" \
  configs/ppo.toml > "$config"
set_ppo_keys "$config"
cp "$config" "$OUT/"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
( while true; do nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits; sleep 0.5; done ) > "$OUT/gpu-mem.txt" &
SAMPLER=$!
status=0
profile=()
[ "${GPU_PROFILE:-0}" = 1 ] && profile=(--gpu-profile "$OUT/gpu-profile.jsonl")
timeout "${PPO_TIMEOUT:-540}" "$BIN" ppo --config "$config" --fresh --no-save --stop-after "${STEPS:-1}" "${profile[@]}" > "$OUT/ppo.log" 2>&1 || status=$?
kill $SAMPLER || true
if [ -f "$OUT/gpu-profile.jsonl" ]; then
  python3 scripts/gpu_profile.py "$OUT/gpu-profile.jsonl" --parts --families --top 12 > "$OUT/gpu-profile.txt"
  head -80 "$OUT/gpu-profile.txt"
fi
echo "exit $status; peak GPU memory in use $(sort -n "$OUT/gpu-mem.txt" | tail -1) MiB" | tee "$OUT/summary.txt"
grep -E "memory plan|^ppo|^step|^eval|warning|error" "$OUT/ppo.log" | tee -a "$OUT/summary.txt" || true
cp "$RUN/metrics.jsonl" "$OUT/" 2>/dev/null || true
tail -5 "$OUT/ppo.log"
exit $status
