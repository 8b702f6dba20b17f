#!/usr/bin/env bash
# `trainer compare-backends` of several builds on one GPU machine, in one call, with every
# gap lined up build beside build: a change that should not change what the kernels compute
# (a restructuring, a refactor) shows here as equal gaps. For each build in $BUILDS (build
# NAME is the packed binary .device/trainer-NAME.xz) and each fixture in $FIXTURES
# (default "llama qwen2", under trainer/tests/fixtures/), the full log goes to
# $OUT/compare-NAME-FIXTURE.txt; $OUT/gaps.txt has one line per check and the gap of each
# build, and says which differ.
#   run (device tool) with carry [".device/trainer-base.xz", ".device/trainer-new.xz"] and
#   BUILDS="base new" bash scripts/gpu/compare_checks.sh
set -uo pipefail
OUT=${OUT:-/tmp/compare-checks}
BUILDS=${BUILDS:-base new}
FIXTURES=${FIXTURES:-llama qwen2}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt"
for build in $BUILDS; do
  export TRAINER_BIN=.device/trainer-$build
  # shellcheck source=scripts/gpu/trainer_binary.sh
  source "$(dirname "$0")/trainer_binary.sh"
  for fixture in $FIXTURES; do
    echo "== $build: compare-backends on $fixture" >&2
    "$BIN" compare-backends --model "trainer/tests/fixtures/$fixture" > "$OUT/compare-$build-$fixture.txt" 2>&1
    echo "exit $?" >> "$OUT/compare-$build-$fixture.txt"
  done
done
python3 - "$OUT" $BUILDS <<'PY' | tee "$OUT/gaps.txt"
import re, sys
out, builds = sys.argv[1], sys.argv[2:]
gap = re.compile(r"^(?P<what>.*?)\s+CPU vs CUDA relative gap (?P<gap>\S+)")
tables = {}
for b in builds:
    import glob
    for path in sorted(glob.glob(f"{out}/compare-{b}-*.txt")):
        fixture = path.rsplit("-", 1)[1][:-4]
        seen = {}
        for line in open(path, errors="replace"):
            m = gap.match(line.strip())
            if m:
                what = f"{fixture}: {m['what'].strip()}"
                seen[what] = seen.get(what, 0) + 1
                key = what if seen[what] == 1 else f"{what} #{seen[what]}"
                tables.setdefault(key, {})[b] = m["gap"]
differ = 0
for key, gaps in tables.items():
    values = [gaps.get(b, "-") for b in builds]
    same = len(set(values)) == 1
    differ += not same
    print(f"{'same ' if same else 'DIFF '} {key[:90]:<90} " + "  ".join(f"{b}={v}" for b, v in zip(builds, values)))
print(f"{len(tables)} gaps, {differ} differ between builds")
PY
