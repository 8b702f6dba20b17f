#!/usr/bin/env bash
# Sourced by the GPU scripts: keeps cubecl's autotune results and compiled kernels in one
# folder that travels with the checkout (.device/cubecl, carried with .device), so that a
# fresh GPU machine does not autotune and compile again (a 1B model's first bf16 step
# spent over 280 s autotuning its matmuls). It writes ./cubecl.toml (ignored by git; cubecl
# reads it from the working directory or a parent) pointing both caches there, and
# `save_cubecl_cache` packs the folder into $OUT/cubecl-cache.tar.xz to bring back; copied
# to .device/cubecl-cache.tar.xz it travels packed (the compiled kernels of one 1B bf16
# benchmark and a rollout benchmark are 122 MB, 4.3 MB packed with xz, 11 MB with gzip:
# the working tree and the carried paths together must stay under 64 MiB) and is
# unpacked here.
# CUBECL_AUTOTUNE_LEVEL (minimal, balanced, extensive, full) still picks the effort.
# cubecl keys a compiled kernel by its name and settings, not by its code: a kernel changed
# in a new build would load the old build's compiled code (seen: a rebuilt flash-attention
# kernel ran its predecessor). So compiled kernels are kept per binary ($BIN, set by
# trainer_binary.sh, sourced first): kernels-<first 16 hex digits of its sha256>; the
# autotune results (which kernel is fastest for a shape) are shared.
CUBECL_CACHE_DIR=$(realpath -m "${CUBECL_CACHE_DIR:-.device/cubecl}")
if [ ! -d "$CUBECL_CACHE_DIR" ] && [ -f "$CUBECL_CACHE_DIR-cache.tar.xz" ]; then
  tar -xJf "$CUBECL_CACHE_DIR-cache.tar.xz" -C "$(dirname "$CUBECL_CACHE_DIR")"
fi
mkdir -p "$CUBECL_CACHE_DIR"
CUBECL_KERNELS="kernels-$(sha256sum "${BIN:?source trainer_binary.sh before cubecl_cache.sh}" | cut -c1-16)"
# The cache settings, as lines of a cubecl.toml (scripts that write their own add them).
cubecl_cache_toml() {
  printf '[autotune]\ncache = { file = "%s/autotune" }\n\n[compilation]\ncache = { file = "%s/%s" }\n' \
    "$CUBECL_CACHE_DIR" "$CUBECL_CACHE_DIR" "$CUBECL_KERNELS"
}
cubecl_cache_toml > cubecl.toml
# Packs the autotune results and this binary's kernels (other binaries' are dropped).
save_cubecl_cache() {
  find "$CUBECL_CACHE_DIR" -mindepth 1 -maxdepth 1 -name 'kernels*' ! -name "$CUBECL_KERNELS" -exec rm -rf {} +
  tar -cf - -C "$(dirname "$CUBECL_CACHE_DIR")" "$(basename "$CUBECL_CACHE_DIR")" | xz -T0 > "$OUT/cubecl-cache.tar.xz" \
    && du -sh "$CUBECL_CACHE_DIR" "$OUT/cubecl-cache.tar.xz"
}
