"""CaptionBM25Index: BM25 over caption text, persisted beside the Milvus data.

It is LlamaIndex's ``BM25Retriever`` (bm25s) fed with text that :func:`bm25_tokens.tokenize`
has already segmented (jieba for Chinese, stemmed English), read back with the pattern
``\\S+`` and no second stemming, and queried the same way. Rows are keyed by image id.

- Persisted to a folder (bm25s arrays + corpus) plus ``clip_hybrid_bm25.json`` holding the
  tokenizer settings: a process that starts loads it without tokenizing anything.
- bm25s indexes are static; a change rebuilds from the stored segmented text, so only new
  or changed captions are segmented again (jieba is the slow part).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._compat.bm25s_logger import quiet_bm25s_logger
from .._util import user_cache_dir
from ..milvus.captions import CaptionStore
from ..milvus.database import split_credentials
from ..redaction import package_logger
from .tokens import TOKENIZER_SETTINGS, tokenize

logger = package_logger(__name__)

SETTINGS_FILE = "clip_hybrid_bm25.json"
#: Tokens are already segmented: split on whitespace only, stem nothing more.
TOKEN_PATTERN = r"(?u)\S+"


@dataclass(frozen=True)
class CaptionText:
    """One caption to index: the image id, its text and a stamp of its version."""

    image_id: str
    text: str
    stamp: str


class CaptionBM25Index:
    """A bm25s index of captions; :meth:`search` returns (image id, score) pairs."""

    def __init__(self, retriever: Any | None, stamps: dict[str, str], segmented: dict[str, str]):
        self._retriever = retriever
        self.stamps = stamps
        self._segmented = segmented
        #: The image id of each bm25s document, in bm25s' order (see :meth:`_document_ids`).
        self._ids: np.ndarray | None = None
        self._indexed = sum(1 for text in segmented.values() if text)

    def __len__(self) -> int:
        return len(self.stamps)

    @classmethod
    def build(
        cls, captions: Iterable[CaptionText], previous: CaptionBM25Index | None = None
    ) -> CaptionBM25Index:
        """Index ``captions``, re-using ``previous``'s segmentation of unchanged ones."""
        from llama_index.core.schema import TextNode

        stamps: dict[str, str] = {}
        segmented: dict[str, str] = {}
        reused = 0
        for caption in captions:
            old = previous._segmented.get(caption.image_id) if previous else None
            if (
                old is not None
                and previous is not None
                and (previous.stamps.get(caption.image_id) == caption.stamp)
            ):
                segmented[caption.image_id] = old
                reused += 1
            else:
                segmented[caption.image_id] = " ".join(tokenize(caption.text))
            stamps[caption.image_id] = caption.stamp
        nodes = [
            TextNode(
                id_=image_id,
                text=text,
                metadata={"stamp": stamps[image_id]},
                excluded_embed_metadata_keys=["stamp"],
                excluded_llm_metadata_keys=["stamp"],
            )
            for image_id, text in segmented.items()
            if text
        ]
        logger.info("BM25: %d captions (%d segmented again).", len(stamps), len(stamps) - reused)
        return cls(_make_retriever(nodes=nodes) if nodes else None, stamps, segmented)

    def search(self, query: str, k: int) -> list[tuple[str, float]]:
        """Top ``k`` (image id, BM25 score), best first; zero scores are dropped (bm25s
        pads its top-k with them, and they would still count as ranks in RRF)."""
        tokens = tokenize(query)
        if self._retriever is None or not tokens or k < 1:
            return []
        import bm25s

        # The two calls of upstream's BM25Retriever._retrieve (llama-index-retrievers-bm25
        # 0.8.0), with its settings, asking bm25s for image ids instead of corpus entries:
        # upstream then rebuilds a TextNode from JSON for each hit, ~1 ms per 50 hits
        # holding the GIL, and a hybrid query needs only the ids. tests/test_hybrid.py
        # checks the results equal upstream's.
        retriever = self._retriever
        query_tokens = bm25s.tokenize(
            " ".join(tokens),
            stemmer=None,
            token_pattern=retriever.token_pattern,
            show_progress=False,
        )
        ids, scores = retriever.bm25.retrieve(
            query_tokens,
            corpus=self._document_ids(),
            k=min(k, self._indexed),
            show_progress=False,
        )
        return [
            (str(image_id), float(score))
            for image_id, score in zip(ids[0], scores[0], strict=True)
            if score > 0.0
        ]

    def _document_ids(self) -> np.ndarray:
        """Image ids in bm25s' document order: the captions with tokens, in ``segmented``
        order (how :meth:`build` made the documents and :meth:`persist` wrote both).
        Checked against the corpus at three places; read from it in full if they differ."""
        if self._ids is None:
            assert self._retriever is not None  # search() returns early without one
            corpus = self._retriever.corpus
            ids = [image_id for image_id, text in self._segmented.items() if text]
            probes = {0, len(ids) // 2, len(ids) - 1} if ids else set()
            if len(corpus) != len(ids) or any(corpus[i]["node_id"] != ids[i] for i in probes):
                ids = [corpus[i]["node_id"] for i in range(len(corpus))]
            self._ids = np.array(ids, dtype=object)
        return self._ids

    # -- persistence ----------------------------------------------------------------------

    def persist(self, path: str | os.PathLike[str]) -> None:
        """Write to ``path`` (a folder), replacing what was there atomically."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".bm25-", dir=target.parent))
        try:
            if self._retriever is not None:
                self._retriever.persist(str(staging), show_progress=False)
            settings = {
                "tokenizer": TOKENIZER_SETTINGS,
                "token_pattern": TOKEN_PATTERN,
                "skip_stemming": True,
                "stamps": self.stamps,
                "segmented": self._segmented,
            }
            (staging / SETTINGS_FILE).write_text(json.dumps(settings, ensure_ascii=False))
            old = target.with_name(target.name + ".old")
            shutil.rmtree(old, ignore_errors=True)  # left by a crash between the renames
            if target.exists():
                os.replace(target, old)
            try:
                os.replace(staging, target)
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
                # Another process persisted between our two renames: its index is as
                # new as ours (both were built from the stored captions). Keep it.
                logger.debug("BM25 index at %s was written by another process.", target)
            shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> CaptionBM25Index | None:
        """The index persisted at ``path``; None when there is none or it was built with
        other tokenizer settings (then rebuild it)."""
        folder = Path(path)
        previous = folder.with_name(folder.name + ".old")
        if not folder.exists() and previous.exists():
            folder = previous  # a crash between persist()'s two renames: the last good one
        try:
            settings = json.loads((folder / SETTINGS_FILE).read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            _log_damage(folder, exc)
            return None
        if not isinstance(settings, dict) or settings.get("tokenizer") != TOKENIZER_SETTINGS:
            logger.info("BM25 index at %s was built with other tokenizer settings.", folder)
            return None
        try:
            retriever = None
            if any(settings["segmented"].values()):
                from llama_index.retrievers.bm25 import BM25Retriever

                retriever = BM25Retriever.from_persist_dir(str(folder), show_progress=False)
                # Workaround: llama-index-retrievers-bm25 0.8.0 persists neither
                # token_pattern nor skip_stemming (only similarity_top_k and the stemmer
                # language), so a loaded retriever would re-tokenize queries with its
                # defaults ("\w\w+" and English stemming). Set them back;
                # tests/test_hybrid.py shows the upstream loss.
                retriever.token_pattern = settings["token_pattern"]
                retriever.skip_stemming = settings["skip_stemming"]
            return cls(retriever, dict(settings["stamps"]), dict(settings["segmented"]))
        except Exception as exc:  # whatever a damaged pickle, array or JSON raises
            _log_damage(folder, exc)
            return None


def _log_damage(folder: Path, exc: Exception) -> None:
    """A BM25 folder that cannot be loaded is derived data: say so once, rebuild it."""
    logger.warning(
        "The BM25 index at %s cannot be loaded (%s: %s); it is rebuilt from the captions.",
        folder,
        type(exc).__name__,
        str(exc)[:200],
    )


def _make_retriever(*, nodes: list[Any]) -> Any:
    from llama_index.retrievers.bm25 import BM25Retriever

    quiet_bm25s_logger()
    return BM25Retriever(
        nodes=nodes,
        token_pattern=TOKEN_PATTERN,
        skip_stemming=True,
        similarity_top_k=min(10, len(nodes)),
    )


def default_bm25_path(uri: str, caption_collection: str) -> str:
    """Where the bm25s index of a caption collection lives: beside a Milvus Lite database
    (``<uri>.bm25``), or in the user cache folder for a server (by uri and collection;
    a ``user:password@`` in the uri does not count: the same server, the same folder)."""
    if "://" not in uri:
        return f"{os.path.abspath(uri)}.bm25"
    server = split_credentials(uri)[0]
    digest = hashlib.sha256(f"{server}|{caption_collection}".encode()).hexdigest()[:16]
    return str(user_cache_dir() / "bm25" / digest)


class PersistentBM25:
    """The bm25s index of a caption collection, persisted at ``path``: loaded once,
    rebuilt (only new or changed captions segmented again) when the captions changed,
    and loaded again when another pack or process persisted a newer one there (checked
    on every query: one ``stat``)."""

    def __init__(self, captions: CaptionStore, path: str) -> None:
        self.captions = captions
        self.path = path
        self._index: CaptionBM25Index | None = None
        self._loaded = False
        self._seen: tuple[int, int] | None = None  # the persisted files we hold
        # One builder at a time: concurrent first searches of a server (the preview) all
        # found the index missing and persisted into one folder at once.
        self._lock = threading.RLock()

    def refresh(self) -> CaptionBM25Index | None:
        """Rebuild from the caption collection when captions changed, and persist it."""
        with self._lock:
            return self._refresh()

    def _refresh(self) -> CaptionBM25Index | None:
        if not self.captions.open_existing():
            self._index, self._loaded = None, True
            return None
        previous = self._index or CaptionBM25Index.load(self.path)
        rows = self.captions.iter_rows(["text", "sha256", "cache_key"])
        captions = [
            CaptionText(r["id"], r["text"], f"{r['sha256']}:{r['cache_key']}") for r in rows
        ]
        if previous is not None and previous.stamps == {c.image_id: c.stamp for c in captions}:
            self._index, self._loaded, self._seen = previous, True, self._stamp()
            return previous
        index = CaptionBM25Index.build(captions, previous=previous)
        index.persist(self.path)
        self._index, self._loaded, self._seen = index, True, self._stamp()
        return index

    def _stamp(self) -> tuple[int, int] | None:
        """Which persisted index is at ``path`` now (persist() replaces the folder)."""
        try:
            stat = os.stat(Path(self.path) / SETTINGS_FILE)
        except OSError:
            return None
        return stat.st_ino, stat.st_mtime_ns

    def index(self) -> CaptionBM25Index | None:
        """The persisted index (loaded once, no tokenizing), built when missing; None
        without a caption collection (an index left beside a deleted database must not
        answer for the images indexed again under the same ids)."""
        if not self.captions.open_existing():
            return None
        with self._lock:
            stamp = self._stamp()
            if not self._loaded or (stamp is not None and stamp != self._seen):
                loaded = CaptionBM25Index.load(self.path)
                if loaded is None:
                    return self._refresh()
                self._index, self._loaded, self._seen = loaded, True, stamp
            return self._index

    def retarget(self, path: str) -> None:
        """Persist at ``path`` from now on (a rebuild's folder, then the real one again)."""
        with self._lock:
            self.path, self._index, self._loaded, self._seen = path, None, False, None

    def drop(self) -> None:
        """Delete the persisted index (the captions are dropped with it)."""
        with self._lock:
            shutil.rmtree(self.path, ignore_errors=True)
            self._index, self._loaded, self._seen = None, False, None
