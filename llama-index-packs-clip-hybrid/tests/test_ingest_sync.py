"""Re-ingesting with ``sync``, symlinked files, and metadata Milvus cannot store as given.

Real Milvus Lite and the tiny CLIP. The rule: nothing a user indexed is lost or
overwritten, and one bad item never sinks the others.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from llama_index.core.schema import ImageNode
from llama_index.packs.clip_hybrid import image_node_id
from llama_index.packs.clip_hybrid.images.sources import file_sha256


def _stored(pack) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {row["path"]: row["sha256"] for row in pack.store.iter_rows(["path", "sha256"])}


def _pngs(root: Path) -> list[Path]:
    return sorted(root.rglob("*.png"))


def test_sync_without_recursion_keeps_the_rows_of_sub_folders(pack, image_dir) -> None:  # type: ignore[no-untyped-def]
    pack.ingest(image_dir)  # every kind folder, recursively
    before = _stored(pack)
    root_file = image_dir / "top.png"
    shutil.copyfile(_pngs(image_dir)[0], root_file)
    pack.ingest(image_dir)
    root_file.unlink()  # gone: the one row sync should remove
    report = pack.ingest(image_dir, sync=True, recursive=False)
    assert report.removed == 1
    assert _stored(pack) == before


def test_sync_removes_only_files_that_are_gone(pack, image_dir, tmp_path) -> None:  # type: ignore[no-untyped-def]
    first = _pngs(image_dir)[0]
    hidden = image_dir / ".hidden.png"
    shutil.copyfile(first, hidden)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    shutil.copyfile(first, outside / "linked.png")
    os.symlink(outside, image_dir / "linked")  # a symlinked folder: never walked
    pack.ingest([image_dir, hidden, image_dir / "linked" / "linked.png"])
    gone = _pngs(image_dir)[1]
    gone.unlink()
    report = pack.ingest(image_dir, sync=True)
    assert report.removed == 1
    stored = _stored(pack)
    assert str(gone) not in stored
    assert {str(hidden), str(image_dir / "linked" / "linked.png")} <= set(stored)


def test_sync_of_a_folder_whose_images_all_went_at_once_keeps_them(
    pack, image_dir, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    """An unmounted drive or a moved folder looks like every file deleted: sync removed
    every row under it, silently. It keeps them and says how to remove them; a sync of a
    folder above it (where other images are still there) does remove them."""
    pack.ingest(image_dir)
    emptied = _pngs(image_dir)[0].parent
    n = len(list(emptied.glob("*.png")))
    stash = tmp_path / "stash"
    shutil.move(str(emptied), stash)
    emptied.mkdir()  # the mount point stays, empty
    kept = pack.ingest(emptied, sync=True)
    assert kept.removed == 0 and len(_stored(pack)) == len(_pngs(stash)) + len(_pngs(image_dir))
    (failure,) = kept.failed
    assert failure.path == str(emptied) and f"every one of its {n} indexed images" in failure.reason
    assert "pack.delete([folder])" in failure.reason
    assert pack.ingest(image_dir, sync=True).removed == n  # from above: really gone


def test_the_emptied_rule_does_not_depend_on_the_order_of_nested_roots(pack, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Each row was counted under the first given root it was in: [A/sub, A] removed A's
    own image when all of A was gone, [A, A/sub] kept it."""
    from PIL import Image

    top = tmp_path / "A"
    (top / "sub").mkdir(parents=True)
    for i, path in enumerate([top / "a1.png", top / "sub" / "s1.png", top / "sub" / "s2.png"]):
        Image.new("RGB", (16, 16), (40 * i, 9, 9)).save(path)
    pack.ingest(top)
    shutil.move(str(top), tmp_path / "away")
    (top / "sub").mkdir(parents=True)  # the mount points stay, empty
    gone_one = tmp_path / "one"
    gone_one.mkdir()
    Image.new("RGB", (16, 16), (1, 2, 3)).save(gone_one / "only.png")
    pack.ingest(gone_one)
    (gone_one / "only.png").unlink()  # one image deleted: removed, also with the root twice
    assert pack.ingest([gone_one, f"{gone_one}/"], sync=True).removed == 1
    for roots in ([top, top / "sub"], [top / "sub", top]):
        report = pack.ingest(roots, sync=True)
        assert report.removed == 0 and len(_stored(pack)) == 3, roots
        assert {f.path for f in report.failed} == {str(top), str(top / "sub")}


def test_sync_of_a_home_relative_folder(pack, image_dir, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("HOME", str(image_dir.parent))
    home_relative = "~/" + image_dir.name
    pack.ingest(home_relative)
    gone = _pngs(image_dir)[0]
    gone.unlink()
    assert pack.ingest(home_relative, sync=True).removed == 1
    assert str(gone) not in _stored(pack)


def test_a_symlinked_file_and_its_target_keep_a_row_each(pack, image_dir) -> None:  # type: ignore[no-untyped-def]
    folder = _pngs(image_dir)[0].parent
    target = folder / "z.png"
    shutil.copyfile(_pngs(image_dir)[0], target)
    pack.ingest(image_dir)
    os.symlink(target, folder / "a.png")  # sorts before its target
    pack.ingest(image_dir)
    shutil.copyfile(_pngs(image_dir)[-1], target)  # new bytes in the target
    pack.ingest(image_dir, sync=True)
    stored = _stored(pack)
    assert stored[str(target)] == stored[str(folder / "a.png")] == file_sha256(target)


def test_metadata_milvus_would_refuse_fails_that_node_only_and_names_the_key(
    pack, image_dir
) -> None:  # type: ignore[no-untyped-def]
    files = _pngs(image_dir)
    nodes = [
        ImageNode(image_path=str(files[0]), metadata={"owner": "ana"}),
        ImageNode(image_path=str(files[1]), metadata={"big": -(2**70)}),
        ImageNode(image_path=str(files[2]), metadata={"note": "caf\udce9"}),
        ImageNode(image_path=str(files[3]), metadata={"tags": ["ok", 2**64]}),
        ImageNode(image_path=str(files[4]), metadata={"$meta": "x"}),
        ImageNode(image_path=str(files[5]), metadata={"path": "P", "meta_path": "MP"}),
        ImageNode(image_path=str(files[6]), metadata={"year": 2**63 - 1, "path": "P"}),
    ]
    report = pack.ingest(nodes)
    assert report.indexed == 2
    reasons = {f.path: f.reason for f in report.failed}
    assert set(reasons) == {str(f) for f in files[1:6]}
    assert "'big'" in reasons[str(files[1])] and "as a string" in reasons[str(files[1])]
    assert "'note'" in reasons[str(files[2])] and "UTF-8" in reasons[str(files[2])]
    assert "'tags'" in reasons[str(files[3])]
    assert "'$meta'" in reasons[str(files[4])]
    assert "'meta_path'" in reasons[str(files[5])] and "rename one" in reasons[str(files[5])]
    rows = pack.store.get([image_node_id(files[6])], ["meta_path", "year"])
    assert rows[image_node_id(files[6])]["meta_path"] == "P"
    assert rows[image_node_id(files[6])]["year"] == 2**63 - 1


def test_new_metadata_for_an_indexed_image_are_stored_without_a_forward_pass(
    pack, image_dir
) -> None:  # type: ignore[no-untyped-def]
    pack.ingest(image_dir)
    image = _pngs(image_dir)[0]
    node_id = image_node_id(image)
    tagged = pack.ingest([ImageNode(image_path=str(image), metadata={"tag": "new", "n": 1})])
    assert (tagged.indexed, tagged.forward_passes, tagged.unchanged) == (1, 0, 0)
    assert pack.store.get([node_id], ["tag", "n"])[node_id] | {"id": node_id} == {
        "id": node_id,
        "tag": "new",
        "n": 1,
    }
    again = pack.ingest([ImageNode(image_path=str(image), metadata={"tag": "new", "n": 1})])
    assert (again.indexed, again.unchanged) == (0, 1)
    folder_again = pack.ingest(image_dir)  # no metadata given: the stored ones stay
    assert folder_again.indexed == 0
    assert pack.store.get([node_id], ["tag"])[node_id]["tag"] == "new"


def test_one_image_given_twice_with_other_metadata_is_reported_not_overwritten(
    pack, image_dir
) -> None:  # type: ignore[no-untyped-def]
    import base64

    data = base64.b64encode(_pngs(image_dir)[0].read_bytes()).decode()
    report = pack.ingest(
        [
            ImageNode(image=data, metadata={"owner": "alice"}),
            ImageNode(image=data, metadata={"owner": "bob"}),
        ]
    )
    assert report.indexed == 1
    assert len(report.failed) == 1 and "with other metadata" in report.failed[0].reason
    rows = list(pack.store.iter_rows(["owner"]))
    assert [r["owner"] for r in rows] == ["alice"]


def test_one_image_given_twice_alike_is_indexed_and_counted_once(pack, image_dir) -> None:  # type: ignore[no-untyped-def]
    """Paths given twice are found once; so are nodes (by path or by bytes)."""
    import base64

    first, second = _pngs(image_dir)[:2]
    data = base64.b64encode(second.read_bytes()).decode()
    nodes = [
        ImageNode(image_path=str(first), metadata={"owner": "alice"}),
        ImageNode(image_path=str(first), metadata={"owner": "alice"}),
        ImageNode(image=data),
        ImageNode(image=data),
    ]
    report = pack.ingest(nodes)
    assert (report.seen, report.indexed, report.failed) == (2, 2, [])
    assert pack.store.count() == 2
    again = pack.ingest([str(first), str(first)])
    assert (again.seen, again.indexed, again.unchanged) == (1, 0, 1)


def test_copies_of_an_exif_rotated_photo_store_the_same_size(pack, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees when shown
    folder = tmp_path / "rotated"
    folder.mkdir()
    Image.new("RGB", (400, 200), (200, 30, 30)).save(folder / "r1.jpg", exif=exif)
    shutil.copyfile(folder / "r1.jpg", folder / "r2.jpg")  # vector reused, not decoded
    report = pack.ingest(folder)
    assert (report.indexed, report.forward_passes) == (2, 1)
    sizes = {
        Path(r["path"]).name: (r["width"], r["height"])
        for r in pack.store.iter_rows(["path", "width", "height"])
    }
    assert sizes == {"r1.jpg": (200, 400), "r2.jpg": (200, 400)}


def _captioned(pack) -> set[str]:  # type: ignore[no-untyped-def]
    return {row["path"] for row in pack.caption_store.iter_rows(["path"])}


def test_delete_by_id_path_folder_and_node_with_their_captions(hybrid_pack, image_dir) -> None:  # type: ignore[no-untyped-def]
    pack = hybrid_pack
    before = _stored(pack)
    assert _captioned(pack) == set(before)
    zh = sorted(str(p) for p in (image_dir / "text_zh").glob("*.png"))
    login = pack.retrieve("用户登录流程", mode="hybrid", branches=["bm25"], similarity_top_k=1)
    assert login[0].node.metadata["file_path"] in zh
    gone = _pngs(image_dir / "bar_chart")[0]
    gone.unlink()  # a file already deleted on disk is still removed by its path
    by_id = _pngs(image_dir / "flowchart")[0]
    report = pack.delete(
        [
            login[0],  # a search result
            str(gone),
            image_node_id(by_id),
            image_dir / "architecture",  # a folder
            "/nowhere/cat.png",
            12,
        ]
    )
    removed_paths = {
        login[0].node.metadata["file_path"],
        str(gone),
        str(by_id),
        *(str(p) for p in _pngs(image_dir / "architecture")),
    }
    after = _stored(pack)
    assert set(before) - set(after) == removed_paths
    assert len(report.removed) == len(removed_paths)
    reasons = {f.path: f.reason for f in report.failed}
    assert set(reasons) == {"/nowhere/cat.png", "12"}
    assert "not in the index" in reasons["/nowhere/cat.png"]
    assert "not an image id, a path or a node" in reasons["12"]
    assert _captioned(pack) == set(after)  # their captions went with them
    # BM25 and the fused search no longer find them
    for query in ("用户登录流程", "系统架构图"):
        hits = pack.retrieve(query, mode="hybrid", similarity_top_k=20)
        assert not {h.node.metadata["file_path"] for h in hits} & removed_paths
    assert "not in the index" in pack.delete(str(image_dir / "architecture")).failed[0].reason


def test_delete_names_no_expression_and_finds_gone_folders_and_ingested_nodes(  # type: ignore[no-untyped-def]
    pack, image_dir, tmp_path
) -> None:
    """A string is an id only when shaped like one: a quote in it cannot rewrite the
    Milvus expression (a file name with an apostrophe crashed the delete, and one crafted
    string deleted every row). A folder already gone from disk and the very nodes given
    to ``ingest`` are found too."""
    bobs = tmp_path / "Bob's photos"
    bobs.mkdir()
    shutil.copyfile(_pngs(image_dir)[0], bobs / "it's.png")
    gone = tmp_path / "gone"
    shutil.copytree(image_dir / "bar_chart", gone)
    node = ImageNode(image_path=str(_pngs(image_dir / "flowchart")[0]))
    pack.ingest([image_dir, bobs, gone, node])
    before = _stored(pack)
    report = pack.delete(["a'] or id not in ['", "x') or true or ('", str(bobs / "it's.png")])
    assert sorted(f.path for f in report.failed) == ["a'] or id not in ['", "x') or true or ('"]
    assert set(before) - set(_stored(pack)) == {str(bobs / "it's.png")}
    shutil.rmtree(gone)
    report = pack.delete([str(gone) + os.sep, node])
    assert report.failed == [] and len(report.removed) == 3
    assert not [p for p in _stored(pack) if p.startswith(str(gone) + os.sep)]
    assert node.image_path not in _stored(pack)


def test_delete_before_anything_was_indexed_reports_each_item(pack, tmp_path) -> None:  # type: ignore[no-untyped-def]
    report = pack.delete(["a.png", tmp_path])
    assert report.removed == [] and len(report.failed) == 2
