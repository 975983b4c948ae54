"""BM25 retrieval on a ~100k-passage corpus: index build time and peak memory, questions/s at top-20, answer
recall@1/5/20 on the shared NQ dev questions next to the recall of the files' own top-5 ctxs.

The corpus: every distinct passage of the shared NQ files' ctxs, padded to --size with synthetic passages (100
words drawn from three random real passages, shuffled, under a real title): real term statistics, hard to match.

    PYTHONPATH=$PWD python bench/retrieve_bench.py [--size 100000] [--work /tmp/qalign-retrieve-bench]
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

from qalign.io import atomic_write_jsonl, iter_json_records
from qalign.retrieve.search import has_answer

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
FILES = ("nq-open-gold.train.jsonl.gz", "nq-open-gold.dev.jsonl.gz", "nq-open-top5.train.jsonl.gz",
         "nq-open-top5.dev.jsonl.gz")
DEV, TRAIN = DATA / "nq-open-top5.dev.jsonl.gz", DATA / "nq-open-top5.train.jsonl.gz"


def build_corpus(path: Path, size: int, seed: int = 0) -> int:
    """Write the pooled, de-duplicated real passages plus synthetic padding up to `size`; return the real count."""
    seen: dict[tuple[str, str], None] = {}
    for name in FILES:
        for _, record in iter_json_records(DATA / name):
            for ctx in record.get("ctxs") or []:
                seen.setdefault((str(ctx.get("title") or ""), str(ctx.get("text") or "")), None)
    real = [key for key in seen if key[1].strip()]
    rng = random.Random(seed)
    rows = [{"id": f"real-{i}", "title": title, "text": text} for i, (title, text) in enumerate(real)]
    words = [text.split() for _, text in real]
    while len(rows) < size:
        mixed = [w for i in rng.sample(range(len(real)), 3) for w in words[i]]
        rows.append({"id": f"pad-{len(rows)}", "title": real[rng.randrange(len(real))][0],
                     "text": " ".join(rng.sample(mixed, min(100, len(mixed))))})
    atomic_write_jsonl(path, rows)
    return len(real)


def _timed(argv: list[str]) -> tuple[float, float, str]:
    """Run `/usr/bin/time -v ARGV`: (wall seconds, peak RSS GiB, stdout)."""
    result = subprocess.run(["/usr/bin/time", "-v", *argv], capture_output=True, text=True, check=True)
    wall = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", result.stderr)
    hours, minutes, seconds = (float(g or 0) for g in wall.groups())
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr).group(1))
    return hours * 3600 + minutes * 60 + seconds, rss / 2**20, result.stdout


def own_recall(path: Path, ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """Recall@k of a file's own ctxs, with the same has_answer rule as `qalign retrieve`."""
    records = [obj for _, obj in iter_json_records(path)]
    return {str(k): round(sum(any(has_answer(r["answers"], c["text"]) for c in r["ctxs"][:k]) for r in records)
                          / len(records), 4) for k in ks}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--work", type=Path, default=Path("/tmp/qalign-retrieve-bench"))
    args = parser.parse_args()
    corpus, index = args.work / f"corpus-{args.size}.jsonl", args.work / "index"
    real = build_corpus(corpus, args.size)
    shutil.rmtree(index, ignore_errors=True)
    cli = [sys.executable, "-m", "qalign.cli", "retrieve", "--corpus", str(corpus), "--index", str(index),
           "--top-k", "20"]
    wall, rss, _ = _timed([*cli, "--input", str(DEV), "--output", str(args.work / "dev.jsonl")])
    build = json.loads((index / "qalign-index.json").read_text())["build_seconds"]
    dev = json.loads((args.work / "dev.recall.json").read_text())
    reuse_wall, reuse_rss, _ = _timed([*cli, "--input", str(TRAIN), "--output", str(args.work / "train.jsonl")])
    train = json.loads((args.work / "train.recall.json").read_text())
    own = own_recall(DEV)
    print(f"corpus: {args.size} passages ({real} real, de-duplicated), {corpus.stat().st_size / 2**20:.0f} MiB")
    print("| what | value |\n|---|---:|")
    print(f"| index build (read + tokenize + index + save) | {build:.1f} s |")
    print(f"| first run, build + 300 dev questions: wall / peak RSS | {wall:.1f} s / {rss:.2f} GiB |")
    print(f"| reuse run, 2055 train questions: wall / peak RSS | {reuse_wall:.1f} s / {reuse_rss:.2f} GiB |")
    print(f"| retrieval at top-20 (train, {train['questions']} q) | {train['questions_per_second']:.0f} q/s |")
    print(f"| retrieval at top-20 (dev, {dev['questions']} q) | {dev['questions_per_second']:.0f} q/s |")
    print("\n| dev, 300 questions | recall@1 | recall@5 | recall@20 |\n|---|---:|---:|---:|")
    r = dev["recall"]
    print(f"| BM25 over {args.size} passages | {r['1']:.3f} | {r['5']:.3f} | {r['20']:.3f} |")
    print(f"| the file's own top-5 ctxs | {own['1']:.3f} | {own['5']:.3f} | — |")
    print(f"\ntrain recall@1/5/20 (BM25): {train['recall']['1']:.3f} / {train['recall']['5']:.3f} / "
          f"{train['recall']['20']:.3f}")


if __name__ == "__main__":
    main()
