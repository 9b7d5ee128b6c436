"""Decoding on every core: the same rows whatever the number of decode threads, threads
that really overlap, failures named, and the cores a process may use."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
from llama_index.packs.clip_hybrid import ClipHybridPack
from llama_index.packs.clip_hybrid._util import available_cores
from llama_index.packs.clip_hybrid.images.decode import ImageLoadError
from llama_index.packs.clip_hybrid.ingest.decoding import ChunkDecoder
from llama_index.packs.clip_hybrid.ingest.report import IngestReport
from llama_index.packs.clip_hybrid.options import OptionError
from llama_index.packs.clip_hybrid.testing.requirements import require
from PIL import Image


def _rows(pack: ClipHybridPack) -> dict[str, tuple]:
    rows = pack.store.iter_rows(["path", "sha256", "width", "height"])
    return {r["path"]: (r["sha256"], r["width"], r["height"]) for r in rows}


def test_every_worker_count_stores_the_same_rows_and_vectors(
    fast_clip, image_dir, tmp_path
) -> None:
    (image_dir / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    results = []
    for workers in (1, 4):
        uri = str(tmp_path / f"w{workers}.db")
        with ClipHybridPack(
            uri=uri, embed_model=fast_clip, captioner="none", workers=workers, batch_size=5
        ) as pack:
            report = pack.ingest(image_dir)
            vectors = pack.store.vectors_by_sha256([s for s, _, _ in _rows(pack).values()])
            results.append((report.indexed, [f.path for f in report.failed], _rows(pack), vectors))
    one, four = results
    assert one[0] == four[0] > 0 and one[1] == four[1] == [str(image_dir / "broken.png")]
    assert one[2] == four[2]
    assert one[3].keys() == four[3].keys()
    for digest, vector in one[3].items():
        assert vector == pytest.approx(four[3][digest], abs=1e-6)


def test_decode_threads_overlap_and_copies_fall_back() -> None:
    """Four images opened at once by four threads (a barrier that one thread alone would
    never pass); bytes whose first copy fails are taken from the next copy."""
    barrier = threading.Barrier(4, timeout=30)
    seen: list[str] = []

    def open_one(item):  # type: ignore[no-untyped-def]
        seen.append(item.path)
        if item.path == "bad-copy":
            raise ImageLoadError("bad-copy", "cannot be decoded")
        if item.path.startswith("p"):
            barrier.wait()
        return Image.new("RGB", (2, 2))

    def item(path: str, sha: str) -> SimpleNamespace:
        return SimpleNamespace(path=path, id=path, sha256=sha, vector=None)

    todo = [item(f"p{i}", f"s{i}") for i in range(4)]
    todo += [item("bad-copy", "dup"), item("good-copy", "dup"), item("p0-twin", "s0")]
    report = IngestReport()
    with ChunkDecoder(open_one, workers=4) as decoder:
        out = decoder.decode(todo, report)
    assert sorted(i.path for i, _ in out) == ["good-copy", "p0", "p1", "p2", "p3"]
    assert [(f.path, f.reason) for f in report.failed] == [("bad-copy", "cannot be decoded")]
    assert "p0-twin" not in seen  # identical bytes are decoded once


def test_workers_must_be_a_whole_number_from_one(tmp_path) -> None:
    with pytest.raises(OptionError, match="workers"):
        ClipHybridPack(uri=str(tmp_path / "x.db"), workers=0)
    with pytest.raises(ValueError, match="workers=0"):
        ChunkDecoder(lambda item: item, workers=0)


def test_available_cores_follows_the_affinity_mask() -> None:
    assert 1 <= available_cores() <= (os.cpu_count() or 1)
    require(hasattr(os, "sched_setaffinity"), "CPU affinity (os.sched_setaffinity, Linux)")
    code = (
        "import os\n"
        "from llama_index.packs.clip_hybrid._util import available_cores\n"
        "os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})\n"
        "print(available_cores())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).parent,
    )
    assert done.stdout.strip() == "1", done.stderr[-2000:]


def test_a_pixel_budget_bounds_what_decodes_at_once() -> None:
    """N threads decoding N large scans each held a full-size image: at most the budget's
    pixels decode at once, and an image over the budget decodes alone.

    Each small image waits inside its decode until three are in, or the budget lets no
    other one in, or none is left to start: without a budget three pile up (120 pixels);
    with a budget of 100 only two images of 40 fit. No clock: the threads wait on each
    other and on the budget."""
    changed = threading.Condition()
    now = {"pixels": 0, "peak": 0, "alone": True, "inside": 0, "started": 0}
    sizes = {f"p{i}": 40 for i in range(8)} | {"huge": 500}
    small = len(sizes) - 1

    def open_one(item):  # type: ignore[no-untyped-def]
        with changed:
            now["pixels"] += sizes[item.path]
            if item.path == "huge":
                now["alone"] = now["pixels"] == 500
            else:
                now["peak"] = max(now["peak"], now["pixels"])
                now["inside"] += 1
                now["started"] += 1
                changed.notify_all()
                budget = decoder.budget
                full = lambda: budget is not None and budget.used + 40 > budget.capacity  # noqa: E731
                piled = changed.wait_for(
                    lambda: now["inside"] >= 3 or full() or now["started"] == small, timeout=30
                )
                assert piled, "a decode waited although no other could come in"
                now["inside"] -= 1
            now["pixels"] -= sizes[item.path]
        return Image.new("RGB", (2, 2))

    todo = [SimpleNamespace(path=p, id=p, sha256=p, vector=None) for p in sizes]
    with ChunkDecoder(
        open_one, workers=4, budget=100, pixels=lambda item: sizes[item.path]
    ) as decoder:
        out = decoder.decode(todo, IngestReport())
    assert len(out) == 9
    assert now["peak"] <= 100 and now["alone"]


def test_decode_threads_leave_the_warning_filters_as_they_were(tmp_path) -> None:
    """The decoder ignored PIL's DecompressionBombWarning inside catch_warnings() around
    each image: from several threads at once that leaked filters into the process."""
    import warnings

    from llama_index.packs.clip_hybrid.images.decode import open_working_image

    paths = []
    for i in range(12):
        path = tmp_path / f"{i}.png"
        Image.new("RGB", (64, 48), (i * 20, 0, 0)).save(path)
        paths.append(str(path))
    before = list(warnings.filters)
    with ChunkDecoder(lambda item: open_working_image(item.path), workers=4) as decoder:
        for _ in range(5):
            todo = [SimpleNamespace(path=p, id=p, sha256=p, vector=None, data=None) for p in paths]
            assert len(decoder.decode(todo, IngestReport())) == 12
    assert warnings.filters == before
