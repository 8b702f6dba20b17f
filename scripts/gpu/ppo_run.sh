#!/usr/bin/env bash
# The GPU run of issue 7 and the rollout benchmark, in one call on the lent GPU machine:
#   0. `trainer compare-backends` on the fixtures: logits and batched greedy generation
#      (6, 64 and 256 rows) agree between the CPU and CUDA;
#   1. `trainer ppo --config $CONFIG` (default configs/ppo-gpu.toml, run folder $RUN) under
#      a time limit of $MINUTES (priming on solver traces, then PPO; held-out evaluations
#      every 10 steps and at the end);
#   2. rollout generation speed, ours (`trainer bench-generate`) and transformers'
#      `generate` on the same model shape, batch and lengths.
#   run (device tool) with carry [".device"], where .device/trainer is
#   `cargo build --release -p trainer --features cuda` and .device/cache a habits cache
#   holding the Llama-3 tokenizer (tokenizers/llama3/tokenizer.json, from scripts/prepare_llm.sh).
# Writes metrics, samples, logs and JSON lines to ${OUT:-/tmp/ppo-out}.
set -euo pipefail
OUT=${OUT:-/tmp/ppo-out}
BIN=${TRAINER_BIN:-.device/trainer}
MINUTES=${MINUTES:-7}
CONFIG=${CONFIG:-configs/ppo-gpu.toml}
RUN=${RUN:-runs/ppo-gpu}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-150}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"

echo "== CUDA vs CPU: logits and batched greedy generation on the fixtures"
for m in llama qwen2; do timeout 120 "$BIN" compare-backends --model "trainer/tests/fixtures/$m" | tee -a "$OUT/compare.txt" || echo "compare-backends $m: FAILED"; done

echo "== ppo (time limit $MINUTES min)"
export HABITS_CACHE=${HABITS_CACHE:-$PWD/.device/cache}
tok="$HABITS_CACHE/tokenizers/llama3/tokenizer.json"
[ -f "$tok" ] || gunzip -k "$tok.gz"
( while true; do nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv,noheader,nounits; sleep 2; done ) > "$OUT/gpu-use.txt" &
SAMPLER=$!
status=0
timeout $((${MINUTES%.*} * 60 + 240)) "$BIN" ppo --config "$CONFIG" --time-limit-minutes "$MINUTES" > "$OUT/ppo.log" 2>&1 || status=$?
kill $SAMPLER || true
tail -n 30 "$OUT/ppo.log"
cp "$RUN/metrics.jsonl" "$RUN/eval_samples.jsonl" "$OUT/" 2>/dev/null || true
echo "ppo exit status $status"

echo "== rollout generation: ours vs transformers generate"
SHAPE="--batch 256 --prompt-tokens 96 --new-tokens 128"
timeout "$BENCH_TIMEOUT" "$BIN" bench-generate --model configs/models/countdown-90m.json $SHAPE | tee "$OUT/bench-generate.jsonl" || echo "ours: failed or timed out"
timeout "$BENCH_TIMEOUT" python3 scripts/gpu/bench_torch_generate.py --config configs/models/countdown-90m.json $SHAPE | tee -a "$OUT/bench-generate.jsonl" || echo "torch: failed or timed out"
exit $status
