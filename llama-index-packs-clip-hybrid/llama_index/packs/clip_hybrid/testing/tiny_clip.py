"""A tiny, seeded, real CLIP checkpoint for tests.

The checkpoint is the CLIP architecture (``clip/model.py``, the parameter names of
OpenAI's checkpoints) with small widths and layers, traced and saved as a TorchScript
archive like OpenAI's, so that the upstream loading path (``clip.load(path)`` and
``ClipEmbedding(model_name=path)``) reads it unchanged. A plain ``torch.save(state_dict)``
file would not load there: ``clip.load`` retries a failed TorchScript load on the same,
un-rewound file handle.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class TinyClipConfig:
    """Shapes of the tiny model; a loader infers all of them back from the weights."""

    embed_dim: int = 32
    image_resolution: int = 32
    vision_layers: int = 2
    vision_width: int = 64
    vision_patch_size: int = 8
    # The tokenizer always pads to 77 and has a fixed 49408-token vocabulary.
    context_length: int = 77
    vocab_size: int = 49408
    transformer_width: int = 64
    transformer_heads: int = 1
    transformer_layers: int = 2


def make_tiny_clip_checkpoint(
    path: str | os.PathLike[str],
    *,
    seed: int = 0,
    config: TinyClipConfig | None = None,
    half: bool = False,
) -> Path:
    """Write a seeded tiny CLIP TorchScript checkpoint to ``path`` and return it.

    The same seed and config always give the same weights. The file is ~14 MB (the
    49408 x 64 token table dominates): build it once per test session, never commit it.
    ``half=True`` stores fp16 weights, as OpenAI's published checkpoints do.

    Example:
        >>> from llama_index.embeddings.clip import ClipEmbedding
        >>> ckpt = make_tiny_clip_checkpoint("/tmp/tiny-clip.pt")
        >>> ClipEmbedding(model_name=str(ckpt)).get_text_embedding("a diagram")  # doctest: +SKIP
    """
    import torch
    from llama_index.packs.clip_hybrid.clip.model import ClipShapes, build_clip

    cfg = config or TinyClipConfig()
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)

    # Seed a private generator state so that callers' global RNG streams stay untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        shapes = ClipShapes(
            embed_dim=cfg.embed_dim,
            image_resolution=cfg.image_resolution,
            vision_layers=cfg.vision_layers,
            vision_width=cfg.vision_width,
            vision_patch_size=cfg.vision_patch_size,
            context_length=cfg.context_length,
            vocab_size=cfg.vocab_size,
            text_width=cfg.transformer_width,
            text_heads=cfg.transformer_heads,
            text_layers=cfg.transformer_layers,
        )
        model = build_clip(shapes, initialize=True).float().eval()
        image = torch.rand(1, 3, cfg.image_resolution, cfg.image_resolution)
        text = torch.randint(1, cfg.vocab_size - 1, (1, cfg.context_length))
        with torch.no_grad():
            # With random weights the constant class and position embeddings dominate every
            # image vector (pairwise cosine ~0.95); zeroing them lets the pixels decide
            # (pairwise ~0.67), so that retrieval tests can tell images apart.
            visual: Any = model.visual
            visual.class_embedding.zero_()
            visual.positional_embedding.zero_()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # jit deprecation, tracer notes
                traced = torch.jit.trace(model, (image, text), check_trace=False)
        if half:  # stored as fp16, like OpenAI's published checkpoints
            traced = traced.half()

    # Write atomically: parallel test workers may build the same file.
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=".tiny-clip-", suffix=".pt")
    os.close(fd)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            torch.jit.save(traced, tmp_name)
        os.replace(tmp_name, target)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    return target
