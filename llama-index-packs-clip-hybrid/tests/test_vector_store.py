"""The pack's collections through LlamaIndex's own MilvusVectorStore: what upstream does with
them as they are, and ``pack.vector_store(...)`` giving the pack's own results."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest
from llama_index.core import VectorStoreIndex
from llama_index.core.indices import MultiModalVectorStoreIndex
from llama_index.core.schema import ImageNode
from llama_index.packs.clip_hybrid import ClipHybridPack, LLMCaptioner
from llama_index.packs.clip_hybrid.captions.embedding import local_embedding_available
from llama_index.packs.clip_hybrid.options import OptionError
from llama_index.packs.clip_hybrid.testing import require

#: Run in a new process (a Milvus Lite database reopened, as a user's next session does).
_UPSTREAM = r"""
import json, sys
from llama_index.core.vector_stores.types import VectorStoreQuery
from llama_index.vector_stores.milvus import MilvusVectorStore
from llama_index.packs.clip_hybrid._compat.milvus_vector_store import open_vector_store

uri, dim = sys.argv[1], int(sys.argv[2])
query = VectorStoreQuery(query_embedding=[1.0] + [0.0] * (dim - 1), similarity_top_k=3)
out = {}
def ids_twice(store):
    return [[node.node_id for node in store.query(query).nodes] for _ in range(2)]
for name, options in {"defaults": {}, "vector_field": {"embedding_field": "vector"}}.items():
    try:
        store = MilvusVectorStore(uri=uri, collection_name="images", **options)
        out[name] = ids_twice(store)
    except Exception as exc:
        out[name] = str(exc)
store.client.load_collection("images")
out["loaded"] = ids_twice(store)
ours = open_vector_store(uri=uri, token=None, collection_name="images",
    embedding_field="vector", text_key="text", output_fields=["path"])
out["ours"] = ids_twice(ours)
out["row_ids"] = ours.query(query).ids
print(json.dumps(out))
"""


def test_upstream_store_on_the_collections_and_the_workaround(pack, image_dir) -> None:
    """Upstream, on a collection it did not create: the default field name is not there,
    a reopened Milvus Lite collection is 'released' and never loaded, and once loaded every
    query gives each row a new random node id. ``open_vector_store`` fixes the last two."""
    pack.ingest(image_dir)
    dim = pack.store.dim
    pack.close()
    run = subprocess.run(
        [sys.executable, "-c", _UPSTREAM, pack.store.uri, str(dim)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert "anns_field 'embedding' not found" in out["defaults"]
    assert "released" in out["vector_field"]
    first, second = out["loaded"]
    assert len(first) == 3 and not set(first) & set(second)  # new ids on every query
    first, second = out["ours"]
    assert first == second == out["row_ids"]


@pytest.fixture
def captioned_pack(milvus_uri, fast_clip, image_dir, stub):
    require(local_embedding_available(), "the local extra (all-MiniLM-L6-v2)")
    captioner = LLMCaptioner.openai(api_key="sk-test", api_base=stub.openai_base_url)
    pack = ClipHybridPack(
        uri=milvus_uri,
        embed_model=fast_clip,
        captioner=captioner,
        caption_embed="local",
        show_progress=False,
    )
    pack.ingest(image_dir)
    yield pack
    pack.close()


def _ranked(hits) -> list[tuple[str, float]]:
    return [(h.node.node_id, round(float(h.score), 5)) for h in hits]


def test_vector_store_index_over_the_images_gives_the_pack_top_10(captioned_pack) -> None:
    pack = captioned_pack
    index = VectorStoreIndex.from_vector_store(
        pack.vector_store("images"), embed_model=pack.embed_model
    )
    retriever = index.as_retriever(similarity_top_k=10)
    mine = pack.text_retriever(similarity_top_k=10).retrieve("a bar chart")
    hits = retriever.retrieve("a bar chart")
    assert len(hits) == 10 and _ranked(hits) == _ranked(mine)
    assert _ranked(asyncio.run(retriever.aretrieve("a bar chart"))) == _ranked(mine)
    for hit, own in zip(hits, mine, strict=True):
        assert isinstance(hit.node, ImageNode)
        assert hit.node.image_path == own.node.metadata["file_path"]
        assert hit.node.metadata["file_path"] == own.node.metadata["file_path"]
        assert hit.node.metadata["category"] == own.node.metadata["category"]


def test_the_store_reads_only_and_names_the_packs_way_to_write(captioned_pack) -> None:
    """Inserted through the store, a node's text vector landed in the image collection
    with the sha256 its metadata claimed, and the pack then reused it for that image."""
    from llama_index.core.schema import TextNode

    pack = captioned_pack
    count = pack.store.count()
    index = VectorStoreIndex.from_vector_store(
        pack.vector_store("images"), embed_model=pack.embed_model
    )
    row = next(pack.store.iter_rows(["path", "sha256"]))
    node = TextNode(text="red", metadata={"path": row["path"], "sha256": row["sha256"]})
    for write in (
        lambda: index.insert_nodes([node]),
        lambda: index.delete_nodes([row["id"]]),
        lambda: index.vector_store.clear(),
        lambda: asyncio.run(index.vector_store.async_add([node])),
    ):
        with pytest.raises(NotImplementedError, match=r"pack\.ingest\(\.\.\.\) to add images"):
            write()
    assert pack.store.count() == count
    with pytest.raises(OptionError, match="rebuild it with"):  # upstream would drop it
        pack.vector_store("images", overwrite=True, dim=32)
    assert pack.store.count() == count


def test_the_caption_collection_gives_the_caption_branch_top_10(captioned_pack) -> None:
    pack = captioned_pack
    store = pack.vector_store("captions")
    index = VectorStoreIndex.from_vector_store(store, embed_model=pack.caption_embed_model)
    query = "an architecture diagram"  # all-MiniLM-L6-v2 reads English
    hits = index.as_retriever(similarity_top_k=10).retrieve(query)
    branch = pack.hybrid_branches(wanted=["caption_vector"])["caption_vector"]
    branch.similarity_top_k = 10
    mine = branch.retrieve(query)
    assert len(hits) == 10 and _ranked(hits) == _ranked(mine)
    for hit, own in zip(hits, mine, strict=True):
        assert hit.node.get_content() == own.node.get_content()  # the caption
        assert hit.node.image_path == own.node.metadata["file_path"]
    assert "architecture diagram" in hits[0].node.get_content()


def test_multimodal_vector_store_index_over_both_collections(captioned_pack) -> None:
    pack = captioned_pack
    index = MultiModalVectorStoreIndex.from_vector_store(
        vector_store=pack.vector_store("captions"),
        image_vector_store=pack.vector_store("images"),
        embed_model=pack.caption_embed_model,
        image_embed_model=pack.embed_model,
    )
    retriever = index.as_retriever(similarity_top_k=3, image_similarity_top_k=10)
    mine = pack.text_retriever(similarity_top_k=10).retrieve("a bar chart")
    assert _ranked(retriever.text_to_image_retrieve("a bar chart")) == _ranked(mine)
    both = retriever.retrieve("an architecture diagram")
    ids = [h.node.node_id for h in both]
    assert len(ids) == len(set(ids)) > 3  # upstream keeps one node per id: one per image
    assert "architecture diagram" in both[0].node.get_content()
    assert all(isinstance(h.node, ImageNode) and h.node.image_path for h in both)


def test_vector_store_bad_names_and_no_collection_yet(pack) -> None:
    with pytest.raises(OptionError, match="'images' or 'captions'"):
        pack.vector_store("caption")
    with pytest.raises(ValueError, match="ingest images first"):
        pack.vector_store("images")
