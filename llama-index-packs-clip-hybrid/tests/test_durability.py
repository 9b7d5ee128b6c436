"""Nothing indexed is lost: a locked database, a full disk, crashes and SIGKILLs mid-run."""

from __future__ import annotations

import logging
import os
import resource
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from llama_index.packs.clip_hybrid import ClipHybridPack, DatabaseBusyError
from llama_index.packs.clip_hybrid.hybrid.bm25 import CaptionBM25Index, CaptionText
from llama_index.packs.clip_hybrid.testing.bad_images import make_odd_images
from llama_index.packs.clip_hybrid.testing.requirements import require
from PIL import Image


def test_a_database_open_in_another_process_is_named(
    milvus_uri, tiny_clip_checkpoint, image_dir
) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys
                from llama_index.packs.clip_hybrid import ClipHybridPack
                pack = ClipHybridPack(uri={milvus_uri!r}, clip_model={str(tiny_clip_checkpoint)!r},
                                      captioner="none", show_progress=False)
                pack.ingest({str(image_dir)!r})
                print("open", flush=True)
                sys.stdin.read()  # hold the database until the test closes stdin
                """
            ),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        second = ClipHybridPack(uri=milvus_uri, clip_model=str(tiny_clip_checkpoint))
        with pytest.raises(DatabaseBusyError, match="open in another process") as info:
            second.store.count()
        assert milvus_uri in str(info.value) and "http://" in str(info.value)
        script = Path(sys.executable).parent / "clip-hybrid"  # the program: one line
        cli = subprocess.run(
            [str(script), "search", "a chart", "--db", milvus_uri],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert cli.returncode == 1 and len(cli.stderr.strip().splitlines()) == 1, cli.stderr
        assert "open in another process" in cli.stderr
    finally:
        holder.communicate("", timeout=120)
    assert holder.returncode == 0
    # released: the data is intact and opens here now
    reopened = ClipHybridPack(uri=milvus_uri, clip_model=str(tiny_clip_checkpoint))
    assert reopened.store.count() == len(list(image_dir.rglob("*.png")))
    reopened.store.close()


def _captions(n: int) -> list[CaptionText]:
    return [
        CaptionText(f"img{i}", f"caption {i} 系统架构图 word{i} other{i * 7}", str(i))
        for i in range(n)
    ]


def test_a_full_disk_while_persisting_bm25_keeps_the_previous_index(tmp_path) -> None:
    target = tmp_path / "bm25"
    CaptionBM25Index.build(_captions(5)).persist(target)
    before = sorted(p.name for p in target.iterdir())
    limit = max(p.stat().st_size for p in target.iterdir()) + 16
    bigger = CaptionBM25Index.build(_captions(3000))
    # The kernel refuses writes past RLIMIT_FSIZE (EFBIG), as a full disk would (ENOSPC).
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        with pytest.raises(OSError):
            bigger.persist(target)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous_handler)
    assert sorted(p.name for p in target.iterdir()) == before
    assert [p.name for p in tmp_path.iterdir()] == ["bm25"]  # no staging left behind
    loaded = CaptionBM25Index.load(target)
    assert loaded is not None and len(loaded.stamps) == 5
    assert loaded.search("word3", 3)[0][0] == "img3"


def test_a_crash_between_the_renames_loads_the_last_good_index(tmp_path) -> None:
    target = tmp_path / "bm25"
    CaptionBM25Index.build(_captions(5)).persist(target)
    target.rename(tmp_path / "bm25.old")  # what persist() leaves if killed mid-swap
    loaded = CaptionBM25Index.load(target)
    assert loaded is not None and loaded.search("word2", 3)[0][0] == "img2"


_INGEST = """
import sys
from llama_index.packs.clip_hybrid import ClipHybridPack
uri, checkpoint, images = sys.argv[1:4]
pack = ClipHybridPack(uri=uri, clip_model=checkpoint, precision="fp32", batch_size=4,
                      captioner="auto", caption_embed="auto", caption_concurrency=2,
                      show_progress=False)
print("start", flush=True)
report = pack.ingest(images)
assert not report.failed and not report.captions.failed, report.to_dict()
print("done", flush=True)
"""


def _snapshot(uri: str, checkpoint: str) -> dict[str, dict[str, tuple]]:
    import numpy as np

    pack = ClipHybridPack(uri=uri, clip_model=checkpoint, captioner="none")
    try:
        images = [
            (r["id"], r["sha256"], r["vector"]) for r in pack.store.iter_rows(["sha256", "vector"])
        ]
        captions = [
            (r["id"], r["text"], r["vector"])
            for r in pack.caption_store.iter_rows(["text", "vector"])
        ]
        bm25 = pack.bm25.index()
        assert len({i for i, *_ in images}) == len(images)  # no duplicate rows
        assert len({i for i, *_ in captions}) == len(captions)
        return {
            "images": {i: (sha, np.round(np.asarray(v), 4).tolist()) for i, sha, v in images},
            "captions": {i: (t, np.round(np.asarray(v), 4).tolist()) for i, t, v in captions},
            "bm25": {i: () for i in (bm25.stamps if bm25 else {})},
        }
    finally:
        pack.store.close()


def test_killed_ten_times_at_random_points_ends_equal_to_one_clean_run(
    image_dir, tiny_clip_checkpoint, tmp_path, monkeypatch
) -> None:
    import random
    import threading

    import numpy as np
    from llama_index.packs.clip_hybrid.testing import ApiStub

    rng = np.random.default_rng(3)
    for i in range(30):  # noise images: more work to be killed in the middle of
        pixels = rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(image_dir / f"noise_{i:02d}.png")
    total = len(list(image_dir.rglob("*.png")))
    checkpoint = str(tiny_clip_checkpoint)

    def run(uri: str, kill_at: int | None) -> int:
        """Ingest in a child; SIGKILL it as soon as the stub has seen ``kill_at`` more
        requests (0: right after it starts), i.e. at a point of its work, not of the clock."""
        child = subprocess.Popen(
            [sys.executable, "-c", _INGEST, uri, checkpoint, str(image_dir)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={
                **os.environ,
                "OPENAI_API_KEY": "sk-test",
                "OPENAI_BASE_URL": stub.openai_base_url,
            },
        )
        seen = len(stub.requests)
        assert child.stdout is not None and child.stdout.readline().strip() == "start"
        if kill_at is not None:
            exited = threading.Thread(target=lambda: (child.wait(), stub.wake()), daemon=True)
            exited.start()  # a child that finishes first ends the wait too
            assert stub.wait_for_requests(seen + kill_at, unless=lambda: child.poll() is not None)
            if child.poll() is None:
                child.send_signal(signal.SIGKILL)
        _, err = child.communicate(timeout=300)
        assert child.returncode in (0, -9), err[-3000:]
        return child.returncode

    with ApiStub() as stub:
        monkeypatch.delenv("CLIP_HYBRID_CAPTIONER", raising=False)
        clean = str(tmp_path / "clean.db")
        assert run(clean, None) == 0
        calls = len(stub.requests)  # captions and embeddings of one whole run
        killed_uri = str(tmp_path / "killed.db")
        chance = random.Random(11)
        outcomes = [run(killed_uri, chance.randrange(max(1, calls // 10))) for _ in range(10)]
        assert run(killed_uri, None) == 0
    assert outcomes.count(-9) >= 5, outcomes  # most runs really were killed mid-way
    expected = _snapshot(clean, checkpoint)
    got = _snapshot(killed_uri, checkpoint)
    assert len(expected["images"]) == len(expected["captions"]) == total
    assert got["images"].keys() == expected["images"].keys()
    assert got["captions"] == expected["captions"]
    assert got["bm25"] == expected["bm25"]
    for image_id, (sha, vector) in expected["images"].items():
        assert got["images"][image_id][0] == sha
        assert np.allclose(got["images"][image_id][1], vector, atol=1e-3)


# -- files damaged on disk ------------------------------------------------------------------


def _data_files(db: Path) -> list[Path]:
    """The image collection's data files, as Milvus Lite's manifest lists them."""
    import json

    root = db / "collections" / "images"
    manifest = json.loads((root / "manifest.json").read_text())
    return [
        root / "partitions" / partition / rel
        for partition, info in manifest["partitions"].items()
        for rel in info["data_files"]
    ]


def _indexed(tmp_path, image_dir, fast_clip) -> tuple[Path, int]:  # type: ignore[no-untyped-def]
    db = tmp_path / "damaged.db"
    with ClipHybridPack(uri=str(db), embed_model=fast_clip, captioner="none") as pack:
        n = pack.ingest(image_dir).indexed
    return db, n


def test_vectors_damaged_on_disk_are_refused_by_search_and_repaired_by_reindexing(
    tmp_path, image_dir, fast_clip, tiny_clip_checkpoint
) -> None:
    """Bytes changed inside a data file's values: Milvus Lite loads it and would serve the
    garbage vectors; a search names the damage and the fix, and re-indexing repairs it."""
    import json

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from llama_index.packs.clip_hybrid.cli import main
    from llama_index.packs.clip_hybrid.milvus.integrity import DamagedIndexError

    db, n = _indexed(tmp_path, image_dir, fast_clip)
    (path,) = _data_files(db)
    table = pq.read_table(path)
    column = table.column("vector").combine_chunks()
    values = np.asarray(column.values.to_numpy(zero_copy_only=False)).copy()
    dim = len(values) // len(column)
    values[: 3 * dim] *= 3e11  # three rows' vectors, as the probe's 4 KB of garbage did
    damaged = pa.FixedSizeListArray.from_arrays(pa.array(values, pa.float32()), dim)
    index = table.schema.get_field_index("vector")
    table = table.set_column(index, table.schema.field(index), damaged)
    pq.write_table(table, path)

    with ClipHybridPack(uri=str(db), embed_model=fast_clip) as pack:
        with pytest.raises(DamagedIndexError, match=r"3 row\(s\) .* not unit vectors") as info:
            pack.search("a chart", mode="text")
        assert str(path) in str(info.value) and "clip-hybrid index" in str(info.value)
    args = ["--db", str(db), "--clip-model", str(tiny_clip_checkpoint)]
    assert main(["search", "a chart", *args]) == 1
    report = json.loads(_captured_json(main, ["index", str(image_dir), *args, "--json"]))
    assert report["repaired"] == 3 and report["forward_passes"] == 3
    assert report["unchanged"] == n - 3
    with ClipHybridPack(uri=str(db), embed_model=fast_clip) as pack:
        assert len(pack.search("a chart", mode="text").hits) == 5
        assert pack.store.damaged_ids() == []


def _captured_json(main, argv) -> str:  # type: ignore[no-untyped-def]
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(argv) == 0
    return out.getvalue()


def test_an_unreadable_data_file_is_named_with_the_way_to_rebuild(
    tmp_path, image_dir, fast_clip, tiny_clip_checkpoint
) -> None:
    from llama_index.packs.clip_hybrid.cli import main

    db, _ = _indexed(tmp_path, image_dir, fast_clip)
    (path,) = _data_files(db)
    data = bytearray(path.read_bytes())
    data[200:600] = bytes((b * 7 + 13) % 256 for b in data[200:600])
    path.write_bytes(bytes(data))
    script = Path(sys.executable).parent / "clip-hybrid"  # the program: one line, no traceback
    run = subprocess.run(
        [
            str(script),
            "search",
            "a chart",
            "--db",
            str(db),
            "--clip-model",
            str(tiny_clip_checkpoint),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    err = run.stderr.strip().splitlines()
    assert run.returncode == 1 and len(err) == 1, run.stderr
    assert str(path) in err[0] and "--overwrite" in err[0] and "overwrite=True" not in err[0]
    args = ["--db", str(db), "--clip-model", str(tiny_clip_checkpoint), "--captioner", "none"]
    assert main(["index", str(image_dir), *args, "--overwrite"]) == 0  # the way out works
    assert main(["search", "a chart", *args[:4]]) == 0


def test_a_damaged_manifest_is_named_and_reindexing_restores_the_rows(
    tmp_path, image_dir, fast_clip
) -> None:
    """Milvus Lite reads manifest.json.prev when manifest.json is not JSON: the rows of the
    last save are silently missing. Searches say so; re-indexing brings them back."""
    from llama_index.packs.clip_hybrid.milvus.integrity import DamagedIndexError

    db, n = _indexed(tmp_path, image_dir, fast_clip)
    manifest = db / "collections" / "images" / "manifest.json"
    manifest.write_bytes(b"\x00garbage" + manifest.read_bytes()[40:])
    with ClipHybridPack(uri=str(db), embed_model=fast_clip) as pack:
        assert pack.store.count() < n  # what Milvus Lite alone would serve
        with pytest.raises(DamagedIndexError, match=r"manifest\.json is not valid JSON"):
            pack.search("a chart", mode="text")
        report = pack.ingest(image_dir)
        assert report.indexed > 0 and pack.store.count() == n
    with ClipHybridPack(uri=str(db), embed_model=fast_clip) as pack:
        assert len(pack.search("a chart", mode="text").hits) == 5


def _without_root_powers() -> list[str]:
    """A command prefix under which permissions apply: root keeps its files but loses
    CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH (so a mode-0 folder cannot be entered)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    # as root without setpriv, permissions do not apply: a skip here, a failure on CI
    require(setpriv is not None, "util-linux setpriv (root ignores permissions without it)")
    assert setpriv is not None
    caps = "-dac_override,-dac_read_search"
    return [setpriv, f"--inh-caps={caps}", f"--bounding-set={caps}", "--"]


def test_sync_keeps_the_rows_of_a_folder_it_cannot_read(
    tmp_path, image_dir, tiny_clip_checkpoint
) -> None:
    """``index --sync`` with a folder that cannot be entered: its files are not "gone".
    Their rows stay, the folder is a named failure, and once readable nothing changed."""
    import json

    script = Path(sys.executable).parent / "clip-hybrid"
    db = tmp_path / "sync.db"
    args = [str(image_dir), "--db", str(db), "--clip-model", str(tiny_clip_checkpoint)]
    args += ["--captioner", "none", "--json"]
    first = subprocess.run([str(script), "index", *args], capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    total = json.loads(first.stdout)["indexed"]
    locked = sorted(p for p in image_dir.iterdir() if p.is_dir())[0]
    inside = len(list(locked.rglob("*.png")))
    locked.chmod(0)
    try:
        synced = subprocess.run(
            [*_without_root_powers(), str(script), "index", *args, "--sync"],
            capture_output=True,
            text=True,
        )
    finally:
        locked.chmod(0o755)
    assert synced.returncode == 0, synced.stderr
    report = json.loads(synced.stdout)
    assert inside > 0 and report["removed"] == 0, report
    failed = {f["path"]: f["reason"] for f in report["failures"]}
    assert "fix its permissions and sync again" in failed[str(locked)], failed
    again = subprocess.run([str(script), "index", *args, "--sync"], capture_output=True, text=True)
    assert json.loads(again.stdout)["unchanged"] == total, again.stdout


def test_damaged_bm25_and_caption_cache_files_are_rebuilt_with_one_warning(
    tmp_path, image_dir, fast_clip, monkeypatch, caplog
) -> None:
    """The BM25 folder and the caption cache are derived data: garbage in them (here,
    every file overwritten) costs a warning and a rebuild, never a failed index or search."""
    from llama_index.packs.clip_hybrid.testing import ApiStub

    uri = str(tmp_path / "derived.db")
    cache = tmp_path / "cache" / "captions.sqlite"

    def pack() -> ClipHybridPack:
        return ClipHybridPack(
            uri=uri,
            embed_model=fast_clip,
            captioner="openai",
            caption_embed="none",
            caption_cache_path=str(cache),
            show_progress=False,
        )

    with ApiStub(caption=lambda request: "Text: 系统架构图 API gateway") as stub:
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        monkeypatch.setenv("OPENAI_BASE_URL", stub.openai_base_url)
        with pack() as p:
            p.ingest(image_dir)
            assert p.search("系统架构图", mode="hybrid").hits
        bm25 = Path(uri + ".bm25")
        files = [f for f in bm25.rglob("*") if f.is_file()]
        assert files and cache.exists()
        for f in [*files, cache]:
            f.write_bytes(b"\x80\x04garbage" * 50)
        calls = len(stub.requests)
        extra = image_dir / "extra" / "new.png"
        extra.parent.mkdir()
        Image.new("RGB", (40, 30), (200, 10, 10)).save(extra)
        with caplog.at_level(logging.WARNING), pack() as p:
            report = p.ingest(image_dir)  # captions the new image through a new cache
            assert report.indexed == 1 and report.captions.failed == []
            result = p.search("系统架构图", mode="hybrid")
        assert result.hits and "bm25" in result.branches and not result.failed_branches
        assert len(stub.requests) == calls + 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert sum("BM25 index" in w and "rebuilt" in w for w in warnings) == 1, warnings
    assert sum("caption cache" in w and "damaged" in w for w in warnings) == 1, warnings
    assert list(cache.parent.glob("captions.sqlite.damaged-*"))  # kept, for a look
    caplog.clear()
    with caplog.at_level(logging.WARNING), pack() as p:  # rebuilt: no warnings now
        assert p.search("系统架构图", mode="hybrid").hits
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_two_users_of_one_damaged_caption_cache_recover_it_once(tmp_path, caplog) -> None:
    """Two processes share the user's caption cache (two connections here). The first to
    meet the damage moves the file aside; the second, still holding the damaged file,
    must not move the first one's fresh cache aside too (captions paid for lost)."""
    import random

    from llama_index.packs.clip_hybrid.captions.base import Caption
    from llama_index.packs.clip_hybrid.captions.cache import CaptionCache

    path = tmp_path / "captions.sqlite"
    digests = [f"{i:064x}" for i in range(2000)]
    cache = CaptionCache(path)
    for digest in digests:
        cache.put(digest, "k", "stub", Caption("a caption of some length " * 4))
    cache.close()
    size = path.stat().st_size
    with open(path, "r+b") as f:  # pages in the middle, not the header: both open fine
        f.seek(size // 2)
        f.write(random.Random(0).randbytes(8192))
    first, second = CaptionCache(path), CaptionCache(path)
    with caplog.at_level(logging.WARNING):
        assert first.get_many(digests, "k") == {}  # damaged: moved aside, started again
        first.put("a" * 64, "k", "stub", Caption("paid for by the first"))
        assert second.get_many(digests, "k") == {}  # the damaged file: reopens the new one
        second.put("b" * 64, "k", "stub", Caption("paid for by the second"))
        first.put("c" * 64, "k", "stub", Caption("and the first again"))
    fresh = CaptionCache(path)
    assert len(fresh) == 3 and set(fresh.get_many(["a" * 64, "b" * 64, "c" * 64], "k")) == {
        "a" * 64,
        "b" * 64,
        "c" * 64,
    }
    assert sum("is damaged" in r.getMessage() for r in caplog.records) == 1
    assert len(list(tmp_path.glob("captions.sqlite.damaged-*[0-9]"))) == 1


def test_an_index_in_a_folder_that_cannot_be_written_says_so(
    tmp_path, image_dir, tiny_clip_checkpoint
) -> None:
    """pymilvus said only "Open local milvus failed"."""
    script = Path(sys.executable).parent / "clip-hybrid"
    folder = tmp_path / "readonly"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        done = subprocess.run(
            [
                *_without_root_powers(),
                *(str(script), "index", str(image_dir), "--db", str(folder / "x.db")),
                *("--clip-model", str(tiny_clip_checkpoint), "--captioner", "none"),
            ],
            capture_output=True,
            text=True,
        )
    finally:
        folder.chmod(0o755)
    assert done.returncode == 1
    assert f"{folder} is not writable" in done.stderr, done.stderr
