"""Reads built sets' Megatron shards with megatron-core's own reader (`IndexedDataset`) and
checks every sequence against the HF `tokenizers` ids of the same JSONL row:
[bos] + prompt + completion (clipped) + [eos], one document per sequence.
Needs torch, numpy, tokenizers and megatron-core (run on the GPU machine, which has torch).

usage: megatron_check.py SETS_DIR TOKENIZER_JSON
"""
import glob
import json
import os
import sys

from megatron.core.datasets.indexed_dataset import IndexedDataset
from tokenizers import Tokenizer


def main():
    sets_dir, tokenizer = sys.argv[1], Tokenizer.from_file(sys.argv[2])
    checked = 0
    for set_name in ("rich", "control"):
        set_dir = os.path.join(sets_dir, set_name)
        manifest = json.load(open(os.path.join(set_dir, "manifest.json")))
        tok, clip = manifest["tokenizer"], manifest["config"]["max_completion_tokens"]
        for idx in sorted(glob.glob(os.path.join(set_dir, "megatron", "*.idx"))):
            prefix = idx[:-4]
            ds = IndexedDataset(prefix)
            rows = [json.loads(l) for l in open(prefix.replace("/megatron/", "/jsonl/") + ".jsonl")]
            assert len(ds) == len(rows), f"{prefix}: {len(ds)} sequences, {len(rows)} rows"
            assert list(ds.document_indices) == list(range(len(rows) + 1)), "one document per row"
            for i, r in enumerate(rows):
                p = tokenizer.encode(r["prompt"], add_special_tokens=False).ids
                c = tokenizer.encode(r["completion"], add_special_tokens=False).ids[:clip]
                want = ([tok["bos"]] if tok["bos"] is not None else []) + p + c + ([tok["eos"]] if tok["eos"] is not None else [])
                got = ds[i].tolist()
                assert got == want, f"{prefix} row {i}: megatron-core reads other ids"
                assert int(ds.sequence_lengths[i]) == len(want)
                checked += 1
            print(f"{prefix}: {len(rows)} sequences ok ({ds.index.dtype.__name__ if hasattr(ds.index, 'dtype') else ''})")
    print(f"megatron-core {__import__('megatron.core').core.__version__ if hasattr(__import__('megatron.core').core, '__version__') else ''}: {checked} sequences match the tokenizer")


if __name__ == "__main__":
    main()
