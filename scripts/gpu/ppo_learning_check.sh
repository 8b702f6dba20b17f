#!/usr/bin/env bash
# Issue 27's check that PPO still learns with the memory options on: the 90M Countdown run
# (configs/ppo-gpu.toml) four times at once on one GPU, as shipped and with $OPTION_KEYS
# (default: the reference in bf16, every layer recomputed, AdamW's moments on the host),
# each with seeds $SEEDS (default "1 2": the seed-to-seed spread the options' curve is judged
# against), each under a time limit of $MINUTES; VARIANTS="options" (or "shipped") runs one
# side only. The 90M step leaves the card mostly idle, so the runs share it; each is slower
# than alone, all by about the same (the curves are compared by step, not by time).
# Beside them, compare-backends' AdamW checks (moments in page-locked host memory against
# on the card) and its entropy kernels' check (`kernels.fused_entropy`). Writes each run's
# metrics (metrics-<variant>-<seed>.jsonl), the checks (adamw-check.txt), each run's log
# (log-<variant>-<seed>.txt) and a summary (the GPU, the held-out evaluations, each log's
# tail) to $OUT; the curves are drawn back home with
#   python3 scripts/plot_ppo_curves.py OUT/metrics-*.jsonl docs/ppo-options.png
# HABITS_PINNED_MOMENTS=0 keeps the options' host moments in pageable memory (read back and
# uploaded through burn; `kernels.pinned_moments` is on by default).
#   run (device tool) with carry [".device/trainer.xz", ".device/cache", ".device/cubecl-cache.tar.xz"]
set -euo pipefail
OUT=${OUT:-/tmp/ppo-learning-check}
source "$(dirname "$0")/trainer_binary.sh"
source "$(dirname "$0")/ppo_keys.sh"
source "$(dirname "$0")/cubecl_cache.sh"
trap save_cubecl_cache EXIT
MINUTES=${MINUTES:-7}
SEEDS=${SEEDS:-1 2}
OPTION_KEYS=${OPTION_KEYS:-reference_dtype = \"bf16\"; recompute = \"layers\"; optimizer_state = \"host\"}
mkdir -p "$OUT"
export HABITS_CACHE=${HABITS_CACHE:-$PWD/.device/cache}
tok="$HABITS_CACHE/tokenizers/llama3/tokenizer.json"
[ -f "$tok" ] || gunzip -k "$tok.gz"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/summary.txt"
echo "options: $OPTION_KEYS; seeds: $SEEDS; $MINUTES minutes each" | tee -a "$OUT/summary.txt"

# Beside the runs: AdamW's moments in page-locked host memory against on the card and the
# entropy op, the op checks of compare-backends (its model comparisons are cut by the time
# limit).
( timeout 200 "$BIN" compare-backends --config configs/models/countdown-90m.json 2>&1 | grep -E "AdamW|entropy|weights as built|NOT THE SAME|DIFFERS" > "$OUT/adamw-check.txt" || true ) &
CHECK=$!
pids=()
names=()
for variant in ${VARIANTS:-shipped options}; do
  for seed in $SEEDS; do
    name=$variant-$seed
    # The copies live in configs/ so that their paths resolve from the project root.
    config=configs/ppo-check-$name.toml
    sed -e "s|^dir = .*|dir = \"runs/ppo-check-$name\"|" -e '/^\[track\]/,/^$/d' configs/ppo-gpu.toml > "$config"
    keys="seed = $seed"
    [ "$variant" = options ] && keys="$keys; $OPTION_KEYS"
    PPO_KEYS=$keys set_ppo_keys "$config"
    timeout $((${MINUTES%.*} * 60 + 120)) "$BIN" ppo --config "$config" --fresh --time-limit-minutes "$MINUTES" \
      > "runs-$name.log" 2>&1 &
    pids+=($!)
    names+=("$name")
  done
done
status=0
for i in "${!pids[@]}"; do
  wait "${pids[$i]}" || { echo "${names[$i]}: exit $?" | tee -a "$OUT/summary.txt"; status=1; }
done
wait $CHECK || true
cat "$OUT/adamw-check.txt" >> "$OUT/summary.txt"
for name in "${names[@]}"; do
  cp "runs/ppo-check-$name/metrics.jsonl" "$OUT/metrics-$name.jsonl" 2>/dev/null || true
  # The whole log: a run that fails says why before its last lines.
  cp "runs-$name.log" "$OUT/log-$name.txt" 2>/dev/null || true
  { echo "== $name"; grep -E '"kind":"eval"' "runs/ppo-check-$name/metrics.jsonl" 2>/dev/null \
      | python3 -c 'import json,sys
for l in sys.stdin:
    r = json.loads(l); print("step", r["step"], "accuracy", r["score"]["accuracy"], "reward", round(r["score"]["reward_mean"], 4))' || true
    tail -n 8 "runs-$name.log"; } >> "$OUT/summary.txt"
done
cat "$OUT/summary.txt"
exit $status
