"""What splitting glued words costs BM25: tokenizing, indexing and querying captions.

    uv run python benchmarks/bench_tokens.py [--n 10000] [--queries 500]

Seeded OCR-like captions (English words, some glued together, numbers, Chinese runs) are
tokenized and indexed with CaptionBM25Index (bm25s), then queried. Run it on two checkouts
(before and after a tokenizer change) and compare: the splitter's cost is in "tokenize"
and "build" (documents) and in "query" (each query is tokenized too).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

_VOCABULARY = (
    "quarterly revenue report launch window server uptime database migration plan weekly team "
    "meeting marketing budget shipping delayed password reset annual leave policy emergency "
    "exit route monthly active users product roadmap inventory flight gate safety training "
    "cloud storage pricing payment notice network latency dashboard"
)
WORDS = _VOCABULARY.split()
CHINESE = ("系统架构图", "用户登录流程", "年度销售报告", "数据库迁移", "安全培训")


def caption(rng: random.Random) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(6, 14))]
    out = []
    while words:
        take = rng.choice((1, 1, 2, 3))  # a third of the time OCR glued 2-3 words
        chunk, words = words[:take], words[take:]
        out.append("".join(w.capitalize() for w in chunk))
    out.insert(rng.randrange(len(out)), str(rng.randint(1, 2030)))
    if rng.random() < 0.3:
        out.append(rng.choice(CHINESE))
    return "Text: " + " ".join(out)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=500)
    args = parser.parse_args()

    from llama_index.packs.clip_hybrid.hybrid.bm25 import CaptionBM25Index, CaptionText
    from llama_index.packs.clip_hybrid.hybrid.tokens import TOKENIZER_SETTINGS, tokenize

    rng = random.Random(0)
    texts = [caption(rng) for _ in range(args.n)]
    tokenize("warm up jieba 系统")  # jieba's dictionary and the word list load once
    tokenize("Warmupthewordlist")
    started = time.perf_counter()
    for text in texts:
        tokenize(text)
    tokenized = time.perf_counter() - started
    started = time.perf_counter()
    index = CaptionBM25Index.build(CaptionText(f"i{i}", t, "s") for i, t in enumerate(texts))
    built = time.perf_counter() - started
    queries = [" ".join(rng.sample(WORDS, 3)) for _ in range(args.queries)]
    times = []
    for query in queries:
        started = time.perf_counter()
        index.search(query, 50)
        times.append(time.perf_counter() - started)
    # Glued tokens never seen before (the split is cached per letter run: worst case).
    unseen = ["".join(rng.sample(WORDS, 3)) + f"x{i}" for i in range(2000)]
    started = time.perf_counter()
    for token in unseen:
        tokenize(token)
    fresh = time.perf_counter() - started
    print(f"tokenizer v{TOKENIZER_SETTINGS['version']}, {args.n} captions")
    print(f"unseen glued token {fresh / len(unseen) * 1e3:.3f} ms each (2000)")
    print(f"tokenize {tokenized:.2f} s ({tokenized / args.n * 1e3:.3f} ms/caption)")
    print(f"build    {built:.2f} s (tokenize + bm25s index)")
    print(f"query    p50 {statistics.median(times) * 1e3:.2f} ms (top 50, {args.queries} queries)")


if __name__ == "__main__":
    main()
