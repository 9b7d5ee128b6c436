"""CLIP embedding speed: FastClipEmbedding vs upstream ClipEmbedding, side by side.

    uv run python benchmarks/bench_embedding.py [--images 48] [--rounds 3] [--bf16]
    uv run python benchmarks/bench_embedding.py --tokenizer-only
    uv run python benchmarks/bench_embedding.py --device cuda --images 2048   # on a GPU

Full-size ViT-B/32 shapes with random weights, on this machine's CPU. Reports ratios
(ours vs upstream) per round and their spread; the rounds interleave the alternatives.
Throughputs are rates (items/s): upstream texts are timed on --upstream-texts of them,
ours on --texts (the upstream loop is slow). bf16 runs when the CPU has native bf16 or
with --bf16 (elsewhere it is emulated and far slower).

Each round also measures the limits: decoding alone (open at the working size, resize to
224 x 224) on 1 thread and on a process per core, and the image tower alone on
preprocessed tensors (from the host; on a GPU also already on it); ours (``auto``
precision) is given as a ratio to each.

Tokenizing alone (every round, or only with --tokenizer-only): our tokenizer (byte pairs
merged in compiled code) vs OpenAI's ``clip.tokenize`` (Python), on the same texts: the
--texts batch seen before (both cache merged words), the same number of texts of words
never seen (caches cleared, as a caption's or a new query's words are), and one query.
"""

from __future__ import annotations

import argparse
import random
import statistics
import string
import tempfile
from pathlib import Path
from typing import Any

from _common import CACHE, machine, make_photos, percentile, spread, timed, vit_b_32_checkpoint
from llama_index.core.schema import ImageType
from llama_index.embeddings.clip import ClipEmbedding
from llama_index.packs.clip_hybrid import FastClipEmbedding
from llama_index.packs.clip_hybrid.clip.precision import cpu_has_native_bf16
from llama_index.packs.clip_hybrid.clip.tokenizer import tokenize_batch

QUERIES = [
    "a system architecture diagram",
    "a flowchart of the user login process",
    "a bar chart of quarterly revenue",
    "a screenshot of a settings page with a save button",
    "mountains at sunset over a lake",
    "an invoice with a total amount",
]


def unseen_texts(n: int, seed: int) -> list[str]:
    """``n`` texts of 12 made-up words each: no tokenizer cache has seen them."""
    rng = random.Random(seed)
    letters = string.ascii_lowercase
    words = lambda: (  # noqa: E731
        "".join(rng.choice(letters) for _ in range(rng.randint(3, 12))) for _ in range(12)
    )
    return [" ".join(words()) for _ in range(n)]


def tokenizer_round(texts: list[str], seed: int, queries: int) -> dict[str, float]:
    """ms per call, ours and clip's, for the batch (warm), unseen texts (cold), a query."""
    import clip
    import llama_index.packs.clip_hybrid.clip.tokenizer as ours_module

    out: dict[str, float] = {}
    tokenize_batch(texts)
    clip.tokenize(texts, truncate=True)  # both caches warm
    out["ours warm"] = timed(lambda: tokenize_batch(texts))[0] * 1000
    out["clip warm"] = timed(lambda: clip.tokenize(texts, truncate=True))[0] * 1000
    new = unseen_texts(len(texts), seed)
    ours_module.clip_tokenizer.cache_clear()  # a fresh tokenizer: nothing merged yet
    ours_module.clip_tokenizer()
    out["ours cold"] = timed(lambda: tokenize_batch(new))[0] * 1000
    new = unseen_texts(len(texts), seed + 1000)
    clip.clip._tokenizer.cache = {t: t for t in ("<|startoftext|>", "<|endoftext|>")}
    out["clip cold"] = timed(lambda: clip.tokenize(new, truncate=True))[0] * 1000
    ours_q, clip_q = [], []
    for i in range(queries):
        q = QUERIES[i % len(QUERIES)]
        ours_q.append(timed(lambda q=q: tokenize_batch([q]))[0] * 1000)
        clip_q.append(timed(lambda q=q: clip.tokenize([q]))[0] * 1000)
    out["ours query"], out["clip query"] = percentile(ours_q, 50), percentile(clip_q, 50)
    return out


def print_tokenizer(rounds: list[dict[str, float]], n: int) -> None:
    for kind, what in (("warm", f"{n} texts seen before"), ("cold", f"{n} unseen texts")):
        ours = [r[f"ours {kind}"] for r in rounds]
        theirs = [r[f"clip {kind}"] for r in rounds]
        ratio = [r[f"clip {kind}"] / r[f"ours {kind}"] for r in rounds]
        print(
            f"tokenizing {what}: ours {spread(ours)} ms, clip.tokenize {spread(theirs)} ms: "
            f"{spread(ratio)}x faster"
        )
    ours = [r["ours query"] * 1000 for r in rounds]
    theirs = [r["clip query"] * 1000 for r in rounds]
    print(f"tokenizing one query, p50: ours {spread(ours)} us, clip.tokenize {spread(theirs)} us")


def _cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def measure_limits(auto: FastClipEmbedding, photos: list[Any], out: dict[str, list[float]]) -> None:
    """Ours (auto precision) and the two limits it is judged against, in images/s."""
    from bench_decode import decode_rate
    from llama_index.packs.clip_hybrid._util import available_cores

    t_auto, _ = timed(lambda: auto.get_image_embedding_batch(photos))
    out["auto"].append(len(photos) / t_auto)
    paths = [Path(p) for p in photos]
    out["decode 1"].append(decode_rate(paths, 1))
    out["decode all"].append(decode_rate(paths, available_cores()))
    pixels = auto._prepare_batch(photos[:64])  # preprocessed once: the tower alone
    repeats = max(1, len(photos) // len(pixels))
    t_model, _ = timed(lambda: [auto._encode_images(pixels) for _ in range(repeats)])
    out["model"].append(repeats * len(pixels) / t_model)
    if auto.resolved_device != "cpu":
        on_device = pixels.to(auto.resolved_device)
        auto._encode_images(on_device)
        t_dev, _ = timed(lambda: [auto._encode_images(on_device) for _ in range(repeats)])
        out["model on device"].append(repeats * len(pixels) / t_dev)


def print_limits(limits: dict[str, list[float]], upstream: list[float]) -> None:
    ours = limits["auto"]
    print(
        f"decode alone, images/s: 1 thread {spread(limits['decode 1'])}, a process per core "
        f"{spread(limits['decode all'])}; the image tower alone on preprocessed tensors: "
        f"{spread(limits['model'])}"
        + (
            f", already on the device {spread(limits['model on device'])}"
            if limits["model on device"]
            else ""
        )
    )
    to_decode = [o / d for o, d in zip(ours, limits["decode all"], strict=True)]
    to_model = [o / m for o, m in zip(ours, limits["model"], strict=True)]
    to_upstream = [o / u for o, u in zip(ours, upstream, strict=True)]
    print(
        f"ours (auto precision) {spread(ours)} images/s: {spread(to_decode)} of all-core "
        f"decoding, {spread(to_model)} of the tower alone, {spread(to_upstream)}x upstream"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--texts", type=int, default=256)
    parser.add_argument("--upstream-texts", type=int, default=48)
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--bf16", action="store_true", help="also time bf16 on a non-bf16 CPU")
    parser.add_argument("--tokenizer-only", action="store_true", help="time tokenizing alone")
    parser.add_argument("--device", help="cpu, cuda, ... (default: cuda when there is one)")
    args = parser.parse_args()
    texts = [f"{QUERIES[i % len(QUERIES)]} number {i}" for i in range(args.texts)]
    print(f"machine: {machine()}")
    tokenizing = []
    if args.tokenizer_only:
        for round_ in range(args.rounds):
            tokenizing.append(tokenizer_round(texts, round_, args.queries))
        print_tokenizer(tokenizing, len(texts))
        return

    ckpt = str(vit_b_32_checkpoint())
    photos: list[ImageType] = [str(p) for p in make_photos(CACHE / "photos", args.images)]
    big = [str(p) for p in make_photos(CACHE / "photos_4000x3000", 4, size=(4000, 3000))]
    upstream = ClipEmbedding(model_name=ckpt)
    kw: dict[str, Any] = {"model_name": ckpt, "embed_batch_size": 32, "device": args.device}
    fp32 = FastClipEmbedding(precision="fp32", **kw)
    auto = FastClipEmbedding(**kw)
    on_cpu = (args.device or "cpu") == "cpu" and not _cuda()
    with_bf16 = args.bf16 or cpu_has_native_bf16() or not on_cpu
    bf16 = FastClipEmbedding(precision="bf16", **kw)
    models = (fp32, auto, bf16) if with_bf16 else (fp32, auto)
    for model in models:  # load and warm up
        model.get_text_embedding("warm up")
        model.get_image_embedding_batch(photos[:4])
    upstream.get_text_embedding("warm up")
    print(
        f"device: {auto.resolved_device}; native bf16 (CPU): {cpu_has_native_bf16()}; "
        f"auto precision -> {auto.resolved_precision}"
    )
    limits: dict[str, list[float]] = {k: [] for k in ("auto", "decode 1", "decode all", "model")}
    limits["model on device"] = []

    image_ratio: dict[str, list[float]] = {"fp32": [], "bf16": []}
    rates: dict[str, list[float]] = {"upstream": [], "fp32": [], "bf16": []}
    text_batch_ratio, query_ratio = [], []
    query_p50: dict[str, list[float]] = {"upstream": [], "ours": []}
    # One image query (image->image), through the decoder ingestion uses, p50 in ms.
    image_p50: dict[str, list[float]] = {k: [] for k in ("up", "ours", "up big", "ours big")}
    for round_ in range(args.rounds):
        t_up, _ = timed(lambda: [upstream.get_image_embedding(p) for p in photos])
        t_fp32, _ = timed(lambda: fp32.get_image_embedding_batch(photos))
        rates["upstream"].append(len(photos) / t_up)
        rates["fp32"].append(len(photos) / t_fp32)
        image_ratio["fp32"].append(t_up / t_fp32)
        if with_bf16:
            t_bf16, _ = timed(lambda: bf16.get_image_embedding_batch(photos))
            rates["bf16"].append(len(photos) / t_bf16)
            image_ratio["bf16"].append(t_up / t_bf16)
        measure_limits(auto, photos, limits)

        some = texts[: args.upstream_texts]
        t_up_text, _ = timed(lambda some=some: [upstream.get_text_embedding(t) for t in some])
        t_ours_text, _ = timed(lambda: auto.get_text_embedding_batch(texts))
        up_rate, our_rate = len(some) / t_up_text, len(texts) / t_ours_text
        text_batch_ratio.append(our_rate / up_rate)

        ups, ours = [], []
        for i in range(args.queries):
            q = QUERIES[i % len(QUERIES)]
            ups.append(timed(lambda q=q: upstream.get_query_embedding(q))[0] * 1000)
            ours.append(timed(lambda q=q: auto.get_query_embedding(q))[0] * 1000)
        query_p50["upstream"].append(percentile(ups, 50))
        query_p50["ours"].append(percentile(ours, 50))
        query_ratio.append(percentile(ours, 50) / percentile(ups, 50))
        tokenizing.append(tokenizer_round(texts, round_, args.queries))
        for suffix, files in (("", photos), (" big", big)):
            ups, ours = [], []
            for i in range(min(args.queries, 12)):
                path = files[i % len(files)]
                ups.append(timed(lambda p=path: upstream.get_image_embedding(p))[0] * 1000)
                ours.append(timed(lambda p=path: auto.get_image_embedding(p))[0] * 1000)
            image_p50["up" + suffix].append(percentile(ups, 50))
            image_p50["ours" + suffix].append(percentile(ours, 50))
        bf16_rate = f"{rates['bf16'][-1]:.1f}" if with_bf16 else "-"
        print(
            f"round {round_ + 1}: images/s upstream {rates['upstream'][-1]:.1f}, "
            f"fp32 {rates['fp32'][-1]:.1f}, bf16 {bf16_rate}; "
            f"texts/s upstream {up_rate:.1f}, ours (batch of {len(texts)}) {our_rate:.1f}; "
            f"query p50 {query_p50['upstream'][-1]:.1f} vs {query_p50['ours'][-1]:.1f} ms"
        )

    print("\nsummary over rounds")
    print(
        f"image ingestion speed-up, fp32 batched+prefetch: {spread(image_ratio['fp32'])}x "
        f"(target >= 1.5x on an fp32-only CPU)"
    )
    if with_bf16:
        print(
            f"image ingestion speed-up, bf16 batched+prefetch: {spread(image_ratio['bf16'])}x "
            f"(target >= 5x where the CPU has native bf16)"
        )
        print(f"bf16 images/s: {spread(rates['bf16'])}")
    print(f"images/s: upstream {spread(rates['upstream'])}, fp32 {spread(rates['fp32'])}")
    print_limits(limits, rates["upstream"])
    print(
        f"{len(texts)}-text batch throughput vs upstream: {spread(text_batch_ratio)}x "
        f"(target >= 10x)"
    )
    print(
        f"single query p50 ratio ours/upstream: {spread(query_ratio)} (target <= 0.4); "
        f"p50 ms upstream {statistics.median(query_p50['upstream']):.1f}, "
        f"ours {statistics.median(query_p50['ours']):.1f}"
    )
    for suffix, size in (("", "640x480"), (" big", "4000x3000")):
        ours, up = image_p50["ours" + suffix], image_p50["up" + suffix]
        ratio = [o / u for o, u in zip(ours, up, strict=True)]
        print(
            f"one image query ({size} JPEG), p50: ours {spread(ours)} ms, upstream "
            f"{spread(up)} ms, ratio {spread(ratio)}"
        )
    print_tokenizer(tokenizing, len(texts))


if __name__ == "__main__":
    with tempfile.TemporaryDirectory():
        main()
