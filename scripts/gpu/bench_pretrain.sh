#!/usr/bin/env bash
# The pretraining benchmark on the GPU machine: our trainer (CUDA, f32) and PyTorch
# (transformers LlamaForCausalLM, eager) on a random-init Llama-3.2-1B-shaped model, the
# same batch and sequence length, in one call. Also checks CUDA against the CPU backend
# on the committed fixtures, and a short CUDA training run on the tiny fixture.
#   run (device tool) with carry [".device"], where .device/trainer is
#   `cargo build --release -p trainer --features cuda` (stripped).
# Writes JSON lines and logs to ${OUT:-/tmp/bench-out}.
set -euo pipefail
OUT=${OUT:-/tmp/bench-out}
BIN=${TRAINER_BIN:-.device/trainer}
BATCH=${BATCH:-2}
SEQ=${SEQ:-2048}
STEPS=${STEPS:-12}
MODEL=${MODEL:-configs/models/llama-3.2-1b-shape.json}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"

echo "== CUDA vs CPU logits"
for m in llama qwen2; do "$BIN" compare-backends --model "trainer/tests/fixtures/$m" | tee -a "$OUT/compare.txt"; done

echo "== ours"
WORK=$(mktemp -d)
python3 scripts/gpu/make_synthetic_set.py "$WORK/set" --sequences 400 --length "$SEQ"
cat > "$WORK/bench.toml" <<TOML
[model]
config = "$PWD/$MODEL"
[data]
set = "$WORK/set"
objective = "lm"
seq_len = $SEQ
[train]
backend = "cuda"
batch_size = $BATCH
max_steps = $((STEPS + 1000))
peak_tflops = 989.0
[output]
dir = "$WORK/out"
TOML
# GPU memory in use, sampled while our run lasts (the peak goes into the results).
( while true; do nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits; sleep 0.5; done ) > "$OUT/ours-gpu-mem.txt" &
SAMPLER=$!
"$BIN" pretrain --config "$WORK/bench.toml" --stop-after "$STEPS" > "$OUT/ours.log" 2>&1 || { kill $SAMPLER; tail -40 "$OUT/ours.log"; exit 1; }
kill $SAMPLER
echo "ours: peak GPU memory in use $(sort -n "$OUT/ours-gpu-mem.txt" | tail -1) MiB" | tee -a "$OUT/compare.txt"
tail -5 "$OUT/ours.log"
cp "$WORK/out/metrics.jsonl" "$OUT/ours-metrics.jsonl"
python3 - "$WORK/out/metrics.jsonl" "$BATCH" "$SEQ" <<'PY' | tee -a "$OUT/results.jsonl"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"train"' in l]
m = rows[3:] or rows
tps = len(m) / sum(1 / r["tokens_per_s"] for r in m)
print(json.dumps({"side": "ours", "precision": "f32", "batch": int(sys.argv[2]), "seq": int(sys.argv[3]), "tokens_per_s": tps,
                  "mfu": sum(r["mfu"] for r in m) / len(m), "first_step_s": rows[0]["step_s"], "loss": rows[-1]["loss"]}))
PY

echo "== pytorch"
python3 scripts/gpu/bench_torch_pretrain.py --config "$MODEL" --batch "$BATCH" --seq "$SEQ" --steps "$STEPS" | tee -a "$OUT/results.jsonl"
