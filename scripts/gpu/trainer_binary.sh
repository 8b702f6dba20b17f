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
