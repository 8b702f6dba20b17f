"""Writes a set folder in the pipeline's format (manifest.json format 1, Megatron int32
shards, JSONL rows with prompt_tokens) filled with random token ids, for benchmarks on a
machine without the pipeline. Needs numpy.

usage: make_synthetic_set.py OUT [--sequences N] [--length L] [--vocab V]
"""
import argparse
import json
import os

import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--sequences", type=int, default=4000)
    ap.add_argument("--length", type=int, default=1024)
    ap.add_argument("--vocab", type=int, default=128256)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    os.makedirs(os.path.join(a.out, "megatron"), exist_ok=True)
    os.makedirs(os.path.join(a.out, "jsonl"), exist_ok=True)
    stem = "train-00000-of-00001"
    seqs = rng.integers(3, a.vocab, size=(a.sequences, a.length), dtype=np.int32)
    seqs.tofile(os.path.join(a.out, "megatron", stem + ".bin"))
    n = a.sequences
    with open(os.path.join(a.out, "megatron", stem + ".idx"), "wb") as f:
        f.write(b"MMIDIDX\x00\x00" + (1).to_bytes(8, "little") + bytes([4]) + n.to_bytes(8, "little") + (n + 1).to_bytes(8, "little"))
        f.write(np.full(n, a.length, dtype=np.int32).tobytes())
        f.write((np.arange(n, dtype=np.int64) * a.length * 4).tobytes())
        f.write(np.arange(n + 1, dtype=np.int64).tobytes())
    with open(os.path.join(a.out, "jsonl", stem + ".jsonl"), "w") as f:
        for _ in range(n):
            f.write(json.dumps({"prompt_tokens": 16}) + "\n")
    files = [{"path": f"megatron/{stem}.idx", "split": "train", "format": "megatron-idx"},
             {"path": f"megatron/{stem}.bin", "split": "train", "format": "megatron-bin"},
             {"path": f"jsonl/{stem}.jsonl", "split": "train", "format": "jsonl"}]
    manifest = {"format_version": 1, "set": "synthetic", "files": files,
                "tokenizer": {"vocab_size": a.vocab, "sha256": "synthetic", "bos": None, "eos": None, "dtype": "int32"}}
    json.dump(manifest, open(os.path.join(a.out, "manifest.json"), "w"), indent=2)


if __name__ == "__main__":
    main()
