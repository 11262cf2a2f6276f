"""Pack what `python -m benchmarks.gpu_check` needs on a GPU machine that has the checkout only.

    python -m benchmarks.gpu_carry [--export DIR]

Writes benchmarks/.cache/gpu-carry/ (git-ignored), to be named in the run's carry list:
  export/   the bundled model's fp32 and fp16 graphs, tokenizer.json and splade.json (the screened
            graph stays here: the check names the variants it runs)
  scifact/  all of SciFact: corpus.jsonl.gz (5,183 abstracts; benchmarks/gpu_check.sh unpacks it),
            queries.jsonl, qrels/test.tsv
and prints its size with the checkout's, against the 64 MiB a call can take.
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import subprocess
import sys
from pathlib import Path

from .common import REPO, SHARED, prepare_models

CARRY = REPO / "benchmarks" / ".cache" / "gpu-carry"
EXPORT_FILES = ("splade.json", "tokenizer.json", "model.fp32.onnx", "model.fp16.onnx")
LIMIT_MIB = 64


def checkout_bytes() -> int:
    """What a call sends besides carried paths: tracked files and untracked ones git does not ignore."""
    names = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, check=True).stdout.decode().split("\0")
    return sum((REPO / n).stat().st_size for n in names if n and (REPO / n).is_file())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--export", type=Path, help="export to carry (default: the benchmarks' export of the bundled model)")
    p.add_argument("--data", type=Path, default=SHARED / "data" / "scifact", help="SciFact in BEIR layout")
    args = p.parse_args(argv)
    export = args.export or prepare_models(None, naive=False)["chunked"]
    if not (args.data / "corpus.jsonl").is_file():
        print(f"gpu_carry: {args.data}/corpus.jsonl missing (set --data or SPLADE_SHARED)", file=sys.stderr)
        return 2
    if CARRY.exists():
        shutil.rmtree(CARRY)
    (CARRY / "export").mkdir(parents=True)
    for name in EXPORT_FILES:
        shutil.copy(export / name, CARRY / "export" / name)
    (CARRY / "scifact" / "qrels").mkdir(parents=True)
    with open(args.data / "corpus.jsonl", "rb") as f, gzip.open(CARRY / "scifact" / "corpus.jsonl.gz", "wb", 9) as g:
        shutil.copyfileobj(f, g)
    shutil.copy(args.data / "queries.jsonl", CARRY / "scifact" / "queries.jsonl")
    shutil.copy(args.data / "qrels" / "test.tsv", CARRY / "scifact" / "qrels" / "test.tsv")
    carry = sum(f.stat().st_size for f in CARRY.rglob("*") if f.is_file())
    checkout = checkout_bytes()
    total = (carry + checkout) / 2**20
    print(f"{CARRY.relative_to(REPO)}: {carry / 2**20:.1f} MiB; with the checkout ({checkout / 2**20:.1f} MiB) "
          f"{total:.1f} of {LIMIT_MIB} MiB, {LIMIT_MIB - total:.1f} MiB left for an .ortgpu piece in the same call")
    return 0 if total < LIMIT_MIB else 1


if __name__ == "__main__":
    sys.exit(main())
