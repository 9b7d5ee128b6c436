"""Index the sample images with CLIP in Milvus Lite and search them by text and by image.

    uv run python examples/demo.py [--clip-model ViT-B/32|/path/to/checkpoint.pt]

Text->image scores are real CLIP cosines (about 0.2-0.3 for a good match with ViT-B/32);
image->image shows the query image itself coming back at 1.0 and being filtered out.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_QUERIES = ("system architecture diagram", "a bar chart", "mountains at sunset")


def load_clip(model: str):  # type: ignore[no-untyped-def]
    from llama_index.embeddings.clip import ClipEmbedding

    try:
        return ClipEmbedding(model_name=model)
    except Exception as exc:  # upstream wraps every failure in ValueError
        cause = exc.__cause__ or exc
        raise SystemExit(
            f"Could not load the CLIP model {model!r} ({type(cause).__name__}: {cause}); "
            "if its weights cannot be downloaded here, pass --clip-model /path/to/checkpoint.pt "
            "(or set CLIP_HYBRID_CLIP_MODEL)."
        ) from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, default=HERE / "images")
    parser.add_argument("--db", default=None, help="Milvus Lite path (default: a temp dir)")
    parser.add_argument(
        "--clip-model", default=os.environ.get("CLIP_HYBRID_CLIP_MODEL", "ViT-B/32")
    )
    parser.add_argument("--query", action="append", help="text query (repeatable)")
    parser.add_argument("--top-k", type=int, default=3)
    args = parser.parse_args(argv)

    from llama_index.core import StorageContext
    from llama_index.core.indices import MultiModalVectorStoreIndex
    from llama_index.core.schema import ImageNode
    from llama_index.retrievers.selfhit import SelfHitFilteringRetriever
    from llama_index.vector_stores.milvus import MilvusVectorStore

    paths = sorted(p for p in args.images.rglob("*.png"))
    if not paths:
        print(f"No images found under {args.images}.", file=sys.stderr)
        return 1
    print(f"Loading CLIP {args.clip_model} ...", flush=True)
    clip = load_clip(args.clip_model)
    db = args.db or str(Path(tempfile.mkdtemp(prefix="clip-hybrid-demo-")) / "demo.db")
    dim = len(clip.get_text_embedding("probe"))
    stores = {
        name: MilvusVectorStore(
            uri=db,
            collection_name=name,
            dim=dim,
            similarity_metric="COSINE",
            overwrite=True,
            use_async_client=False,
        )
        for name in ("texts", "images")
    }
    storage = StorageContext.from_defaults(
        vector_store=stores["texts"], image_store=stores["images"]
    )
    nodes = [
        ImageNode(image_path=str(p), metadata={"file_path": str(p), "kind": p.parent.name})
        for p in paths
    ]
    print(f"Indexing {len(nodes)} images into Milvus Lite at {db} ...", flush=True)
    index = MultiModalVectorStoreIndex(
        nodes, storage_context=storage, embed_model=clip, image_embed_model=clip
    )
    inner = index.as_retriever(image_similarity_top_k=args.top_k)

    for query in args.query or DEFAULT_QUERIES:
        print(f"\ntext->image  {query!r}")
        for rank, hit in enumerate(inner.text_to_image_retrieve(query), 1):
            print(f"  {rank}. {hit.score:.4f}  {_rel(hit.node.metadata['file_path'])}")

    query_image = next((p for p in paths if p.parent.name == "architecture"), paths[0])
    retriever = SelfHitFilteringRetriever(inner)
    print(f"\nimage->image  {_rel(query_image)}")
    for rank, hit in enumerate(retriever.retrieve(query_image), 1):
        print(f"  {rank}. {hit.score:.4f}  {_rel(hit.node.metadata['file_path'])}")
    report = retriever.last_report
    for dropped in report.dropped if report else []:
        print(f"  filtered self-hit: score {dropped.score:.4f} (matched by {dropped.reason})")
    return 0


def _rel(path: str | Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(HERE))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    sys.exit(main())
