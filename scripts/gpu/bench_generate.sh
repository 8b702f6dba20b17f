#!/usr/bin/env bash
# The rollout-generation benchmark on the GPU machine, side by side in one call:
# `trainer bench-generate` (CUDA, bf16 matmuls, random init, sampling at temperature 1,
# every row forced to $NEW tokens), then the plain PyTorch decoder and transformers'
# `generate` in bf16 (scripts/gpu/bench_torch_generate.py) on the same shapes.
#   MODELS   model shapes (default configs/models/llama-3.2-1b-shape.json)
#   BATCHES  batch sizes (default 256); PROMPT prompt tokens (256); NEW new tokens (256)
#   SIDES    the PyTorch sides (default plain,compiled,generate; none: ours alone)
#   REPEATS  timed calls a side (default 2)
#   GPU_PROFILE=1  ours also records every kernel of one more call (gpu-<shape>.jsonl:
#                  kernels and their time per decoding step)
#   run (device tool) with carry [".device/trainer.xz", ".device/cubecl-cache.tar.xz"] (the
#   cache only if there is one; scripts/gpu/trainer_binary.sh packs the build).
# Writes bench-generate.jsonl (one line per side and shape; ours with the peak GPU memory
# in use, sampled by nvidia-smi every 0.2 s) and the logs to ${OUT:-/tmp/bench-generate-out}.
set -uo pipefail
OUT=${OUT:-/tmp/bench-generate-out}
source "$(dirname "$0")/trainer_binary.sh"
source "$(dirname "$0")/cubecl_cache.sh"
trap save_cubecl_cache EXIT
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
for model in ${MODELS:-configs/models/llama-3.2-1b-shape.json}; do
  for batch in ${BATCHES:-256}; do
    shape="--batch $batch --prompt-tokens ${PROMPT:-256} --new-tokens ${NEW:-256} --repeats ${REPEATS:-2}"
    echo "== ours: $model $shape"
    ( while true; do nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits; sleep 0.2; done ) > "$OUT/mem.txt" &
    sampler=$!
    profile=()
    [ "${GPU_PROFILE:-0}" = 1 ] && profile=(--gpu-profile "$OUT/gpu-$(basename "$model" .json)-b$batch.jsonl")
    line=$("$BIN" bench-generate --model "$model" $shape --compute-dtype bf16 "${profile[@]}" 2> "$OUT/ours-stderr.txt")
    status=$?
    kill "$sampler"
    peak=$(sort -n "$OUT/mem.txt" | tail -1)
    if [ $status = 0 ]; then
      echo "$line" | python3 -c "import json,sys; d=json.loads(sys.stdin.read()); d.update(model='$model', peak_in_use_mib=int('${peak:-0}')); print(json.dumps(d))" | tee -a "$OUT/bench-generate.jsonl"
    else
      echo "ours failed ($status): $(tail -n 5 "$OUT/ours-stderr.txt")" | tee -a "$OUT/failures.txt"
    fi
    [ "${SIDES:-plain,compiled,generate}" = none ] && continue
    echo "== PyTorch: $model $shape"
    python3 scripts/gpu/bench_torch_generate.py --config "$model" $shape --dtypes bf16 --sides "${SIDES:-plain,compiled,generate}" \
      | python3 -c "import json,sys
for l in sys.stdin:
    d=json.loads(l); d['model']='$model'; print(json.dumps(d), flush=True)" | tee -a "$OUT/bench-generate.jsonl"
  done
done
