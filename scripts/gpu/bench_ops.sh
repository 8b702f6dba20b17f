#!/usr/bin/env bash
# Where a pretraining step's time goes, ours against PyTorch, in one call on the lent GPU
# machine: `trainer bench-ops` (each piece of a step timed alone: projections, attention,
# a decoder layer, LM head + loss, model, step) with matmuls in each of $COMPUTE (default
# "bf16 f32"), then (unless TORCH=0) scripts/gpu/bench_torch_ops.py (eager transformers,
# f32 and bf16 autocast) on the same shapes; then the side-by-side table
# (scripts/ops_table.py); then,
# with PROFILE=1 (default), ours once more at bf16 under cubecl's kernel profiler (a
# cubecl.toml in a scratch folder: one table of kernels, counts and durations per device
# sync, i.e. per piece, in kernels-bf16.log; profiling serialises kernels, so only its
# shares count, not its times).
#   run (device tool) with carry [".device/trainer.xz", ".device/cubecl-cache.tar.xz"] (the
#   cache only if there is one), where .device/trainer.xz is the packed CUDA build
#   (scripts/gpu/trainer_binary.sh).
# Writes ops.jsonl, logs and ops-table.md to ${OUT:-/tmp/ops-out}. On a fresh machine each
# precision of ours first compiles and autotunes its kernels: at bf16 on the 1B shape that
# took over 400 s even with CUBECL_AUTOTUNE_LEVEL=minimal (323 kernels compiled, 29
# candidates timed per matmul shape). scripts/gpu/cubecl_cache.sh keeps both caches in
# .device/cubecl and packs them into $OUT/cubecl-cache.tar.xz; carried back as
# .device/cubecl-cache.tar.xz, the next machine starts where this one stopped. Each piece's
# line is printed as soon as it is timed, so a run cut short still reports what it finished.
set -uo pipefail
OUT=${OUT:-/tmp/ops-out}
source "$(dirname "$0")/trainer_binary.sh"
MODEL=${MODEL:-configs/models/llama-3.2-1b-shape.json}
SHAPE="--batch ${BATCH:-1} --seq ${SEQ:-2048} --repeats ${REPEATS:-5}"
mkdir -p "$OUT"
source "$(dirname "$0")/cubecl_cache.sh"
trap save_cubecl_cache EXIT
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
for c in ${COMPUTE:-bf16 f32}; do
  echo "== ours, matmuls in $c"
  timeout "${OURS_TIMEOUT:-300}" "$BIN" bench-ops --model "$MODEL" $SHAPE --compute-dtype "$c" 2> "$OUT/ours-$c.log" | tee -a "$OUT/ops.jsonl" \
    || { echo "ours ($c): exit $?"; tail -20 "$OUT/ours-$c.log"; }
done
if [ "${TORCH:-1}" = 1 ]; then
  echo "== pytorch"
  timeout "${TORCH_TIMEOUT:-240}" python3 scripts/gpu/bench_torch_ops.py --config "$MODEL" $SHAPE 2> "$OUT/torch.log" | tee -a "$OUT/ops.jsonl" \
    || { echo "pytorch: exit $?"; tail -20 "$OUT/torch.log"; }
fi
python3 scripts/ops_table.py "$OUT/ops.jsonl" | tee "$OUT/ops-table.md"
if [ "${PROFILE:-1}" = 1 ]; then
  echo "== ours under cubecl's kernel profiler (bf16)"
  SCRATCH=$(mktemp -d)
  { printf '[profiling.logger]\nlevel = "basic"\nfile = "%s"\nappend = false\n\n' "$OUT/kernels-bf16.log"; cubecl_cache_toml; } > "$SCRATCH/cubecl.toml"
  BIN_ABS=$(realpath "$BIN") MODEL_ABS=$(realpath "$MODEL")
  ( cd "$SCRATCH" && timeout "${PROFILE_TIMEOUT:-200}" "$BIN_ABS" bench-ops --model "$MODEL_ABS" --batch "${BATCH:-1}" --seq "${SEQ:-2048}" \
      --repeats 1 --compute-dtype bf16 > "$OUT/ops-profiled.jsonl" 2> "$OUT/ours-profiled.log" ) || echo "profiled run: exit $?"
  ls -la "$OUT/kernels-bf16.log" 2>/dev/null && grep -c . "$OUT/kernels-bf16.log"
fi
