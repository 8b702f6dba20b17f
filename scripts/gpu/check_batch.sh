#!/usr/bin/env bash
# Do rows of a CUDA batch compute their own rows? One call on the lent GPU machine:
#   1. `trainer check-batch` on the 90M shape with random weights, CUDA with and without
#      burn's fusion: 256 left-padded prompts at once against their first 6 alone, logits
#      compared step by step (prefill, then each decoding step);
#   2. a short priming run ($PRIME_STEPS steps of configs/ppo-gpu.toml, stopped before the
#      first PPO step: its held-out evaluation checks 4 rows alone) and `check-batch` on
#      the primed actor (its checkpoint at step 0).
#   run (device tool) with carry [".device/trainer.xz"] (see scripts/gpu/trainer_binary.sh).
# Writes logs to ${OUT:-/tmp/check-batch-out}.
set -uo pipefail
OUT=${OUT:-/tmp/check-batch-out}
source "$(dirname "$0")/trainer_binary.sh"
MODEL=configs/models/countdown-90m.json
mkdir -p "$OUT"
for fusion in 1 0; do
  echo "== random weights, HABITS_CUDA_FUSION=$fusion"
  HABITS_CUDA_FUSION=$fusion timeout 200 "$BIN" check-batch --config "$MODEL" 2>&1 | tee "$OUT/check-random-fusion$fusion.txt"
done
[ "${PRIME_STEPS:-60}" = 0 ] && exit 0
echo "== priming ${PRIME_STEPS:-60} steps, evaluation, no PPO step"
export HABITS_CACHE=${HABITS_CACHE:-$PWD/.device/cache}
tok="$HABITS_CACHE/tokenizers/llama3/tokenizer.json"
[ -f "$tok" ] || gunzip -k "$tok.gz"
sed -e "s/^steps = 200/steps = ${PRIME_STEPS:-60}/" -e 's#^dir = .*#dir = "runs/check-batch"#' configs/ppo-gpu.toml > configs/check-batch.toml
timeout 300 "$BIN" ppo --config configs/check-batch.toml --fresh --stop-after 0 > "$OUT/prime.log" 2>&1
echo "ppo exit $?"; tail -n 8 "$OUT/prime.log"
cp runs/check-batch/metrics.jsonl runs/check-batch/eval_samples.jsonl "$OUT/" 2>/dev/null
actor=$(ls -d runs/check-batch/checkpoints/step-* 2>/dev/null | tail -n 1)/actor.mpk
echo "== the primed actor ($actor)"
timeout 200 "$BIN" check-batch --config "$MODEL" --record "$actor" 2>&1 | tee "$OUT/check-primed.txt"
