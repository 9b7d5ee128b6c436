"""FastClipEmbedding: CLIP text and image vectors for LlamaIndex, batched, normalised, lazy."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from llama_index.core.base.embeddings.base import Embedding
from llama_index.core.bridge.pydantic import Field, PrivateAttr, field_validator
from llama_index.core.embeddings.multi_modal_base import MultiModalEmbedding
from llama_index.core.schema import ImageType
from PIL import Image

from .._util import chunks, prefetch
from ..images.decode import (
    DEFAULT_MAX_PIXELS,
    open_working_image,
    to_rgb,
    working_image,
)
from ..memory import release_free_memory
from ..options import DEFAULT_CLIP_MODEL
from ..redaction import package_logger
from .checkpoint import (
    Tower,
    load_clip,
    load_towers,
    read_state_dict,
)
from .image_tower import encode_images, pack_image_tower
from .precision import Precision, cast_weights, is_vit, pick_dtype, unit_rows
from .text_tower import Fp16TextWeights, PackedBlocks, encode_text
from .tokenizer import tokenize_batch
from .weights import MODELS, ClipWeightsUnavailableError, checkpoint_path, weights_unavailable

logger = package_logger(__name__)

CLIP_CONTEXT_LENGTH = 77


class FastClipEmbedding(MultiModalEmbedding):
    """CLIP text and image embeddings with real batching, for any LlamaIndex component that
    takes a ``MultiModalEmbedding``.

    Differences from upstream ``ClipEmbedding`` (llama-index-embeddings-clip), which runs
    OpenAI's ``clip`` package (and torchvision) one item per forward pass:

    - the model loads on first use, not in the constructor;
    - images and texts run in batches under ``torch.inference_mode``, with image decoding
      and preprocessing of the next batch overlapped with the model on the current one;
    - texts are padded only to the longest sequence in their batch (exact for CLIP: the
      text tower is causal and pools at the end token) and truncated to CLIP's 77 tokens
      with a logged warning instead of a RuntimeError;
    - vectors are L2-normalised, so cosine == inner product;
    - ``device`` and ``precision`` are explicit: ``auto`` is fp16 on CUDA, bf16 on CPUs
      with native bf16 (checked, not assumed), fp32 otherwise.

    Example:
        >>> embed = FastClipEmbedding(model_name="ViT-B/32")  # nothing loaded yet
        >>> vectors = embed.get_image_embedding_batch(["a.png", "b.jpg"])  # doctest: +SKIP
        >>> query = embed.get_query_embedding("a system architecture diagram")  # doctest: +SKIP

    Raises (on first use):
        ClipWeightsUnavailableError: the weights cannot be downloaded or read.
        ValueError: ``model_name`` is neither a known CLIP name nor an existing file.
    """

    embed_batch_size: int = Field(default=32, gt=0, le=4096, description="Items per forward.")
    device: str | None = Field(
        default=None, description="cpu, cuda, cuda:N or mps; None picks cuda when available."
    )
    precision: Precision = Field(
        default="auto", description="auto (fp16 on CUDA, bf16 on bf16 CPUs, else fp32)."
    )
    download_root: str | None = Field(
        default=None, description="Where named models are downloaded (default ~/.cache/clip)."
    )
    max_pixels: int = Field(
        default=DEFAULT_MAX_PIXELS, gt=0, description="Refuse larger images (bombs)."
    )
    fp16_query_weights: bool = Field(
        default=True,
        description=(
            "On a CPU in fp32, embed text with fp16 copies of the text weights: queries "
            "(batches of at most 64 tokens; ~2x faster, cosine to fp32 weights >= 0.9999), "
            "and every batch when the weights are fp16 values anyway, as in OpenAI's "
            "checkpoints (exact, and faster). False: fp32 weights only."
        ),
    )
    fp16_image_weights: bool = Field(
        default=True,
        description=(
            "On a CPU in fp32, keep the image tower's matrices as fp16 only, where that "
            "loses nothing (every value is an fp16 value, as in OpenAI's checkpoints): "
            "the same vectors at half the memory (-170 MB for ViT-B/32), and faster. "
            "Other checkpoints keep fp32. False: fp32 always."
        ),
    )

    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _model: Any = PrivateAttr(default=None)
    _preprocess: Any = PrivateAttr(default=None)
    _device: Any = PrivateAttr(default=None)
    _dtype: Any = PrivateAttr(default=None)
    _fp16_text: Fp16TextWeights | None = PrivateAttr(default=None)
    _fp16_text_packed: bool = PrivateAttr(default=False)
    _fp16_image: PackedBlocks | None = PrivateAttr(default=None)
    _towers: set[str] = PrivateAttr(default_factory=set)
    _path: str | None = PrivateAttr(default=None)

    def __init__(
        self,
        *,
        model_name: str = DEFAULT_CLIP_MODEL,
        embed_batch_size: int = 32,
        device: str | None = None,
        precision: Precision = "auto",
        download_root: str | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        fp16_query_weights: bool = True,
        fp16_image_weights: bool = True,
        **kwargs: Any,
    ) -> None:
        if model_name not in MODELS and os.path.isfile(os.path.expanduser(model_name)):
            # A checkpoint path is kept absolute: an index records it, and a search from
            # another folder must find (and compare) the same file.
            model_name = os.path.abspath(os.path.expanduser(model_name))
        super().__init__(  # type: ignore[call-arg]  # our fields, declared above
            model_name=model_name,
            embed_batch_size=embed_batch_size,
            device=device,
            precision=precision,
            download_root=download_root,
            max_pixels=max_pixels,
            fp16_query_weights=fp16_query_weights,
            fp16_image_weights=fp16_image_weights,
            **kwargs,
        )
        if precision == "fp16" and device is not None and device.startswith("cpu"):
            raise ValueError("precision='fp16' needs a GPU; on cpu use 'fp32' or 'bf16'.")

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str | None) -> str | None:
        if value is None:
            return None
        base = value.split(":", 1)[0]
        if base not in ("cpu", "cuda", "mps"):
            raise ValueError(f"device={value!r} is not one of cpu, cuda, cuda:N, mps.")
        return value

    @classmethod
    def class_name(cls) -> str:
        return "FastClipEmbedding"

    # -- loading -------------------------------------------------------------------------

    @property
    def is_loaded(self) -> bool:
        return self._model is not None

    @property
    def loaded_towers(self) -> frozenset[str]:
        """The towers holding weights: "visual" once images were embedded, "text" once
        texts were. Each loads on first use, so ingestion never holds the text tower."""
        return frozenset(self._towers)

    @property
    def embed_dim(self) -> int:
        """Vector size (512 for ViT-B/32); reads the checkpoint, loads no tower."""
        self._ensure_loaded(None)
        assert self._model is not None
        return int(self._model.text_projection.shape[1])

    @property
    def resolved_device(self) -> str:
        self._ensure_loaded(None)
        return str(self._device)

    @property
    def resolved_precision(self) -> str:
        self._ensure_loaded(None)
        import torch

        return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self._dtype]

    def _ensure_loaded(self, tower: Tower | None) -> None:
        """Read the checkpoint once, and give the model ``tower``'s weights (None: none)."""
        if self._model is not None and (tower is None or tower in self._towers):
            return
        with self._lock:
            if self._model is None:
                self._load(tower)
            elif tower is not None and tower not in self._towers:
                self._load_tower(tower)

    def _load(self, tower: Tower | None) -> None:
        import torch

        device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        name = self.model_name
        known = list(MODELS)
        if name not in known and not os.path.isfile(name):
            raise ValueError(
                f"CLIP model {name!r} is neither a known name ({', '.join(known)}) nor an "
                "existing checkpoint file; pass one of those names or a local checkpoint path."
            )
        if not os.path.isfile(name):
            logger.info("Loading CLIP %s (downloaded once to %s)", name, self.download_root)
        try:
            path = checkpoint_path(name, self.download_root)
            towers = (tower,) if tower is not None else ()
            model, preprocess = load_clip(path, device=device, towers=towers)
        except (OSError, RuntimeError, EOFError, KeyError) as exc:
            raise self._unavailable(exc) from exc
        dtype = self._pick_dtype(device)
        self._preprocess = preprocess
        self._device = device
        self._dtype = dtype
        self._path = path
        # Last: _ensure_loaded's lock-free check reads _model, then uses the fields above
        # (decode threads call model_sized while the first of them loads).
        self._model = cast_weights(model, dtype).eval()
        if tower is not None:
            self._towers.add(tower)
        if tower == "visual":
            self._pack_image_tower()
        release_free_memory()  # the checkpoint's stored copy, freed in pieces
        logger.info("Loaded CLIP %s on %s (%s), towers: %s", name, device, dtype, towers)

    def _load_tower(self, tower: Tower) -> None:
        assert self._path is not None
        try:
            state = read_state_dict(self._path)
            load_towers(self._model, state, (tower,), device=self._device, name=self.model_name)
        except (OSError, RuntimeError, EOFError, KeyError) as exc:
            raise self._unavailable(exc) from exc
        cast_weights(self._model, self._dtype)
        self._towers.add(tower)
        if tower == "visual":
            self._pack_image_tower()
        release_free_memory()
        logger.info("Loaded the %s tower of CLIP %s", tower, self.model_name)

    def _pack_image_tower(self) -> None:
        """fp16-only image matrices on a CPU in fp32, where exact (see clip_image.py)."""
        import torch

        if (
            self.fp16_image_weights
            and self._device == "cpu"
            and self._dtype == torch.float32
            and is_vit(self._model)
        ):
            self._fp16_image = pack_image_tower(self._model)

    def _unavailable(self, exc: BaseException) -> ClipWeightsUnavailableError:
        return weights_unavailable(self.model_name, exc)

    def _pick_dtype(self, device: str) -> Any:
        return pick_dtype(self.precision, device)

    # -- text --------------------------------------------------------------------------

    def _get_query_embedding(self, query: str) -> Embedding:
        return self._get_text_embeddings([query])[0]

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._get_text_embeddings([text])[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        if not texts:
            return []
        self._ensure_loaded("text")
        tokens = self._tokenize(texts)
        lengths = tokens.argmax(dim=-1) + 1  # the end token has the largest id
        # Sort by length so that each batch pads to a similar length; undo afterwards.
        order = sorted(range(len(texts)), key=lambda i: int(lengths[i]))
        out: list[Embedding] = [[] for _ in texts]
        for start in range(0, len(order), self.embed_batch_size):
            idx = order[start : start + self.embed_batch_size]
            width = int(max(lengths[i] for i in idx))
            vectors = self._encode_text(tokens[idx, :width])
            for i, vector in zip(idx, vectors, strict=True):
                out[i] = vector
        return out

    def _tokenize(self, texts: Sequence[str]) -> Any:
        return tokenize_batch(texts, CLIP_CONTEXT_LENGTH)

    def _encode_text(self, tokens: Any) -> list[Embedding]:
        """CLIP's text tower over ``tokens`` padded to their own length, not to 77."""
        import torch

        model = self._model
        assert model is not None
        with torch.inference_mode():
            fp16 = self._fp16_text_weights()
            if fp16 is not None and not fp16.use_for(tokens.numel()):
                fp16 = None
            return unit_rows(encode_text(model, tokens.to(self._device), self._dtype, fp16))

    def _fp16_text_weights(self) -> Fp16TextWeights | None:
        """The fp16 copies for small text batches, packed on first use; None when off."""
        import torch

        if not self.fp16_query_weights or self._device != "cpu" or self._dtype != torch.float32:
            return None
        if not self._fp16_text_packed:
            with self._lock:
                if not self._fp16_text_packed:
                    self._fp16_text = Fp16TextWeights.pack(self._model)
                    self._fp16_text_packed = True
        return self._fp16_text

    # -- images ------------------------------------------------------------------------

    def _get_image_embedding(self, img_file_path: ImageType) -> Embedding:
        return self._get_image_embeddings([img_file_path])[0]

    def _get_image_embeddings(self, img_file_paths: list[ImageType]) -> list[Embedding]:
        """Embed image files (paths or file-like objects); a bad file raises ImageLoadError."""
        return self.embed_pil_batches(chunks(list(img_file_paths), self.embed_batch_size))

    def embed_pil_batches(self, batches: Iterator[list[Any]]) -> list[Embedding]:
        """Embed batches of images (PIL images, paths or file objects), prefetching.

        The next batch is decoded and preprocessed on a worker thread while the model
        runs on the current one.
        """
        self._ensure_loaded("visual")
        out: list[Embedding] = []
        for tensor in prefetch(batches, self._prepare_batch):
            out.extend(self._encode_images(tensor))
        return out

    def model_sized(self, img: Image.Image) -> Image.Image:
        """``img`` (RGB, at the working size) resized and cropped as CLIP's preprocessing
        does before it makes a tensor: 224 x 224 for ViT-B/32, ~150 KB however large the
        photo. Preprocessing the result again changes nothing (resizing and cropping to
        the size an image has is the identity), so ingestion calls this on its decode
        thread and holds small images, not decoded photos, until the forward pass."""
        self._ensure_loaded(None)
        preprocess = self._preprocess
        assert preprocess is not None
        return preprocess.resize_and_crop(img)

    def _prepare_batch(self, items: list[Any]) -> Any:
        import torch

        preprocess = self._preprocess
        assert preprocess is not None
        batch = None
        for i, item in enumerate(items):  # filled in place: no second copy from a stack
            pixels = preprocess(self._as_rgb(item))
            if batch is None:
                batch = torch.empty((len(items), *pixels.shape), dtype=pixels.dtype)
            batch[i] = pixels
        assert batch is not None, "no images in the batch"
        return batch

    def _as_rgb(self, item: Any) -> Image.Image:
        """An image input (PIL image, path, bytes, file object) as RGB at the working size
        (images.WORKING_SIDE), decoded as ingestion decodes: same pixels, same vector."""
        if isinstance(item, Image.Image):
            return working_image(to_rgb(item))
        return open_working_image(item, max_pixels=self.max_pixels)

    def _encode_images(self, pixels: Any) -> list[Embedding]:
        assert self._model is not None
        return unit_rows(
            encode_images(self._model, pixels, self._device, self._dtype, self._fp16_image)
        )

    # -- async: the same code on a worker thread, so the event loop is never blocked ----

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return await asyncio.to_thread(self._get_query_embedding, query)

    async def _aget_text_embedding(self, text: str) -> Embedding:
        return await asyncio.to_thread(self._get_text_embedding, text)

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return await asyncio.to_thread(self._get_text_embeddings, texts)

    async def _aget_image_embedding(self, img_file_path: ImageType) -> Embedding:
        return await asyncio.to_thread(self._get_image_embedding, img_file_path)

    async def _aget_image_embeddings(self, img_file_paths: list[ImageType]) -> list[Embedding]:
        return await asyncio.to_thread(self._get_image_embeddings, img_file_paths)
