#!/usr/bin/env bash
# The pretraining benchmark on the GPU machine: our trainer (CUDA, matmuls in each of
# $COMPUTE, default "bf16 f32", parameters f32) and PyTorch
# (transformers LlamaForCausalLM, eager, or compiled with TORCH_ARGS=--compile) on a
# random-init Llama-3.2-1B-shaped model (MODEL=... for another shape), the
# same batch and sequence length, in one call (TORCH=0 leaves PyTorch out, COMPARE=0 the
# check of CUDA against the CPU backend on the committed fixtures; HABITS_CUDA_FUSION=0
# or 1 picks burn's fusion for ours; HOST_PROFILE=1 profiles our host over the steps after
# the third, written to $OUT/host-<compute>.folded and summarised in host-<compute>.txt:
# needs a build with --features cuda,host-profile; GPU_PROFILE=1 records every kernel over
# the same steps, written to $OUT/gpu-<compute>.jsonl and summarised in gpu-<compute>.txt;
# GRAD_ACCUM sets train.grad_accum, RECOMPUTE train.recompute: none, layers or a number).
#   run (device tool) with carry [".device/trainer.xz", ".device/cubecl-cache.tar.xz"] (the
#   cache only if there is one), where .device/trainer.xz is the packed CUDA build
#   (scripts/gpu/trainer_binary.sh).
# Writes JSON lines and logs to ${OUT:-/tmp/bench-out}.
set -euo pipefail
OUT=${OUT:-/tmp/bench-out}
source "$(dirname "$0")/trainer_binary.sh"
BATCH=${BATCH:-2}
SEQ=${SEQ:-2048}
STEPS=${STEPS:-12}
# One window per optimizer step unless asked (train.grad_accum's default of 8 keeps a
# second f32 copy of the gradients, 12.8 GB at the 3B shape, unless layers recompute).
MODEL=${MODEL:-configs/models/llama-3.2-1b-shape.json}
mkdir -p "$OUT"
# Compiled kernels and autotune results travel between machines (scripts/gpu/cubecl_cache.sh).
source "$(dirname "$0")/cubecl_cache.sh"
trap save_cubecl_cache EXIT
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"

if [ "${COMPARE:-1}" = 1 ]; then
  echo "== CUDA vs CPU logits"
  for m in llama qwen2; do "$BIN" compare-backends --model "trainer/tests/fixtures/$m" | tee -a "$OUT/compare.txt"; done
fi

# RECOMPUTE: none (default), layers, or a number of layers (train.recompute).
case "${RECOMPUTE:-none}" in
  [0-9]*) RECOMPUTE_TOML=$RECOMPUTE ;;
  *) RECOMPUTE_TOML="\"${RECOMPUTE:-none}\"" ;;
esac
WORK=$(mktemp -d)
python3 scripts/gpu/make_synthetic_set.py "$WORK/set" --sequences 400 --length "$SEQ"
for compute in ${COMPUTE:-bf16 f32}; do
echo "== ours, matmuls in $compute"
cat > "$WORK/bench-$compute.toml" <<TOML
[model]
config = "$PWD/$MODEL"
[data]
set = "$WORK/set"
objective = "lm"
seq_len = $SEQ
[train]
backend = "cuda"
compute_dtype = "$compute"
batch_size = $BATCH
grad_accum = ${GRAD_ACCUM:-1}
recompute = $RECOMPUTE_TOML
max_steps = $((STEPS + 1000))
peak_tflops = ${PEAK_TFLOPS:-989.0}
[output]
dir = "$WORK/out-$compute"
TOML
# GPU memory in use, sampled while our run lasts (the peak goes into the results).
( while true; do nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits; sleep 0.5; done ) > "$OUT/ours-$compute-gpu-mem.txt" &
SAMPLER=$!
status=0
profile=()
[ "${HOST_PROFILE:-0}" = 1 ] && profile+=(--host-profile "$OUT/host-$compute.folded")
[ "${GPU_PROFILE:-0}" = 1 ] && profile+=(--gpu-profile "$OUT/gpu-$compute.jsonl")
timeout "${OURS_TIMEOUT:-420}" "$BIN" pretrain --config "$WORK/bench-$compute.toml" --stop-after "$STEPS" "${profile[@]}" > "$OUT/ours-$compute.log" 2>&1 || status=$?
if [ -f "$OUT/gpu-$compute.jsonl" ]; then
  { python3 scripts/gpu_profile.py "$OUT/gpu-$compute.jsonl" --families --top 15; python3 scripts/gpu_profile.py "$OUT/gpu-$compute.jsonl" --top 40; } > "$OUT/gpu-$compute.txt"
  head -60 "$OUT/gpu-$compute.txt"
fi
if [ -f "$OUT/host-$compute.folded" ]; then python3 scripts/host_profile.py "$OUT/host-$compute.folded" > "$OUT/host-$compute.txt"; head -30 "$OUT/host-$compute.txt"; fi
kill $SAMPLER
if [ $status != 0 ]; then echo "ours ($compute): exit $status"; tail -40 "$OUT/ours-$compute.log"; continue; fi
echo "ours ($compute): peak GPU memory in use $(sort -n "$OUT/ours-$compute-gpu-mem.txt" | tail -1) MiB" | tee -a "$OUT/compare.txt"
tail -5 "$OUT/ours-$compute.log"
cp "$WORK/out-$compute/metrics.jsonl" "$OUT/ours-$compute-metrics.jsonl"
python3 - "$WORK/out-$compute/metrics.jsonl" "$BATCH" "$SEQ" "$compute" <<'PY' | tee -a "$OUT/results.jsonl"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"train"' in l]
m = rows[3:] or rows
tps = len(m) / sum(1 / r["tokens_per_s"] for r in m)
print(json.dumps({"side": "ours", "precision": sys.argv[4], "batch": int(sys.argv[2]), "seq": int(sys.argv[3]), "tokens_per_s": tps,
                  "mfu": sum(r["mfu"] for r in m) / len(m), "first_step_s": rows[0]["step_s"], "losses": [r["loss"] for r in rows]}))
PY
done

if [ "${TORCH:-1}" = 1 ]; then
  echo "== pytorch"
  # TORCH_ARGS: e.g. "--compile --precision amp-bf16" (torch.compile with the fused AdamW).
  # shellcheck disable=SC2086
  python3 scripts/gpu/bench_torch_pretrain.py --config "$MODEL" --batch "$BATCH" --seq "$SEQ" --steps "$STEPS" ${TORCH_ARGS:-} | tee -a "$OUT/results.jsonl"
fi
