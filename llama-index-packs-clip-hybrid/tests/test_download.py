"""download_llama_pack: the upstream pack workflow for this pack."""

from __future__ import annotations

import sys

import pytest
from llama_index.packs.clip_hybrid import ClipHybridPack, download_llama_pack


def test_without_a_folder_returns_the_installed_class() -> None:
    assert download_llama_pack("ClipHybridPack") is ClipHybridPack


def test_copies_the_source_and_loads_the_class_from_the_copy(
    tmp_path, fast_clip, image_dir, milvus_uri
) -> None:  # type: ignore[no-untyped-def]
    Pack = download_llama_pack("ClipHybridPack", str(tmp_path / "mine"))
    copy = tmp_path / "mine" / "clip_hybrid_pack"
    assert (copy / "pack.py").is_file() and (copy / "requirements.txt").is_file()
    assert Pack is not ClipHybridPack and Pack.__module__.startswith("clip_hybrid_pack_")
    # The copy lives under its own module name: the installed package is untouched.
    assert sys.modules["llama_index.packs.clip_hybrid.pack"].ClipHybridPack is ClipHybridPack
    assert Pack.__module__ + ".py" != ClipHybridPack.__module__
    # The copy works as the pack does.
    pack = Pack(uri=milvus_uri, embed_model=fast_clip, similarity_top_k=2)
    pack.ingest(image_dir)
    assert len(pack.run("a flowchart")) == 2

    # A user's edit in the copy takes effect, and a second call keeps it.
    source = (copy / "pack.py").read_text()
    (copy / "pack.py").write_text(source + "\n\nClipHybridPack.edited_by_user = True\n")
    Edited = download_llama_pack("ClipHybridPack", str(tmp_path / "mine"))
    assert Edited.edited_by_user is True
    Fresh = download_llama_pack("ClipHybridPack", str(tmp_path / "mine"), refresh_cache=True)
    assert not hasattr(Fresh, "edited_by_user")


def test_unknown_class_and_urls_are_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="Unknown pack class 'NopePack'"):
        download_llama_pack("NopePack", str(tmp_path))
    with pytest.raises(ValueError, match="nothing is downloaded"):
        download_llama_pack("ClipHybridPack", str(tmp_path), llama_pack_url="http://x")
    assert not (tmp_path / "clip_hybrid_pack").exists()
