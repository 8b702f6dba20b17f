#!/usr/bin/env python3
"""Builds the offline demo source: a few thousand math documents in the OpenWebMath schema
(url, text, date, metadata), as JSONL files the pipeline reads as a local source.

Inputs (fetched and checked by scripts/fetch_assets.sh):
  - champ-dataset 1.0.0 (PyPI, MIT): 270 competition problems with step-by-step solutions,
    and the model-written solutions annotated in the dataset (with their mistakes);
  - sagemath-doc 9.5 (Debian, CC-BY-SA-3.0): the English Sage manual pages, HTML with TeX math.

Usage: demo_source.py --assets DIR --out DIR [--files 4]
The output folder appears complete or not at all (written beside it, then renamed).
"""

import argparse
import hashlib
import html.parser
import io
import json
import lzma
import os
import shutil
import sys
import tarfile
import zipfile

CHAMP_WHEEL = "champ_dataset-1.0.0-py3-none-any.whl"
SAGE_DEB = "sagemath-doc_9.5-6_all.deb"
MIN_CHARS = 300


def champ_documents(wheel_path):
    with zipfile.ZipFile(wheel_path) as z:
        data = json.loads(z.read("champ_dataset/dataset_files/v0.json"))
    for pid, p in sorted(data["problems"].items()):
        problem = p["_text"].strip()
        steps = [s["_text"].strip() for s in p.get("solution", {}).get("steps", [])]
        answer = (p.get("_answer") or "").strip()
        text = f"Problem. {problem}\n\nSolution.\n" + "\n".join(steps)
        if answer:
            text += f"\n\nAnswer: {answer}"
        meta = {"source": "champ-dataset 1.0.0", "license": "MIT", "category": p.get("category"), "kind": "reference solution"}
        yield f"https://champ.local/problems/{pid}", text, meta
        for model, ann in sorted((p.get("fws_annotations") or {}).items()):
            solution = (ann.get("text") or "").strip() if isinstance(ann, dict) else ""
            if not solution:
                continue
            slug = "".join(c if c.isalnum() else "-" for c in model).strip("-").lower()
            meta = {"source": "champ-dataset 1.0.0", "license": "MIT", "category": p.get("category"), "kind": "model solution", "model": model}
            yield f"https://champ.local/problems/{pid}/{slug}", f"Problem. {problem}\n\n{solution}", meta


def deb_data_tar(deb_path):
    """The data.tar member of a .deb (an `ar` archive), opened as a tarfile."""
    with open(deb_path, "rb") as f:
        if f.read(8) != b"!<arch>\n":
            raise SystemExit(f"error: {deb_path} is not a Debian package; delete it and fetch it again")
        while True:
            header = f.read(60)
            if len(header) < 60:
                break
            name = header[:16].decode().strip().rstrip("/")
            size = int(header[48:58].decode().strip())
            body = f.read(size)
            if size % 2:
                f.read(1)
            if name.startswith("data.tar"):
                if name.endswith(".xz"):
                    body = lzma.decompress(body)
                return tarfile.open(fileobj=io.BytesIO(body))
    raise SystemExit(f"error: {deb_path} has no data.tar member")


BLOCK = {"p", "div", "section", "li", "pre", "br", "tr", "dt", "dd", "h1", "h2", "h3", "h4", "h5", "h6", "table", "blockquote"}


class MainText(html.parser.HTMLParser):
    """The text of a Sphinx page's main content, with TeX math kept as written."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.depth = 0  # >0 while inside the role=main div
        self.skip = 0
        self.title = ""
        self.in_title = False
        self.parts = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "title":
            self.in_title = True
        if self.depth:
            if tag == "div":
                self.depth += 1
            if tag in ("script", "style") or (tag == "a" and "headerlink" in (a.get("class") or "")):
                self.skip += 1
            if tag in BLOCK:
                self.parts.append("\n")
        elif tag == "div" and a.get("role") == "main":
            self.depth = 1

    def handle_endtag(self, tag):
        if tag == "title":
            self.in_title = False
        if not self.depth:
            return
        if tag in ("script", "style", "a") and self.skip:
            self.skip -= 1
        if tag in BLOCK:
            self.parts.append("\n")
        if tag == "div":
            self.depth -= 1

    def handle_data(self, data):
        if self.in_title:
            self.title += data
        if self.depth and not self.skip:
            self.parts.append(data)

    def text(self):
        lines = [" ".join(l.split()) for l in "".join(self.parts).splitlines()]
        out, blank = [], False
        for l in lines:
            if l:
                out.append(l)
                blank = False
            elif not blank and out:
                out.append("")
                blank = True
        return "\n".join(out).strip()


def sage_documents(deb_path):
    prefix = "./usr/share/doc/sagemath/html/en/"
    with deb_data_tar(deb_path) as tar:
        members = sorted((m for m in tar.getmembers() if m.isfile() and m.name.startswith(prefix) and m.name.endswith(".html")), key=lambda m: m.name)
        for m in members:
            rel = m.name[len(prefix):]
            if "/_static/" in rel or rel.split("/")[-1] in ("genindex.html", "genindex-all.html", "search.html", "py-modindex.html"):
                continue
            parser = MainText()
            parser.feed(tar.extractfile(m).read().decode("utf-8", "replace"))
            text = parser.text()
            if parser.title.strip():
                text = parser.title.strip() + "\n\n" + text
            meta = {"source": "sagemath-doc 9.5", "license": "CC-BY-SA-3.0", "kind": "manual page"}
            yield f"https://doc.sagemath.org/html/en/{rel}", text, meta


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--assets", required=True, help="folder with the fetched assets")
    ap.add_argument("--out", required=True, help="output folder (replaced)")
    ap.add_argument("--files", type=int, default=4, help="number of JSONL files")
    args = ap.parse_args()
    for f in (CHAMP_WHEEL, SAGE_DEB):
        if not os.path.isfile(os.path.join(args.assets, f)):
            sys.exit(f"error: {f} is missing in {args.assets}; run scripts/fetch_assets.sh champ-dataset sagemath-doc")

    docs = {}
    for url, text, meta in list(champ_documents(os.path.join(args.assets, CHAMP_WHEEL))) + list(sage_documents(os.path.join(args.assets, SAGE_DEB))):
        if len(text) >= MIN_CHARS and url not in docs:
            docs[url] = (text, meta)

    tmp = args.out.rstrip("/") + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    outs = [open(os.path.join(tmp, f"owm-demo-{i:05d}-of-{args.files:05d}.jsonl"), "w", encoding="utf-8") for i in range(args.files)]
    counts = [0] * args.files
    for url in sorted(docs):
        text, meta = docs[url]
        i = int(hashlib.sha256(url.encode()).hexdigest(), 16) % args.files
        row = {"url": url, "text": text, "date": "2024-01-10" if "champ" in url else "2022-02-12", "metadata": json.dumps(meta, sort_keys=True)}
        outs[i].write(json.dumps(row, ensure_ascii=False) + "\n")
        counts[i] += 1
    for f in outs:
        f.close()
    with open(os.path.join(tmp, "README.md"), "w") as f:
        f.write(
            "# habits demo source\n\nGenerated by scripts/demo_source.py from champ-dataset 1.0.0 (MIT) and "
            "sagemath-doc 9.5 (CC-BY-SA-3.0). OpenWebMath schema: url, text, date, metadata (JSON string).\n"
        )
    shutil.rmtree(args.out, ignore_errors=True)
    os.rename(tmp, args.out)
    print(f"demo source: {sum(counts)} documents in {args.files} files under {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
