#!/usr/bin/env bash
# Sourced by the GPU scripts: sets BIN, the trainer to run ($TRAINER_BIN, default
# .device/trainer). A stripped CUDA build (`cargo build --release -p trainer --features
# cuda`) is about 78 MB, past the 64 MiB the device tool carries, so it travels packed:
#   xz -T0 -c target/release/trainer > .device/trainer.xz    (about 12 MB)
# and is unpacked here when the binary itself is not there.
BIN=${TRAINER_BIN:-.device/trainer}
if [ ! -x "$BIN" ] && [ -f "$BIN.xz" ]; then
  xz -dc "$BIN.xz" > "$BIN" && chmod +x "$BIN"
fi
if [ ! -x "$BIN" ]; then
  echo "no trainer at $BIN (nor $BIN.xz): build it with cargo build --release -p trainer --features cuda, strip it and pack it (scripts/gpu/trainer_binary.sh)" >&2
  exit 1
fi
# The projections' matmul runs on cuBLAS (trainer/src/ops/matmul/cublas.rs) on the
# stream found through CUPTI (model/cuda_stream.rs), both opened at run time: PyTorch's
# CUDA wheels ship libcublas and libcupti under site-packages/nvidia/*/lib.
if [ -z "${CUDA_LIBS:-}" ]; then
  CUDA_LIBS=$(python3 - <<'PY' 2>/dev/null || true
import glob, os, site
dirs = []
for base in site.getsitepackages():
    for lib in ("libcublas.so*", "libcupti.so*"):
        for found in sorted(glob.glob(os.path.join(base, "nvidia", "**", lib), recursive=True))[:1]:
            if os.path.dirname(found) not in dirs:
                dirs.append(os.path.dirname(found))
print(":".join(dirs))
PY
)
fi
if [ -n "${CUDA_LIBS:-}" ]; then
  export LD_LIBRARY_PATH="$CUDA_LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  echo "libcublas and libcupti from $CUDA_LIBS" >&2
fi
