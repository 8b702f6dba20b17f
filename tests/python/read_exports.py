"""Opens corpus-tools exports with readers no one here wrote: HF `datasets` (parquet, jsonl
and the hub layout, through the cards' YAML configs), numpy over the Megatron index. Checks
every manifest's sha256 and that `text` is prompt + completion. Prints one JSON line.

argv: the folder holding parquet/ jsonl/ megatron/ hf/, the run folder."""
import glob
import hashlib
import json
import os
import sys

import datasets
import numpy as np

root, run = sys.argv[1], sys.argv[2]
out = {"checksums_ok": True, "text_is_prompt_plus_completion": True}


def check_files(base, files):
    for f in files:
        data = open(os.path.join(base, f["path"]), "rb").read()
        if hashlib.sha256(data).hexdigest() != f["sha256"] or len(data) != f["bytes"]:
            out["checksums_ok"] = False


def check_text(ds):
    for row in ds:
        if row["text"] != row["prompt"] + row["completion"]:
            out["text_is_prompt_plus_completion"] = False


def idx_rows(path):
    header = np.fromfile(path, dtype=np.uint8, count=34)
    assert bytes(header[:9]) == b"MMIDIDX\x00\x00", path
    return int(np.frombuffer(header[18:26].tobytes(), dtype="<u8")[0])


for fmt in ["parquet", "jsonl", "megatron"]:
    out[fmt] = {}
    for set_dir in sorted(glob.glob(os.path.join(root, fmt, "*"))):
        name = os.path.basename(set_dir)
        manifest = json.load(open(os.path.join(set_dir, "manifest.json")))
        check_files(set_dir, manifest["files"])
        if fmt == "megatron":
            counts = {}
            for idx in glob.glob(os.path.join(set_dir, "megatron", "*.idx")):
                split = os.path.basename(idx).split("-")[0]
                counts[split] = counts.get(split, 0) + idx_rows(idx)
            out[fmt][name] = counts
        else:
            ds = datasets.load_dataset(set_dir)
            out[fmt][name] = {split: ds[split].num_rows for split in ds}
            for split in ds:
                check_text(ds[split])

hf = os.path.join(root, "hf")
manifest = json.load(open(os.path.join(hf, "manifest.json")))
out["hf"] = {}
for name, m in manifest["sets"].items():
    check_files(hf, m["files"])
    ds = datasets.load_dataset(hf, name)
    out["hf"][name] = {split: ds[split].num_rows for split in ds}
    for split in ds:
        check_text(ds[split])
print(json.dumps(out))
