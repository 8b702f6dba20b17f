"""Opens built sets with readers no one in this project wrote (pyarrow, HF `datasets`,
numpy memmap over Megatron's index layout, HF `tokenizers`) and checks that every format
holds the same rows and tokens. Any disagreement raises; on success prints a JSON summary.

usage: read_sets.py SETS_DIR TOKENIZER_JSON
"""
import glob
import hashlib
import json
import os
import sys

import datasets
import numpy as np
import pyarrow.parquet as pq
from tokenizers import Tokenizer


def read_megatron(prefix):
    """Decodes a .idx/.bin pair by Megatron's layout: header, sizes, pointers, documents."""
    idx = open(prefix + ".idx", "rb").read()
    assert idx[:9] == b"MMIDIDX\x00\x00", f"{prefix}.idx: bad magic"
    assert int.from_bytes(idx[9:17], "little") == 1, "index version is not 1"
    dtype = {8: np.uint16, 4: np.int32}[idx[17]]
    n = int.from_bytes(idx[18:26], "little")
    d = int.from_bytes(idx[26:34], "little")
    at = 34
    sizes = np.frombuffer(idx, np.int32, n, at)
    at += 4 * n
    pointers = np.frombuffer(idx, np.int64, n, at)
    at += 8 * n
    documents = np.frombuffer(idx, np.int64, d, at)
    at += 8 * d
    assert at == len(idx), f"{prefix}.idx has {len(idx) - at} trailing bytes"
    assert documents.tolist() == list(range(n + 1)), "one document per sequence"
    data = np.memmap(prefix + ".bin", dtype=dtype, mode="r")
    item = np.dtype(dtype).itemsize
    assert data.size * item == (int(pointers[-1]) + int(sizes[-1]) * item if n else 0), "bin size"
    return [data[p // item: p // item + s].tolist() for p, s in zip(pointers, sizes)], np.dtype(dtype).name


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_set(set_dir, tokenizer):
    manifest = json.load(open(os.path.join(set_dir, "manifest.json")))
    for f in manifest["files"]:
        path = os.path.join(set_dir, f["path"])
        assert os.path.getsize(path) == f["bytes"], f"{path}: size differs from the manifest"
        assert sha256(path) == f["sha256"], f"{path}: sha256 differs from the manifest"
    tok = manifest["tokenizer"]
    clip = manifest["config"]["max_completion_tokens"]
    loaded = datasets.load_dataset(set_dir)
    assert sorted(loaded.keys()) == sorted(manifest["rows"].keys()), f"splits {list(loaded.keys())}"
    summary = {}
    for split, n in manifest["rows"].items():
        shards = sorted(glob.glob(os.path.join(set_dir, "data", f"{split}-*.parquet")))
        rows = [r for s in shards for r in pq.read_table(s).to_pylist()]
        assert len(rows) == n, f"{split}: {len(rows)} parquet rows, manifest says {n}"
        assert loaded[split].to_list() == rows, f"{split}: datasets and pyarrow disagree"
        lines = [json.loads(l) for s in sorted(glob.glob(os.path.join(set_dir, "jsonl", f"{split}-*.jsonl"))) for l in open(s)]
        assert lines == rows, f"{split}: JSONL and parquet disagree"
        sequences = []
        for s in sorted(glob.glob(os.path.join(set_dir, "megatron", f"{split}-*.idx"))):
            seqs, dtype = read_megatron(s[:-4])
            assert dtype == tok["dtype"], f"{s}: dtype {dtype}"
            sequences += seqs
        assert len(sequences) == n, f"{split}: {len(sequences)} sequences"
        prompts = tokenizer.encode_batch([r["prompt"] for r in rows], add_special_tokens=False)
        completions = tokenizer.encode_batch([r["completion"] for r in rows], add_special_tokens=False)
        for r, p, c, seq in zip(rows, prompts, completions, sequences):
            want = ([tok["bos"]] if tok["bos"] is not None else []) + p.ids + c.ids[:clip] + ([tok["eos"]] if tok["eos"] is not None else [])
            assert seq == want, f"{r['doc_id']}: packed ids differ from the tokenizer's"
            assert r["prompt_tokens"] == len(p.ids) and r["completion_tokens"] == min(len(c.ids), clip), r["doc_id"]
            assert r["truncated"] == (len(c.ids) > clip)
            assert r["split"] == split and r["set"] == manifest["set"]
        summary[split] = {
            "rows": n,
            "completion_tokens": sum(r["completion_tokens"] for r in rows),
            "doc_ids": [r["doc_id"] for r in rows],
            "completions": [r["completion"] for r in rows],
            "lineage": [[r["source"], r["revision"], r["file"], r["row"]] for r in rows],
        }
    return summary


def main():
    sets_dir, tokenizer_path = sys.argv[1], sys.argv[2]
    tokenizer = Tokenizer.from_file(tokenizer_path)
    out = {name: check_set(os.path.join(sets_dir, name), tokenizer) for name in ("rich", "control")}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
