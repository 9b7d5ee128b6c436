"""The pack's parts inside LlamaIndex: an ingestion pipeline, LlamaIndex's own Milvus store,
upstream fusion, an evaluator, an agent tool, query engines (text and vision) and a workflow.

    uv run python examples/compose.py [--db examples/clip_hybrid_demo.db] [--query 系统架构图]

Run `make demo` first (it builds the index this reads). The parts that ask GPT-4o (the
captions of the pipeline, the query engines, the workflow) need OPENAI_API_KEY
(OPENAI_BASE_URL for a proxy); without a key the pipeline captions with offline OCR and the
LLM parts are skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default=str(HERE / "clip_hybrid_demo.db"))
    parser.add_argument(
        "--clip-model",
        default=os.environ.get("CLIP_HYBRID_CLIP_MODEL") or None,
        help="default: the model the index was built with",
    )
    parser.add_argument("--query", default="系统架构图")
    args = parser.parse_args(argv)

    from llama_index.packs.clip_hybrid import ClipHybridPack

    pack = ClipHybridPack(
        uri=args.db, clip_model=args.clip_model, captioner="none", show_progress=False
    )
    try:
        if not pack.store.open_existing():
            print(f"No index at {args.db}: run `make demo` first.", file=sys.stderr)
            return 1
        ingestion_pipeline(pack)
        retriever = pack.hybrid_retriever(similarity_top_k=3)
        print(f"\nbranches: {', '.join(retriever.branch_names)}")
        milvus_vector_store(pack, args.query)
        upstream_fusion(pack, args.query)
        evaluator(pack)
        agent_tool(retriever, args.query)
        if not os.environ.get("OPENAI_API_KEY"):
            print("\nOPENAI_API_KEY is not set: skipping the query engines and the workflow.")
            return 0
        from llama_index.core.query_engine import RetrieverQueryEngine
        from llama_index.llms.openai import OpenAI

        llm = OpenAI(model="gpt-4o", api_base=os.environ.get("OPENAI_BASE_URL"))
        # A text LLM over the fused results: each node's text is its image's caption.
        engine = RetrieverQueryEngine.from_args(retriever, llm=llm)
        print(f"\nRetrieverQueryEngine: {engine.query(f'Which images match: {args.query}?')}")
        # A vision LLM: the images themselves and their captions.
        vision = pack.as_query_engine(llm=llm, similarity_top_k=3)
        print(f"\nImageQueryEngine: {vision.query(f'What does the {args.query} show?')}")
        print(f"\nWorkflow: {asyncio.run(_ask_images(retriever, llm, args.query))}")
        return 0
    finally:
        pack.close()


def ingestion_pipeline(pack) -> None:  # type: ignore[no-untyped-def]
    """Caption images in an IngestionPipeline (any reader's documents), then index its
    image nodes with the pack: the same ids, so already indexed images are unchanged."""
    from llama_index.core import SimpleDirectoryReader
    from llama_index.core.ingestion import IngestionPipeline
    from llama_index.packs.clip_hybrid import VLMCaptionTransform

    files = sorted((HERE / "images" / "text_zh").glob("*.png"))[:2]
    transform = VLMCaptionTransform("auto")  # GPT-4o with a key, else offline OCR
    nodes = IngestionPipeline(transformations=[transform]).run(
        documents=SimpleDirectoryReader(input_files=files).load_data()
    )
    captions = [n for n in nodes if "image_id" in n.metadata]  # one per image it captioned
    print(f"IngestionPipeline ({transform.captioner.name}):")
    for caption in captions:
        print(f"  {_rel(caption.metadata['image_path'])}: {caption.get_content()[:60]!r}")
    report = pack.ingest([n for n in nodes if "image_id" not in n.metadata])
    print(  # the reader's metadata are new to the index: stored, with no forward pass
        f"  pack.ingest: {report.indexed} indexed ({report.forward_passes} forward passes), "
        f"{report.unchanged} unchanged"
    )


def milvus_vector_store(pack, query: str) -> None:  # type: ignore[no-untyped-def]
    """LlamaIndex's own MilvusVectorStore over the pack's collections."""
    from llama_index.core import VectorStoreIndex

    index = VectorStoreIndex.from_vector_store(
        pack.vector_store("images"), embed_model=pack.embed_model
    )
    hits = index.as_retriever(similarity_top_k=3).retrieve(query)
    own = pack.text_retriever(similarity_top_k=3).retrieve(query)
    same = [h.node.node_id for h in hits] == [h.node.node_id for h in own]
    print(f"\nMilvusVectorStore images top-3 (the pack's own: {same}):")
    for hit in hits:
        print(f"  {hit.score:.4f}  {_rel(hit.node.image_path)}")
    if pack.caption_embed_model is not None and pack.caption_store.open_if_present():
        captions = VectorStoreIndex.from_vector_store(
            pack.vector_store("captions"), embed_model=pack.caption_embed_model
        )
        top = captions.as_retriever(similarity_top_k=1).retrieve(query)[0]
        print(f"MilvusVectorStore captions top-1: {top.node.get_content()[:60]!r}")


def upstream_fusion(pack, query: str) -> None:  # type: ignore[no-untyped-def]
    """LlamaIndex's QueryFusionRetriever over the pack's branch retrievers."""
    from llama_index.core.llms import MockLLM
    from llama_index.core.retrievers import QueryFusionRetriever

    branches = pack.get_modules()["branch_retrievers"]
    fusion = QueryFusionRetriever(
        list(branches.values()),
        llm=MockLLM(),  # one query, no rewriting: no LLM call
        mode="reciprocal_rerank",
        similarity_top_k=3,
        num_queries=1,
        use_async=False,
    )
    print(f"\nQueryFusionRetriever over {', '.join(branches)}:")
    for hit in fusion.retrieve(query):
        print(f"  {hit.score:.4f}  {_rel(hit.node.metadata['file_path'])}")


def evaluator(pack) -> None:  # type: ignore[no-untyped-def]
    """LlamaIndex's RetrieverEvaluator on the sample qrels (text queries)."""
    from llama_index.core.evaluation import RetrieverEvaluator
    from llama_index.packs.clip_hybrid import image_node_id

    qrels = [json.loads(line) for line in (HERE / "qrels.jsonl").read_text().splitlines()]
    qrels = [q for q in qrels if "query" in q][:8]
    scores: dict[str, list[float]] = {}
    for name, retriever in (
        ("hybrid", pack.hybrid_retriever(similarity_top_k=5)),
        ("clip", pack.text_retriever(similarity_top_k=5)),
    ):
        evaluator = RetrieverEvaluator.from_metric_names(["hit_rate", "mrr"], retriever=retriever)
        for q in qrels:
            expected = [image_node_id(HERE / path) for path in q["relevant"]]
            result = evaluator.evaluate(q["query"], expected_ids=expected)
            scores.setdefault(f"{name} mrr", []).append(result.metric_vals_dict["mrr"])
    print(f"\nRetrieverEvaluator, {len(qrels)} sample queries:")
    for key, values in scores.items():
        print(f"  {key}: {sum(values) / len(values):.3f}")


def agent_tool(retriever, query: str) -> None:  # type: ignore[no-untyped-def]
    """An agent tool: any LlamaIndex agent can call it, with text or an image path."""
    from llama_index.core.tools import RetrieverTool

    tool = RetrieverTool.from_defaults(
        retriever=retriever,
        name="find_images",
        description="Find images by what they show or by the text in them, any language.",
    )
    print("\nRetrieverTool find_images:")
    for hit in tool.call(query).raw_output:
        print(f"  {hit.score:.4f}  {_rel(hit.node.metadata['file_path'])}")


async def _ask_images(retriever, llm, query: str) -> str:  # type: ignore[no-untyped-def]
    from llama_index.core.llms import ChatMessage, ImageBlock, TextBlock
    from llama_index.core.workflow import StartEvent, StopEvent, Workflow, step

    class AskImages(Workflow):
        @step
        async def answer(self, ev: StartEvent) -> StopEvent:
            hits = await retriever.aretrieve(ev.query)
            blocks = [TextBlock(text=f"Describe how these images relate to: {ev.query}")]
            blocks += [ImageBlock(path=h.node.metadata["file_path"]) for h in hits]
            reply = await llm.achat([ChatMessage(role="user", blocks=blocks)])
            return StopEvent(result=reply.message.content)

    return str(await AskImages(timeout=120).run(query=query))


def _rel(path: str | None) -> str:
    try:
        return str(Path(path or "").resolve().relative_to(HERE))
    except ValueError:
        return path or ""


if __name__ == "__main__":
    sys.exit(main())
