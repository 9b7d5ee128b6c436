"""ImageIngestor: files or image nodes in, CLIP vectors in Milvus out, incrementally."""

from __future__ import annotations

import hashlib
import os
import stat
import sys
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llama_index.core.embeddings.multi_modal_base import MultiModalEmbedding
from llama_index.core.schema import ImageDocument, ImageNode
from PIL import Image

from .._util import available_cores, chunks
from ..clip.embedding import FastClipEmbedding
from ..clip.no_clip import NoClipEmbedding
from ..events import Progress
from ..images.decode import DEFAULT_MAX_PIXELS, displayed_size, open_working_image
from ..images.discovery import bytes_node_id, discover_images, image_node_id, printable_path
from ..images.sources import ImageSourceError, file_sha256, node_source
from ..memory import release_free_memory
from ..milvus.collection import PLACEHOLDER
from ..milvus.images import ImageStore
from ..redaction import package_logger
from .decoding import ChunkDecoder
from .report import IngestFailure, IngestReport
from .rows import (
    image_row,
    metadata_problem,
    storable,
    stored_form,
    unstorable_path,
    user_fields,
)
from .sync import stale_rows
from .vectors import NOT_A_VECTOR, VectorCache, embed_images, is_unit

logger = package_logger(__name__)


@dataclass
class _Item:
    """One image on its way into the store."""

    id: str
    path: str
    sha256: str = ""
    size: int = 0
    mtime: float = 0.0
    data: bytes | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    vector: list[float] | None = None
    width: int = 0
    height: int = 0


@dataclass
class _Chunk:
    todo: list[_Item]
    decoded: Future[list[tuple[_Item, Image.Image]]] | None = None


class ImageIngestor:
    """Stream images into an :class:`ImageStore`, doing only the work that changed.

    - Ids are deterministic (:func:`image_node_id`), and each row stores the sha256 of the
      bytes: an unchanged file costs a hash and a lookup, no forward pass; a changed file
      is re-embedded in place (upsert).
    - The same bytes at two paths are two rows (each path stays searchable, filterable
      and removable on its own) sharing one vector: it is computed once and copied.
    - Work streams in chunks of ``batch_size`` (the next chunk is hashed and decoded while
      the current one is embedded): memory stays flat, each chunk is upserted as soon as it
      is embedded, so an interrupted run keeps what it wrote and the next run finishes the
      rest without duplicates.
    - Bad files are skipped with a reason in the report; they never abort the run.
    """

    def __init__(
        self,
        *,
        store: ImageStore,
        embed_model: MultiModalEmbedding,
        batch_size: int = 64,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        show_progress: bool | None = None,
        workers: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1.")
        if workers is not None and workers < 1:
            raise ValueError(f"workers={workers} must be >= 1 (None: every core available).")
        #: Decode threads (see :class:`ChunkDecoder`): by default the cores this process may use.
        self.workers = workers or available_cores()
        self.store = store
        self.embed_model = embed_model
        self.batch_size = batch_size
        self.max_pixels = max_pixels
        self.show_progress = show_progress
        self._vectors = VectorCache()
        self._damaged: set[str] = set()
        self._empty = False
        self._dim_checked = False

    # -- public --------------------------------------------------------------------------

    def ingest(
        self,
        inputs: Iterable[Any] | str | os.PathLike[str],
        *,
        sync: bool = False,
        recursive: bool = True,
    ) -> IngestReport:
        """Index files, folders, ``ImageNode``s or ``ImageDocument``s.

        Args:
            inputs: A path, or an iterable of paths (files or folders) and image nodes.
            sync: Also remove rows of files that no longer exist under the given folders.
            recursive: Walk sub-folders.
        """
        started = time.perf_counter()
        if isinstance(inputs, (str, os.PathLike)):
            inputs = [inputs]
        items = list(inputs) if not isinstance(inputs, list) else inputs
        roots = [_folder(i) for i in items if _is_dir(i)]
        report = IngestReport()
        seen: set[str] = set()
        self._ensure_store()
        self._damaged = set(self.store.damaged_ids())  # re-embedded below: a repair
        # A first ingest has nothing stored to compare with or reuse: no lookups per chunk
        # (on Milvus Lite they took a third of the non-model time; bench_decode.py).
        self._empty = self.store.count() == 0
        expanded: Iterable[_Item] = self._expand(items, report, recursive)
        bar = self._progress()
        if bar is not None:  # found first, so that the bar has a total
            expanded = list(expanded)
        total = len(expanded) if isinstance(expanded, list) else None
        progress = Progress("images", total=total, bar=bar)
        with (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="clip-decode") as pool,
            ChunkDecoder(self._open_sized, workers=self.workers, budget=self.max_pixels) as decoder,
        ):
            pending: _Chunk | None = None
            for batch in chunks(expanded, self.batch_size):
                seen.update(item.id for item in batch)
                chunk = self._classify(batch, report)
                chunk.decoded = pool.submit(decoder.decode, chunk.todo, report)
                if pending is not None:
                    self._write(pending, report)
                    release_free_memory()  # the written chunk's buffers: see memory.py
                pending = chunk
                progress.update(len(batch))
            if pending is not None:
                self._write(pending, report)
        if sync and roots:
            report.removed = self._remove_missing(roots, report, recursive=recursive)
        self.store.flush()
        report.seconds = time.perf_counter() - started
        progress.end(report.to_dict())
        if report.failed:
            logger.warning(
                "Skipped %d image(s) that could not be indexed, e.g. %s (%s); see the report.",
                len(report.failed),
                report.failed[0].path,
                report.failed[0].reason,
            )
        return report

    # -- steps ---------------------------------------------------------------------------

    def _ensure_store(self) -> None:
        """Open the collection without loading the model when it exists (an unchanged
        re-run then costs no model load at all); create it otherwise."""
        model = self.embed_model
        if self.store.open_existing():
            self.store.check_model(model.model_name)
            self._dim_checked = False  # checked against the first vector written
            return
        if isinstance(model, FastClipEmbedding):
            dim = model.embed_dim
        elif isinstance(model, NoClipEmbedding):
            dim = len(PLACEHOLDER)
        else:
            dim = len(model.get_text_embedding("a photo"))
        self.store.ensure(dim=dim, model=model.model_name)
        self._dim_checked = True

    def _expand(self, items: list[Any], report: IngestReport, recursive: bool) -> Iterator[_Item]:
        paths: list[Any] = []
        given: dict[str, dict[str, Any]] = {}  # node id -> its metadata, this run
        for item in items:
            if isinstance(item, (ImageNode, ImageDocument)):
                converted = self._from_node(item, report)
                if converted is None:
                    continue
                earlier = given.setdefault(converted.id, converted.metadata)
                if earlier is not converted.metadata and earlier != converted.metadata:
                    report.failed.append(
                        IngestFailure(
                            converted.path or item.node_id,
                            "the same image as an earlier node of this run (the same "
                            f"{'path' if converted.path else 'bytes'}) with other metadata; "
                            "give it once, with all its metadata",
                        )
                    )
                    continue
                if earlier is not converted.metadata:
                    continue  # the same image with the same metadata, given again: once
                report.seen += 1
                yield converted
            elif isinstance(item, (str, os.PathLike)):
                paths.append(item)
            else:
                report.failed.append(IngestFailure.not_an_image(item))

        def unreadable(folder: str, reason: str) -> None:
            report.failed.append(IngestFailure(printable_path(folder), reason))

        for path in discover_images(paths, recursive=recursive, on_error=unreadable):
            report.seen += 1
            problem = unstorable_path(str(path))
            if problem:
                report.failed.append(IngestFailure(printable_path(path), problem))
                continue
            yield _Item(id=image_node_id(path), path=str(path))

    def _from_node(self, node: ImageNode | ImageDocument, report: IngestReport) -> _Item | None:
        metadata = {k: v for k, v in node.metadata.items() if storable(v)}
        try:
            source = node_source(
                node,
                url_refusal="image_url is not fetched; download the file and pass its path",
            )
        except ImageSourceError as exc:
            report.failed.append(IngestFailure(node.node_id, exc.reason))
            return None
        label = printable_path(source.path) if source.path else node.node_id
        problem = metadata_problem(metadata)
        if problem:
            report.failed.append(IngestFailure(label, problem))
            return None
        if source.path:
            problem = unstorable_path(source.path)
            if problem:
                report.failed.append(IngestFailure(label, problem))
                return None
            return _Item(id=image_node_id(source.path), path=source.path, metadata=metadata)
        assert source.data is not None
        digest = hashlib.sha256(source.data).hexdigest()
        return _Item(id=bytes_node_id(digest), path="", data=source.data, metadata=metadata)

    def _classify(self, batch: list[_Item], report: IngestReport) -> _Chunk:
        """Hash each item, skip unchanged ones, reuse vectors of known bytes."""
        ready: list[_Item] = []
        for item in batch:
            try:
                if item.data is not None:
                    item.sha256 = hashlib.sha256(item.data).hexdigest()
                    item.size = len(item.data)
                else:
                    st = os.stat(item.path)
                    if not stat.S_ISREG(st.st_mode):  # a FIFO would block the read forever
                        report.failed.append(IngestFailure(item.path, "not a regular file"))
                        continue
                    item.size, item.mtime = st.st_size, st.st_mtime
                    item.sha256 = file_sha256(item.path)
                ready.append(item)
            except OSError as exc:
                reason = (
                    "permission denied"
                    if isinstance(exc, PermissionError)
                    else (f"cannot read file ({exc.strerror or exc})")
                )
                report.failed.append(IngestFailure(item.path, reason))
        with_metadata = any(item.metadata for item in ready)
        fields = ["sha256", "$meta"] if with_metadata else ["sha256"]
        stored = {} if self._empty else self.store.get([i.id for i in ready], fields)
        todo = []
        for item in ready:
            row = stored.get(item.id, {})
            same_bytes = row.get("sha256") == item.sha256 and item.id not in self._damaged
            # Metadata given with a node replace the stored ones (its vector is reused);
            # an image given without metadata (a file in a folder) keeps what it has.
            if same_bytes and (not item.metadata or user_fields(row) == stored_form(item.metadata)):
                report.unchanged += 1
            else:
                todo.append(item)
        missing = [i.sha256 for i in todo if i.sha256 not in self._vectors]
        known = self.store.vectors_by_sha256(missing) if missing and not self._empty else {}
        for item in todo:
            if item.id in self._damaged:  # its stored copy is the damage: embed it again
                report.repaired += 1
                continue
            item.vector = self._vectors.get(item.sha256) or known.get(item.sha256)
        return _Chunk(todo=todo)

    def _open_sized(self, item: _Item) -> Image.Image:
        """One image for the forward pass (on a decode thread): its size noted, and for
        CLIP already 224 x 224, so a chunk waiting for the model holds ~150 KB per image
        instead of a decoded photo (up to 3 MB at the working size)."""
        img = self._open(item)
        item.width, item.height = img.info.get("source_size", img.size)
        if isinstance(self.embed_model, FastClipEmbedding):
            img = self.embed_model.model_sized(img)
        return img

    def _open(self, item: _Item) -> Image.Image:
        """The image at the working size (THE decoder, the same for files and bytes)."""
        if item.data is None:
            return open_working_image(item.path, max_pixels=self.max_pixels)
        return open_working_image(item.data, max_pixels=self.max_pixels, name=item.id)

    def _write(self, chunk: _Chunk, report: IngestReport) -> None:
        assert chunk.decoded is not None
        decoded = chunk.decoded.result()
        if decoded:
            vectors = self._embed([img for _, img in decoded], [item for item, _ in decoded])
            if not self._dim_checked:  # raises if the collection holds other vectors
                self.store.ensure(dim=len(vectors[0]), model=self.embed_model.model_name)
                self._dim_checked = True
            if not isinstance(self.embed_model, NoClipEmbedding):  # the placeholder runs no model
                report.forward_passes += len(decoded)
            for (item, _), vector in zip(decoded, vectors, strict=True):
                if not is_unit(vector):  # stored, it would read as a damaged index
                    report.failed.append(IngestFailure(item.path or item.id, NOT_A_VECTOR))
                    continue
                item.vector = vector
                self._vectors.put(item.sha256, vector)
        failed = {f.path for f in report.failed}
        embedded = {id(item) for item, _ in decoded}
        rows = []
        for item in chunk.todo:
            found = item.vector or self._vectors.get(item.sha256)
            if found is None:
                if (item.path or item.id) not in failed:
                    report.failed.append(IngestFailure(item.path or item.id, "no vector"))
                continue
            if id(item) not in embedded:
                report.reused += 1
                self._fill_size(item)
            rows.append(self._row(item, found))
        self.store.upsert(rows)
        report.indexed += len(rows)

    def _fill_size(self, item: _Item) -> None:
        if not item.width:
            source = item.path if item.data is None else item.data
            item.width, item.height = displayed_size(source)

    def _embed(self, images: list[Image.Image], items: list[_Item]) -> list[list[float]]:
        sources = [item.path if item.data is None else None for item in items]
        return embed_images(self.embed_model, images, sources)

    def _row(self, item: _Item, vector: list[float]) -> dict[str, Any]:
        return image_row(
            item.metadata,
            id=item.id,
            vector=vector,
            path=item.path,
            sha256=item.sha256,
            width=item.width,
            height=item.height,
            size=item.size,
            mtime=item.mtime,
        )

    def _remove_missing(self, roots: list[str], report: IngestReport, *, recursive: bool) -> int:
        """Delete the rows of files under ``roots`` that are gone (see :mod:`.sync`)."""
        stale, unchecked = stale_rows(self.store, roots, recursive=recursive)
        report.failed.extend(unchecked)
        for batch in chunks(stale, 1000):
            self.store.delete(batch)
        return len(stale)

    def _progress(self) -> Any:
        show = self.show_progress
        if show is None:
            show = sys.stderr.isatty()
        if not show:
            return None
        from tqdm.auto import tqdm

        return tqdm(desc="images", unit="img")


def _is_dir(item: Any) -> bool:
    return isinstance(item, (str, os.PathLike)) and Path(item).expanduser().is_dir()


def _folder(item: str | os.PathLike[str]) -> str:
    """A folder input as the absolute path its files are stored under (``~`` expanded,
    as :func:`discover_images` expands it)."""
    return os.path.abspath(os.path.expanduser(os.fspath(item)))
