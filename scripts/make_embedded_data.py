"""Build the data slices embedded in the package from the benchmark data folder (run once; the output is committed).

    python scripts/make_embedded_data.py ../shared/data

Writes ``src/layerprune/data/embedded/<folder>/<file>.gz`` (gzip level 9, mtime 0, so the bytes are
reproducible), copies each folder's ``PROVENANCE.md`` (source, licence, attribution) beside the
files, and writes ``MANIFEST.json`` with the sha256 of every ``.gz`` and how many items it holds.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import shutil
from pathlib import Path

TARGET = Path(__file__).resolve().parents[1] / "src" / "layerprune" / "data" / "embedded"
# file → number of leading lines kept (None: the whole file), licence as stated upstream.
SLICES = {
    "wikitext2/raw/wiki.test.raw": (None, "CC BY-SA 3.0 / GFDL"),
    "dolly15k/databricks-dolly-15k-v1-nocategory.jsonl": (None, "CC BY-SA 3.0"),
    "arc/ARC-Easy-Test.jsonl": (200, "CC BY-SA 4.0"),
    "piqa/valid.jsonl": (200, "AFL-3.0"),
    "piqa/valid-labels.lst": (200, "AFL-3.0"),
}


def write_slice(source: Path, target: Path, lines: int | None) -> tuple[int, int]:
    """Gzip the first ``lines`` lines of ``source`` (all if None) to ``target``; return (kept, total) lines."""
    data = source.read_bytes()
    all_lines = data.splitlines(keepends=True)
    kept = all_lines if lines is None else all_lines[:lines]
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9, mtime=0, filename="") as out:
        out.write(b"".join(kept))
    return len(kept), len(all_lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="the benchmark data folder (e.g. ../shared/data)")
    args = parser.parse_args()
    if TARGET.exists():
        shutil.rmtree(TARGET)
    manifest = {}
    for relative, (lines, licence) in SLICES.items():
        target = TARGET / f"{relative}.gz"
        kept, total = write_slice(args.data / relative, target, lines)
        digest = hashlib.sha256(target.read_bytes()).hexdigest()
        manifest[f"{relative}.gz"] = {"sha256": digest, "lines": kept, "of_lines": total, "licence": licence}
        folder = relative.split("/")[0]
        shutil.copy(args.data / folder / "PROVENANCE.md", TARGET / folder / "PROVENANCE.md")
    note = "Slices of public datasets; each folder's PROVENANCE.md gives the source, licence and attribution."
    document = {"note": note, "files": manifest}
    (TARGET / "MANIFEST.json").write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {len(manifest)} files to {TARGET}")


if __name__ == "__main__":
    main()
