#!/usr/bin/env bash
# The GPU run of issue 7 and the rollout benchmark, in one call on the lent GPU machine:
#   0. with COMPARE=before (or after: after the run; default: no), `trainer
#      compare-backends` on $FIXTURES (fixture names, or model configs with random
#      weights): op-by-op gaps at a rollout batch's shapes, the first layer stage by stage,
#      logits and batched greedy generation, CPU against CUDA with and without burn's fusion;
#   1. `trainer ppo --config $CONFIG` (default configs/ppo-gpu.toml, run folder $RUN; with
#      PPO_KEYS, e.g. 'reference_dtype = "bf16"; optimizer_state = "host"', a copy of it
#      with those [ppo] keys set, scripts/gpu/ppo_keys.sh) under
#      a time limit of $MINUTES (priming on solver traces, then PPO; held-out evaluations
#      every 5 steps and at the end);
#      (each evaluation also generates its first 4 rows alone: `rows_differing` in the
#      metrics says whether the backend mixed rows up);
#   1b. with CHECK_ACTOR=1, the trained actor (newest checkpoint of $RUN, shape
#      $MODEL_CONFIG), CPU against CUDA with `compare-backends --record` (about 4 minutes);
#   2. rollout generation speed, ours (`trainer bench-generate`, matmuls in each of
#      $BENCH_COMPUTE, default "f32 bf16") and transformers' `generate` (f32 and bf16) on
#      the same model shape, batch and lengths (skipped with BENCH=0).
#   run (device tool) with carry [".device/trainer.xz", ".device/cache", ".device/cubecl-cache.tar.xz"]
#   (the kernel cache only if there is one, see scripts/gpu/cubecl_cache.sh), where
#   .device/trainer.xz is the packed CUDA build (scripts/gpu/trainer_binary.sh) and .device/cache a habits cache
#   holding the Llama-3 tokenizer (tokenizers/llama3/tokenizer.json, from scripts/prepare_llm.sh).
# Writes metrics, samples, logs and JSON lines to ${OUT:-/tmp/ppo-out}.
set -euo pipefail
OUT=${OUT:-/tmp/ppo-out}
source "$(dirname "$0")/trainer_binary.sh"
source "$(dirname "$0")/ppo_keys.sh"
MINUTES=${MINUTES:-7}
CONFIG=${CONFIG:-configs/ppo-gpu.toml}
RUN=${RUN:-runs/ppo-gpu}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-150}
FIXTURES=${FIXTURES:-llama}
mkdir -p "$OUT"
# Compiled kernels and autotune results travel between machines (scripts/gpu/cubecl_cache.sh).
source "$(dirname "$0")/cubecl_cache.sh"
trap save_cubecl_cache EXIT
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"

compare() {
  echo "== CUDA vs CPU (with and without burn's fusion) on: $FIXTURES"
  for m in $FIXTURES; do
    # A fixture folder's weights, or a model shape (config.json) with random weights.
    case "$m" in *.json) what=(--config "$m") ;; *) what=(--model "trainer/tests/fixtures/$m") ;; esac
    name=$(basename "$m" .json)
    timeout "${COMPARE_TIMEOUT:-300}" "$BIN" compare-backends "${what[@]}" > "$OUT/compare-$name.txt" 2>&1 || echo "compare-backends $m: exit $?" >> "$OUT/compare-$name.txt"
    cat "$OUT/compare-$name.txt"
  done
}
# The run uses the trainer's default for PPO (no fusion: with it, a trained actor mixed
# rows up in batched generation; docs/PERF.md); HABITS_CUDA_FUSION=1 overrides.
[ "${COMPARE:-no}" = before ] && compare

if [ -n "${PPO_KEYS:-}" ]; then
  # The copy lives in configs/ so that its paths resolve from the project root.
  cp "$CONFIG" configs/ppo-run-keys.toml && CONFIG=configs/ppo-run-keys.toml && set_ppo_keys "$CONFIG"
  cp "$CONFIG" "$OUT/"
fi
echo "== ppo (time limit $MINUTES min)"
export HABITS_CACHE=${HABITS_CACHE:-$PWD/.device/cache}
tok="$HABITS_CACHE/tokenizers/llama3/tokenizer.json"
[ -f "$tok" ] || gunzip -k "$tok.gz"
( while true; do nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv,noheader,nounits; sleep 2; done ) > "$OUT/gpu-use.txt" &
SAMPLER=$!
status=0
timeout $((${MINUTES%.*} * 60 + 150)) "$BIN" ppo --config "$CONFIG" --time-limit-minutes "$MINUTES" > "$OUT/ppo.log" 2>&1 || status=$?
kill $SAMPLER || true
tail -n 30 "$OUT/ppo.log"
cp "$RUN/metrics.jsonl" "$RUN/eval_samples.jsonl" "$OUT/" 2>/dev/null || true
# The rollouts kept for behavior tracking ([track]), for `pipeline classify` back home.
[ -d "$RUN/rollouts" ] && cp -r "$RUN/rollouts" "$OUT/" || true
echo "ppo exit status $status"

[ "${COMPARE:-no}" = after ] && compare
# The trained actor itself, CPU against CUDA (its newest checkpoint, if the run saved one).
last=$(ls -d "$RUN"/checkpoints/step-* 2>/dev/null | tail -n 1 || true)
if [ -n "$last" ] && [ "${CHECK_ACTOR:-0}" = 1 ]; then
  timeout "${COMPARE_TIMEOUT:-300}" "$BIN" compare-backends --config "${MODEL_CONFIG:-configs/models/countdown-90m.json}" \
    --record "$last/actor.mpk" > "$OUT/compare-actor.txt" 2>&1 || echo "compare-backends (trained actor): exit $?" >> "$OUT/compare-actor.txt"
  cat "$OUT/compare-actor.txt"
fi
[ "${BENCH:-1}" = 0 ] && exit $status
echo "== rollout generation: ours vs transformers generate"
SHAPE="--batch 256 --prompt-tokens 96 --new-tokens 128"
for c in ${BENCH_COMPUTE:-f32 bf16}; do
  timeout "$BENCH_TIMEOUT" "$BIN" bench-generate --model configs/models/countdown-90m.json $SHAPE --compute-dtype "$c" | tee -a "$OUT/bench-generate.jsonl" || echo "ours ($c): failed or timed out"
done
timeout "$BENCH_TIMEOUT" python3 scripts/gpu/bench_torch_generate.py --config configs/models/countdown-90m.json $SHAPE | tee -a "$OUT/bench-generate.jsonl" || echo "torch: failed or timed out"
exit $status
