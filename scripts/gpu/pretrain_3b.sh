#!/usr/bin/env bash
# configs/pretrain.toml as shipped, on the GPU machine: the model folder it names
# (models/Llama-3.2-3B) is a Hugging Face folder of the 3B shape (MODEL_DIR, default: a
# seeded random Llama-3.2-3B that transformers saves in bf16 shards), the set it names
# (runs/paper/sets/rich) a synthetic one of ROWS rows of 2048 tokens (16 of prompt), then
#   trainer pretrain --config configs/pretrain.toml --fresh --stop-after STEPS
# with the GPU's memory in use sampled every half second. Writes the log, the metrics
# and the memory peak to $OUT.
#   run (device tool) with carry [".device/trainer.xz"] (and .device/cubecl-cache.tar.xz
#   if there is one)
set -euo pipefail
OUT=${OUT:-/tmp/pretrain-3b}
source "$(dirname "$0")/trainer_binary.sh"
mkdir -p "$OUT" models runs/paper/sets
# Compiled kernels and autotune results travel between machines (scripts/gpu/cubecl_cache.sh).
source "$(dirname "$0")/cubecl_cache.sh"
trap save_cubecl_cache EXIT
if [ -z "${MODEL_DIR:-}" ]; then
  MODEL_DIR=$(mktemp -d)/hf
  python3 - "$MODEL_DIR" <<'PY'
import json, sys
import torch
from transformers import AutoModelForCausalLM, LlamaConfig
shape = json.load(open("configs/models/llama-3.2-3b-shape.json"))
torch.manual_seed(0)
AutoModelForCausalLM.from_config(LlamaConfig.from_dict(shape), torch_dtype=torch.bfloat16).save_pretrained(sys.argv[1], max_shard_size="5GB")
PY
fi
ln -sfn "$(realpath "$MODEL_DIR")" models/Llama-3.2-3B
rm -rf runs/paper/sets/rich
python3 scripts/gpu/make_synthetic_set.py runs/paper/sets/rich --sequences "${ROWS:-640}" --length 2048
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
( while true; do nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits; sleep 0.5; done ) > "$OUT/gpu-mem.txt" &
SAMPLER=$!
status=0
timeout "${PRETRAIN_TIMEOUT:-420}" "$BIN" pretrain --config configs/pretrain.toml --fresh --stop-after "${STEPS:-3}" > "$OUT/pretrain.log" 2>&1 || status=$?
kill $SAMPLER
echo "exit $status; peak GPU memory in use $(sort -n "$OUT/gpu-mem.txt" | tail -1) MiB" | tee "$OUT/summary.txt"
grep -E "memory plan|pretrain:|warning|error" "$OUT/pretrain.log" | tee -a "$OUT/summary.txt" || true
cp runs/pretrain-llama-3.2-3b-rich/metrics.jsonl "$OUT/" 2>/dev/null || true
tail -5 "$OUT/pretrain.log"
exit $status
