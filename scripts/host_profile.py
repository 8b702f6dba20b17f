#!/usr/bin/env python3
"""Summarises a host profile (`trainer pretrain --host-profile FILE`, folded stacks:
`thread;outermost;...;innermost count` per line).

Prints the samples per thread, the crates the host's time is spent in (each sample goes to
the innermost frame outside the standard library and the collections it uses, so a
hash-map lookup counts for the crate that asked for it), the functions with the most
samples of their own, and the share of samples under each `--under` pattern (a substring
of a frame's name; defaults name burn's autodiff, cubecl's launch and memory paths and the
CUDA driver).

    python3 scripts/host_profile.py profile.folded [--top 25] [--under PATTERN ...]
"""

import argparse
import collections
import re
import sys

# Frames that are never the reason for the work: their caller is charged.
PLUMBING = ("core", "alloc", "std", "hashbrown", "spin", "parking_lot", "parking_lot_core", "lock_api", "mimalloc", "libmimalloc_sys", "crossbeam_channel", "crossbeam_utils")

DEFAULT_UNDER = [
    "burn_autodiff::graph",
    "burn_autodiff::runtime",
    "burn_autodiff::checkpoint",
    "burn_autodiff::ops",
    "cubecl_runtime::memory_management",
    "cubecl_runtime::client",
    "cubecl_cuda::compute",
    "cuLaunchKernel",
    "cublas",
    "drop_in_place",
]


def crate_of(frame):
    """The crate a demangled Rust symbol belongs to: `<a::B as c::D>::f` -> a, `a::b::f` -> a."""
    name = frame.lstrip("<&*")
    name = re.sub(r"^(mut |dyn |const )+", "", name)
    match = re.match(r"([A-Za-z_][A-Za-z0-9_]*)::", name)
    return match.group(1) if match else name.split("(")[0] or "?"


def read(path):
    stacks = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line:
                continue
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit():
                sys.exit(f"{path}:{number}: not a folded stack (`frames count`): {line[:120]!r}")
            frames = stack.split(";")
            stacks.append((frames[0], frames[1:], int(count)))
    if not stacks:
        sys.exit(f"{path}: no samples (was the run long enough to pass its third step?)")
    return stacks


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("profile")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--under", action="append", help="a frame-name substring; repeatable")
    args = parser.parse_args()
    stacks = read(args.profile)
    total = sum(c for _, _, c in stacks)
    share = lambda n: f"{n:7d}  {100 * n / total:5.1f}%"

    threads = collections.Counter()
    crates = collections.Counter()
    own = collections.Counter()
    under = collections.Counter()
    patterns = args.under or DEFAULT_UNDER
    for thread, frames, count in stacks:
        threads[thread] += count
        if frames:
            own[frames[-1]] += count
        charged = next((crate_of(f) for f in reversed(frames) if crate_of(f) not in PLUMBING), "(standard library only)")
        crates[charged] += count
        for p in patterns:
            if any(p in f for f in frames):
                under[p] += count

    print(f"{total} samples in {args.profile}")
    print("\nby thread:")
    for name, n in threads.most_common():
        print(f"  {share(n)}  {name}")
    print("\nby crate (innermost frame outside the standard library):")
    for name, n in crates.most_common(args.top):
        print(f"  {share(n)}  {name}")
    print(f"\nfunctions with the most samples of their own (top {args.top}):")
    for name, n in own.most_common(args.top):
        print(f"  {share(n)}  {name[:160]}")
    print("\nsamples with a frame matching:")
    for p in patterns:
        print(f"  {share(under[p])}  {p}")


if __name__ == "__main__":
    main()
