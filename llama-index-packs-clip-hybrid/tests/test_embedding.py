"""FastClipEmbedding against the upstream per-item ClipEmbedding path."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
from llama_index.embeddings.clip import ClipEmbedding
from llama_index.packs.clip_hybrid import ClipWeightsUnavailableError, FastClipEmbedding
from llama_index.packs.clip_hybrid.clip.checkpoint import load_clip
from llama_index.packs.clip_hybrid.testing.tiny_clip import make_tiny_clip_checkpoint
from PIL import Image

TEXTS = [
    "a",
    "system architecture diagram",
    "a bar chart of quarterly revenue with seven bars and a title",
    "mountains at sunset",
]


def _unit(rows) -> np.ndarray:  # type: ignore[no-untyped-def]
    arr = np.asarray(rows, dtype=np.float64)
    return arr / np.linalg.norm(arr, axis=1, keepdims=True)


def test_is_a_multimodal_embedding_and_loads_lazily(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from llama_index.core.embeddings.multi_modal_base import MultiModalEmbedding

    missing = tmp_path / "not-there.pt"
    embed = FastClipEmbedding(model_name=str(missing))  # no I/O, no error yet
    assert isinstance(embed, MultiModalEmbedding)
    assert not embed.is_loaded
    with pytest.raises(ValueError, match=r"neither a known name .* nor an existing checkpoint"):
        embed.get_text_embedding("x")


def test_images_match_upstream_per_item_path(fast_clip, tiny_clip_embedding, sample_images) -> None:  # type: ignore[no-untyped-def]
    paths = [str(s.path) for s in sample_images]
    upstream = _unit([tiny_clip_embedding.get_image_embedding(p) for p in paths])
    ours = np.asarray(fast_clip.get_image_embedding_batch(paths))
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    assert (upstream * ours).sum(axis=1).min() >= 0.999


def test_texts_padded_to_their_batch_match_upstream(fast_clip, tiny_clip_embedding) -> None:  # type: ignore[no-untyped-def]
    upstream = _unit([tiny_clip_embedding.get_text_embedding(t) for t in TEXTS])
    # 40 texts of 3-15 tokens: batches of mixed lengths, each pooled at its own end token.
    many = [TEXTS[(i * 3) % len(TEXTS)] for i in range(40)]
    ours = np.asarray(fast_clip.get_text_embedding_batch(many))
    expected = upstream[[(i * 3) % len(TEXTS) for i in range(40)]]
    assert (expected * ours).sum(axis=1).min() >= 0.999
    # Order is preserved although batches are sorted by length internally.
    alone = np.asarray([fast_clip.get_query_embedding(t) for t in many[:8]])
    assert (alone * ours[:8]).sum(axis=1).min() >= 0.9999


def test_queries_use_fp16_weights(tiny_clip_checkpoint, fast_clip, tiny_clip_embedding) -> None:  # type: ignore[no-untyped-def]
    """A query (a few tokens) multiplies by fp16 copies of the weights on a CPU in fp32."""
    plain = FastClipEmbedding(
        model_name=str(tiny_clip_checkpoint), precision="fp32", fp16_query_weights=False
    )
    for text in TEXTS:
        upstream = _unit([tiny_clip_embedding.get_query_embedding(text)])[0]
        fast = np.asarray(fast_clip.get_query_embedding(text))
        exact = np.asarray(plain.get_query_embedding(text))
        assert not np.array_equal(fast, exact), "the fp16 copies were not used"
        assert fast @ exact >= 0.9999
        assert fast @ upstream >= 0.9999


def test_checkpoints_stored_in_fp16_load_and_embed(tmp_path, fast_clip) -> None:  # type: ignore[no-untyped-def]
    """OpenAI publishes fp16 weights; they compute in fp32 on a CPU, as upstream does."""
    half = make_tiny_clip_checkpoint(tmp_path / "half.pt", seed=0, half=True)
    embed = FastClipEmbedding(model_name=str(half))
    assert embed.resolved_precision in ("fp32", "bf16")
    ours = np.asarray(embed.get_text_embedding_batch(TEXTS))
    upstream = _unit([ClipEmbedding(model_name=str(half)).get_text_embedding(t) for t in TEXTS])
    assert (ours * upstream).sum(axis=1).min() >= 0.999
    # The same seed in fp32: the fp16 rounding of the weights is all that differs.
    assert (ours * np.asarray(fast_clip.get_text_embedding_batch(TEXTS))).sum(axis=1).min() >= 0.99


def test_text_batches_use_fp16_copies_where_exact(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """With fp16-valued weights (OpenAI's checkpoints) every text batch runs on the fp16
    copies, not only queries: the same vectors up to summation order.

    Which kernels ran is read from torch's profiler: on some CPUs the fp16 kernel sums a
    tiny tower's rows in the fp32 kernel's order, so equal vectors prove nothing."""
    from torch.profiler import ProfilerActivity, profile

    half = str(make_tiny_clip_checkpoint(tmp_path / "half.pt", seed=6, half=True))
    many = [TEXTS[i % len(TEXTS)] + f" {i}" for i in range(24)]  # > 64 token rows a batch
    fast = FastClipEmbedding(model_name=half, precision="fp32")
    plain = FastClipEmbedding(model_name=half, precision="fp32", fp16_query_weights=False)

    def fp16_calls(embed: FastClipEmbedding) -> tuple[np.ndarray, int]:
        embed.get_text_embedding("warm up")  # loads and packs outside the profile
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            vectors = np.asarray(embed.get_text_embedding_batch(many))
        return vectors, sum("linear_dynamic_fp16" in e.name for e in prof.events())

    (ours, used), (exact, unused) = fp16_calls(fast), fp16_calls(plain)
    assert used > 0, "the fp16 copies were not used"
    assert unused == 0
    assert (ours * exact).sum(axis=1).min() >= 0.99999


def test_image_tower_keeps_fp16_matrices_only_where_exact(
    tmp_path, tiny_clip_checkpoint, sample_images
) -> None:  # type: ignore[no-untyped-def]
    """On a CPU in fp32 an fp16-stored checkpoint's image matrices live as fp16 only
    (half the memory); the vectors are upstream's. fp32 checkpoints keep fp32."""
    half = str(make_tiny_clip_checkpoint(tmp_path / "half.pt", seed=5, half=True))
    paths = [str(s.path) for s in sample_images]

    def matrix_bytes(embed: FastClipEmbedding) -> int:
        visual = embed._model.visual
        return sum(p.numel() * p.element_size() for p in visual.transformer.parameters())

    packed = FastClipEmbedding(model_name=half, precision="fp32")
    plain = FastClipEmbedding(model_name=half, precision="fp32", fp16_image_weights=False)
    ours = np.asarray(packed.get_image_embedding_batch(paths))
    exact = np.asarray(plain.get_image_embedding_batch(paths))
    upstream = _unit([ClipEmbedding(model_name=half).get_image_embedding(p) for p in paths])
    assert matrix_bytes(packed) < 0.1 * matrix_bytes(plain), "fp32 matrices still held"
    assert (ours * exact).sum(axis=1).min() >= 0.99999
    assert (ours * upstream).sum(axis=1).min() >= 0.9999
    # A query image goes through the same tower.
    assert np.asarray(packed.get_image_embedding(paths[0])) @ ours[0] >= 0.99999

    fp32 = FastClipEmbedding(model_name=str(tiny_clip_checkpoint), precision="fp32")
    fp32.get_image_embedding_batch(paths[:2])
    kept = FastClipEmbedding(
        model_name=str(tiny_clip_checkpoint), precision="fp32", fp16_image_weights=False
    )
    kept.get_image_embedding_batch(paths[:2])
    assert matrix_bytes(fp32) == matrix_bytes(kept), "fp32 values would have been rounded"


def test_loads_the_same_model_as_clip_load(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """One copy of the weights at a time, but the very model clip.load builds."""
    import clip
    import torch

    half = str(make_tiny_clip_checkpoint(tmp_path / "half.pt", seed=3, half=True))
    theirs, their_preprocess = clip.load(half, device="cpu", jit=False)
    ours, our_preprocess = load_clip(half, device="cpu")
    their_state, our_state = theirs.state_dict(), ours.state_dict()
    assert our_state.keys() == their_state.keys()
    for key, value in their_state.items():
        assert our_state[key].dtype == value.dtype and torch.equal(our_state[key], value), key
    # The transform is clip's, without torchvision: the same tensors, bit for bit, for
    # every shape (wider, taller, square, already at size, smaller) and mode.
    rng = np.random.default_rng(0)
    side = ours.visual.input_resolution
    for width, height, mode in [
        (97, 41, "RGB"),
        (41, 97, "RGB"),
        (64, 64, "L"),
        (side, side, "RGB"),
        (side, side + 7, "RGBA"),
        (side - 9, side - 20, "P"),
        (1, 300, "RGB"),
    ]:
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        img = Image.fromarray(pixels).convert(mode)
        assert torch.equal(our_preprocess(img), their_preprocess(img)), (width, height, mode)
    # The text tower's causal mask (not part of the state) is rebuilt: upstream's own
    # encode_text runs on our model and agrees.
    tokens = clip.tokenize(TEXTS)
    with torch.no_grad():
        assert torch.allclose(ours.encode_text(tokens), theirs.encode_text(tokens), atol=1e-6)


def test_loading_and_embedding_import_neither_clip_nor_torchvision_nor_dynamo(  # type: ignore[no-untyped-def]
    tmp_path, tiny_clip_checkpoint
) -> None:
    """``import clip`` pulls in torchvision, and through it torch._dynamo, sympy and triton
    (~150 MB, ~10 s); CLIP on meta tensors pulls in the last three (checkpoint.py). A
    fresh process embeds a text and an image without any of them: the model is our own
    code (clip/model.py), and the model pickled there loads here, by its module's name."""
    import pickle

    import torch

    code = (
        "import pickle, sys\n"
        "from PIL import Image\n"
        "from llama_index.packs.clip_hybrid import FastClipEmbedding\n"
        f"embed = FastClipEmbedding(model_name={str(tiny_clip_checkpoint)!r})\n"
        "assert len(embed.get_text_embedding('a photo of a cat')) == embed.embed_dim\n"
        "embed.get_image_embedding_batch([Image.new('RGB', (50, 40), 'red')])\n"
        "heavy = ('clip', 'torchvision', 'torch._dynamo', 'sympy', 'triton')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
        f"with open({str(tmp_path / 'model.pkl')!r}, 'wb') as fh:\n"
        "    pickle.dump(embed._model, fh)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", out.stdout
    with open(tmp_path / "model.pkl", "rb") as fh:
        model = pickle.load(fh)
    assert type(model).__module__ == "llama_index.packs.clip_hybrid.clip.model"
    assert model.token_embedding.weight.shape[1] == model.transformer.width
    assert torch.isfinite(model.token_embedding.weight).all()


def test_published_names_are_clips_and_downloads_are_checked(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The names and URLs are clip's; a file whose SHA256 is the one in its URL is used as
    it is; any other is fetched again (here from a server on loopback), and a download
    whose digest does not match leaves nothing behind."""
    import http.server
    import threading

    import clip
    from llama_index.packs.clip_hybrid.clip import weights

    assert weights.MODELS == clip.clip._MODELS
    body = b"not really a checkpoint"
    served: list[bytes] = [body]
    requests: list[str] = []

    class Serve(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            requests.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", str(len(served[0])))
            self.end_headers()
            self.wfile.write(served[0])

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Serve)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        digest = hashlib.sha256(body).hexdigest()
        url = f"http://127.0.0.1:{server.server_address[1]}/models/{digest}/Tiny.pt"
        monkeypatch.setattr(weights, "MODELS", {"Tiny": url})
        target = tmp_path / "Tiny.pt"
        target.write_bytes(body)
        assert weights.download("Tiny", str(tmp_path)) == str(target)
        assert requests == []  # verified: not fetched
        target.write_bytes(body + b"!")  # damaged: fetched again and replaced
        assert weights.download("Tiny", str(tmp_path)) == str(target)
        assert target.read_bytes() == body and len(requests) == 1
        served[0] = b"something else"  # the server sends other bytes: refused
        target.unlink()
        with pytest.raises(OSError, match="SHA256"):
            weights.download("Tiny", str(tmp_path))
        assert sorted(p.name for p in tmp_path.iterdir()) == []
    finally:
        server.shutdown()


def test_tokenizer_gives_clips_ids(fast_clip) -> None:  # type: ignore[no-untyped-def]
    """Our tokenizer against OpenAI's on 10,000 strings: English, Chinese, emoji, digits,
    HTML entities, broken encodings, long and empty-ish strings."""
    import random

    from clip.simple_tokenizer import SimpleTokenizer
    from llama_index.packs.clip_hybrid.clip.tokenizer import clip_tokenizer, tokenize_batch

    rng = random.Random(0)
    words = [
        "system",
        "architecture",
        "diagram",
        "Quarterly",
        "revenue",
        "2023",
        "09:30",
        "don't",
        "we'll",
        "naïve",
        "café",
        "ÆON",
        "über",
        "系统架构图",
        "数据库",
        "缓存",
        "東京",
        "こんにちは",
        "안녕하세요",
        "😀",
        "🚀🔥",
        "&amp;",
        "&lt;b&gt;",
        "Ã©",
        "â€™",
        "...",
        "--",
        "#1",
        "C++",
        "e-mail",
        "http://x.y/z?q=1",
        "\t",
        "\n",
        "  ",
        "",
        "ﬁne",
        "Ⅻ",
        "½",
        "١٢٣",
        "Привет",
        "Ωmega",
        "x" * 80,
    ]
    corpus = ["", " ", "\n\t ", "a" * 500, "系统" * 100]
    for _ in range(10_000 - len(corpus)):
        corpus.append(" ".join(rng.choice(words) for _ in range(rng.randint(1, 12))))
    theirs = SimpleTokenizer()
    ours = clip_tokenizer()
    expected = [theirs.encode(text) for text in corpus]
    pairs = zip(corpus, expected, strict=True)
    mismatched = [text for text, ids in pairs if ours.encode(text) != ids]
    assert mismatched == []
    # In one batch (ASCII and other text merged in separate compiled calls, then put back
    # in order) and as the model's rows.
    assert ours.encode_batch(corpus) == expected
    rows = tokenize_batch([*corpus[:200], "a" * 500], 77)
    sot, eot = theirs.encoder["<|startoftext|>"], theirs.encoder["<|endoftext|>"]
    for row, ids in zip(rows.tolist(), [*expected[:200], theirs.encode("a" * 500)], strict=True):
        ids = [sot, *ids[:75], eot]
        assert row == ids + [0] * (77 - len(ids))
    assert (ours.start_id, ours.end_id) == (sot, eot)


def test_tokenizer_gives_clips_ids_on_every_character() -> None:
    """Every ASCII character, in random strings (plain ASCII skips ftfy and is split by the
    compiled tokenizer's regex engine), every 3rd code point of Unicode's first four planes
    alone and between letters and digits (the compiled engine's Unicode is older: such text
    is split with ``regex``), and the special tokens written out in text."""
    import random

    from clip.simple_tokenizer import SimpleTokenizer
    from llama_index.packs.clip_hybrid.clip.tokenizer import clip_tokenizer

    rng = random.Random(1)
    ascii_ = [chr(c) for c in range(128)] + ["&amp;", "&lt;", "&#39;", "'s", "'LL", "\x1b[31m"]
    corpus = ["".join(rng.choices(ascii_, k=rng.randint(1, 40))) for _ in range(5000)]
    points = [chr(c) for c in range(0x80, 0x40000, 3) if not 0xD800 <= c < 0xE000]
    corpus += [*points, *(f"ab{p}cd 1{p}2" for p in points[::7])]
    corpus += [
        "<|startoftext|>",
        "a <|endoftext|> b",
        "x<<|endoftext|>y",
        "<|ENDOFTEXT|>系统<|startoftext|>",
        "<|endoftext|><|endoftext|>",
        "lone \ud800 surrogate",
    ]
    theirs = SimpleTokenizer()
    expected = [theirs.encode(text) for text in corpus]
    found = clip_tokenizer().encode_batch(iter(corpus))  # any iterable of texts
    mismatched = [text for text, a, b in zip(corpus, found, expected, strict=True) if a != b]
    assert mismatched == []


def test_tokenizer_names_what_it_cannot_take() -> None:
    from llama_index.packs.clip_hybrid.clip.tokenizer import clip_tokenizer, tokenize_batch

    tokenizer = clip_tokenizer()
    with pytest.raises(TypeError, match="for one text use encode"):
        tokenizer.encode_batch("a photo")  # one string, not three texts of one letter
    with pytest.raises(TypeError, match="Text 1 is a bytes, not a str"):
        tokenizer.encode_batch(["a photo", b"a photo"])
    with pytest.raises(ValueError, match="context_length=1"):
        tokenize_batch(["a photo"], 1)
    assert tokenizer.encode_batch([]) == []
    assert tuple(tokenize_batch([], 77).shape) == (0, 77)


def test_resnet_checkpoints_embed_as_clip_does(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The ResNet image towers (RN50, ...) of a tiny RN checkpoint give clip's vectors."""
    import torch
    from clip.model import build_model
    from llama_index.packs.clip_hybrid.clip.model import ClipShapes, build_clip

    shapes = ClipShapes(
        embed_dim=32,
        image_resolution=64,
        vision_layers=(1, 2, 1, 1),
        vision_width=16,
        vision_patch_size=None,
        context_length=77,
        vocab_size=49408,
        text_width=64,
        text_heads=1,
        text_layers=1,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        model = build_clip(shapes, initialize=True).eval()
        for module in model.visual.modules():  # non-trivial batch-norm statistics
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.data.uniform_(0.5, 1.5)
    # Stored as fp16 values, as OpenAI's checkpoints are (clip rounds matrices to fp16).
    state = {
        k: v.half().float() if v.is_floating_point() else v for k, v in model.state_dict().items()
    }
    assert ClipShapes.from_state_dict(state) == shapes
    path = tmp_path / "rn.pt"
    torch.save(state, path)
    theirs = build_model({k: v.clone() for k, v in state.items()}).float().eval()
    rng = np.random.default_rng(3)
    images = [Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)) for _ in range(3)]
    embed = FastClipEmbedding(model_name=str(path), precision="fp32")
    ours = np.asarray(embed.get_image_embedding_batch(images))
    pixels = torch.stack([embed._preprocess(img) for img in images])
    with torch.no_grad():
        expected = torch.nn.functional.normalize(theirs.encode_image(pixels), dim=-1).numpy()
    assert ours.shape == (3, 32)
    assert (ours * expected).sum(axis=1).min() >= 0.99999


def test_fp32_checkpoints_keep_their_precision(tiny_clip_checkpoint) -> None:  # type: ignore[no-untyped-def]
    """clip.load rounds an fp32 checkpoint's matrices to fp16 (it copies them into an fp16
    model, then calls .float()); here they load as stored."""
    import torch

    stored = torch.jit.load(str(tiny_clip_checkpoint)).state_dict()
    ours = load_clip(str(tiny_clip_checkpoint), device="cpu")[0]
    for key, value in ours.state_dict().items():
        assert torch.equal(value, stored[key].float()), key


def test_each_tower_loads_on_first_use(tiny_clip_checkpoint, fast_clip, sample_images) -> None:  # type: ignore[no-untyped-def]
    """Ingestion holds only the image tower, a text search only the text tower."""
    paths = [str(s.path) for s in sample_images[:4]]
    images_first = FastClipEmbedding(model_name=str(tiny_clip_checkpoint), precision="fp32")
    assert images_first.embed_dim == 32 and images_first.loaded_towers == frozenset()
    vectors = images_first.get_image_embedding_batch(paths)
    assert images_first.loaded_towers == {"visual"}
    assert images_first._model.transformer.resblocks[0].mlp.c_fc.weight.is_meta
    texts = images_first.get_text_embedding_batch(TEXTS)
    assert images_first.loaded_towers == {"visual", "text"}
    assert np.allclose(vectors, fast_clip.get_image_embedding_batch(paths), atol=1e-6)
    assert np.allclose(texts, fast_clip.get_text_embedding_batch(TEXTS), atol=1e-6)

    text_first = FastClipEmbedding(model_name=str(tiny_clip_checkpoint), precision="fp32")
    query = text_first.get_query_embedding(TEXTS[1])
    assert text_first.loaded_towers == {"text"}
    assert text_first._model.visual.conv1.weight.is_meta
    assert np.allclose(query, fast_clip.get_query_embedding(TEXTS[1]), atol=1e-6)
    assert np.allclose(text_first.get_image_embedding_batch(paths), vectors, atol=1e-6)


def test_a_state_dict_checkpoint_loads(tmp_path, tiny_clip_checkpoint, fast_clip) -> None:  # type: ignore[no-untyped-def]
    """torch.save(state_dict) files work here; clip.load fails on them (docs/upstream.md)."""
    import torch

    plain = tmp_path / "state.pt"
    torch.save(torch.jit.load(str(tiny_clip_checkpoint)).state_dict(), plain)
    embed = FastClipEmbedding(model_name=str(plain), precision="fp32")
    assert np.allclose(
        embed.get_text_embedding_batch(TEXTS), fast_clip.get_text_embedding_batch(TEXTS), atol=1e-6
    )
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint at all")
    for path in (other, junk):
        with pytest.raises(ClipWeightsUnavailableError, match=r"Could not read .*nor a CLIP state"):
            FastClipEmbedding(model_name=str(path)).get_text_embedding("x")


def test_bf16_agrees_with_fp32(tiny_clip_checkpoint, fast_clip, sample_images) -> None:  # type: ignore[no-untyped-def]
    bf16 = FastClipEmbedding(model_name=str(tiny_clip_checkpoint), precision="bf16")
    paths = [str(s.path) for s in sample_images[:6]]
    a = np.asarray(bf16.get_image_embedding_batch(paths))
    b = np.asarray(fast_clip.get_image_embedding_batch(paths))
    assert bf16.resolved_precision == "bf16"
    assert (a * b).sum(axis=1).min() >= 0.99
    t = np.asarray(bf16.get_text_embedding_batch(TEXTS))
    u = np.asarray(fast_clip.get_text_embedding_batch(TEXTS))
    assert (t * u).sum(axis=1).min() >= 0.99


def test_long_text_truncates_with_a_warning_where_upstream_raises(
    fast_clip, tiny_clip_embedding, caplog
) -> None:  # type: ignore[no-untyped-def]
    long_text = "word " * 200
    with pytest.raises(RuntimeError, match="too long for context length 77"):
        tiny_clip_embedding.get_text_embedding(long_text)  # upstream #16937
    with caplog.at_level(logging.WARNING):
        vector = fast_clip.get_text_embedding(long_text)
    assert len(vector) == 32
    assert "Truncated 1 of 1 texts" in caplog.text
    # Truncation keeps the first 75 tokens: any longer tail gives the same vector.
    assert np.allclose(vector, fast_clip.get_text_embedding("word " * 300), atol=1e-5)
    chinese = "系统架构图显示了用户登录流程以及数据库缓存队列和网关之间的关系" * 2
    assert len(fast_clip.get_text_embedding(chinese)) == 32


async def test_async_does_not_block_the_event_loop(fast_clip, sample_images) -> None:  # type: ignore[no-untyped-def]
    paths = [str(s.path) for s in sample_images] * 4
    ticks = 0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0.005)

    task = asyncio.create_task(ticker())
    start = time.perf_counter()
    vectors = await fast_clip.aget_image_embedding_batch(paths)
    elapsed = time.perf_counter() - start
    done.set()
    await task
    assert len(vectors) == len(paths)
    assert ticks >= max(2, int(elapsed / 0.005) // 4)  # the loop kept running


def test_download_failure_says_so_and_names_the_option(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # A dead proxy on loopback makes the download fail fast and offline, everywhere.
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    # urlopen builds its global opener (and reads the proxy variables) once, on first use:
    # start from none and put back what was there, or every later urlopen in this process
    # would go through the dead proxy.
    monkeypatch.setattr(urllib.request, "_opener", None)
    embed = FastClipEmbedding(model_name="ViT-B/32", download_root=str(tmp_path))
    with pytest.raises(ClipWeightsUnavailableError) as info:
        embed.get_text_embedding("x")
    message = str(info.value)
    assert message.startswith("Could not download the CLIP weights for 'ViT-B/32'")
    assert "--clip-model PATH" in message and "model_name=" in message


def test_configuration_errors() -> None:
    with pytest.raises(ValueError, match="device='tpu'"):
        FastClipEmbedding(device="tpu")
    with pytest.raises(ValueError, match=r"fp16.*needs a GPU"):
        FastClipEmbedding(device="cpu", precision="fp16")
    with pytest.raises(ValueError):
        FastClipEmbedding(embed_batch_size=0)


def test_model_sized_images_preprocess_to_the_same_pixels(fast_clip, sample_images) -> None:  # type: ignore[no-untyped-def]
    """Ingestion shrinks images to the model's size on its decode thread; the tensor the
    model then sees is the one the whole preprocessing makes from the original."""
    import torch
    from llama_index.packs.clip_hybrid.images.decode import open_working_image

    for sample in sample_images:
        img = open_working_image(sample.path)
        small = fast_clip.model_sized(img.copy())
        side = fast_clip._model.visual.input_resolution
        assert small.size == (side, side)
        assert torch.equal(fast_clip._preprocess(small), fast_clip._preprocess(img))
