#!/usr/bin/env bash
# Two (or more) builds of the trainer side by side on one GPU machine, in one call, so that
# a change is measured against what it replaced on the same card (machines differ: the
# same build's pretraining moved 16,223 -> 16,256 tokens/s and PyTorch's 16,463 -> 21,754
# between two fresh machines). For each build in $BUILDS (names; build NAME is the packed
# binary .device/trainer-NAME.xz): `bench_pretrain.sh` (ours only, HOST_PROFILE as given)
# and, with OPS=1, `bench_ops.sh` (ours only); then PyTorch once; then compare-backends of the
# last build on the llama fixture unless COMPARE=0. GPU_PROFILE=1 records every kernel of
# each side's steady-state steps (ours: --gpu-profile; PyTorch: torch.profiler), summarised
# with scripts/gpu_profile.py into the summary. Everything lands in $OUT/<build>/...,
# packed into $OUT/results.tar.xz with a summary in $OUT/summary.txt (the device returns a
# few files per call).
#   run (device tool) with carry [".device/trainer-base.xz", ".device/trainer-new.xz"] and
#   BUILDS="base new" (the cubecl cache .device/cubecl-cache.tar.xz too, if there is one).
# An entry may set environment variables for its runs: "new+HABITS_ATTENTION_CHUNK=256"
# runs build new with that variable (results under $OUT/new+HABITS_ATTENTION_CHUNK=256).
set -uo pipefail
OUT=${OUT:-/tmp/compare-builds}
BUILDS=${BUILDS:-base new}
export BATCH=${BATCH:-1} STEPS=${STEPS:-30} COMPUTE=${COMPUTE:-bf16}
mkdir -p "$OUT"
summary="$OUT/summary.txt"
: > "$summary"
for build in $BUILDS; do
  name=${build%%+*}
  export TRAINER_BIN=.device/trainer-$name
  # Each "+VAR=VALUE" after the build's name, exported for this entry only.
  settings=()
  [ "$name" != "$build" ] && IFS=+ read -r -a settings <<< "${build#*+}"
  for s in ${settings[@]+"${settings[@]}"}; do export "${s?}"; done
  echo "== $build: pretraining" | tee -a "$summary"
  OUT="$OUT/$build" TORCH=0 COMPARE=0 bash scripts/gpu/bench_pretrain.sh 2>&1 | tail -40 >> "$summary"
  grep -h '"side": "ours"' "$OUT/$build/results.jsonl" 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    r = json.loads(line); r.pop("losses", None); print(json.dumps(r))' >> "$summary"
  [ -f "$OUT/$build/host-$COMPUTE.txt" ] && head -60 "$OUT/$build/host-$COMPUTE.txt" >> "$summary"
  [ -f "$OUT/$build/gpu-$COMPUTE.txt" ] && cat "$OUT/$build/gpu-$COMPUTE.txt" >> "$summary"
  if [ "${OPS:-0}" = 1 ]; then
    echo "== $build: bench-ops" | tee -a "$summary"
    OUT="$OUT/$build/ops" TORCH=0 PROFILE=0 REPEATS=${REPEATS:-5} bash scripts/gpu/bench_ops.sh > "$OUT/$build/ops.log" 2>&1
    python3 - "$OUT/$build/ops/ops.jsonl" >> "$summary" 2>&1 <<'PY'
import json, sys
for line in open(sys.argv[1]):
    if not line.startswith("{"):
        continue
    r = json.loads(line)
    if "piece" in r:
        print("%-28s %-24s %9.3f ms  host %9.3f ms" % (r["piece"], r["pass"], r["ms"], r.get("host_ms", 0.0)))
    else:
        print(json.dumps(r))
PY
  fi
  for s in ${settings[@]+"${settings[@]}"}; do unset "${s%%=*}"; done
done
if [ "${TORCH:-1}" = 1 ]; then
  echo "== pytorch" | tee -a "$summary"
  torch_profile=()
  [ "${GPU_PROFILE:-0}" = 1 ] && torch_profile=(--gpu-profile "$OUT/torch-gpu.jsonl")
  python3 scripts/gpu/bench_torch_pretrain.py --config "${MODEL:-configs/models/llama-3.2-1b-shape.json}" --batch "$BATCH" --seq "${SEQ:-2048}" --steps "$STEPS" --precision amp-bf16 "${torch_profile[@]}" 2> "$OUT/torch.log" | tee -a "$summary"
  if [ -f "$OUT/torch-gpu.jsonl" ]; then
    { python3 scripts/gpu_profile.py "$OUT/torch-gpu.jsonl" --families --top 15; python3 scripts/gpu_profile.py "$OUT/torch-gpu.jsonl" --top 40; } >> "$summary"
  fi
fi
if [ "${COMPARE:-1}" = 1 ]; then
  last=${BUILDS##* }
  last=${last%%+*}
  echo "== $last: compare-backends (llama fixture)" | tee -a "$summary"
  TRAINER_BIN=.device/trainer-$last
  source scripts/gpu/trainer_binary.sh
  timeout "${COMPARE_TIMEOUT:-240}" "$BIN" compare-backends --model trainer/tests/fixtures/llama >> "$summary" 2>&1 || echo "compare exit $?" >> "$summary"
fi
for build in $BUILDS; do [ -f "$OUT/$build/cubecl-cache.tar.xz" ] && mv "$OUT/$build/cubecl-cache.tar.xz" "$OUT/cubecl-cache.tar.xz"; rm -f "$OUT/$build/ops/cubecl-cache.tar.xz" "$OUT/$build/cubecl-cache.tar.xz"; done
tar -cf - -C "$OUT" --exclude=results.tar.xz --exclude=summary.txt --exclude=cubecl-cache.tar.xz . | xz -T0 > "$OUT/results.tar.xz"
cat "$summary"
