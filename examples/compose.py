"""The pack's hybrid retriever inside LlamaIndex: a query engine, an agent tool, a workflow.

    uv run python examples/compose.py [--db examples/clip_hybrid_demo.db] [--query 系统架构图]

Run `make demo` first (it builds the index this reads). The query engine and the workflow
ask GPT-4o (set OPENAI_API_KEY; OPENAI_BASE_URL for a proxy); without a key they are
skipped and the retriever tool still runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default=str(HERE / "clip_hybrid_demo.db"))
    parser.add_argument(
        "--clip-model", default=os.environ.get("CLIP_HYBRID_CLIP_MODEL", "ViT-B/32")
    )
    parser.add_argument("--query", default="系统架构图")
    args = parser.parse_args(argv)

    from llama_index.core.tools import RetrieverTool
    from llama_index.packs.clip_hybrid import ClipHybridPack

    pack = ClipHybridPack(uri=args.db, clip_model=args.clip_model, captioner="none")
    try:
        if not pack.store.open_existing():
            print(f"No index at {args.db}: run `make demo` first.", file=sys.stderr)
            return 1
        retriever = pack.hybrid_retriever(similarity_top_k=3)
        print(f"branches: {', '.join(retriever.branch_names)}")

        # 1. An agent tool: any LlamaIndex agent can call it.
        tool = RetrieverTool.from_defaults(
            retriever=retriever,
            name="find_images",
            description="Find images by what they show or by the text in them, any language.",
        )
        print("\nRetrieverTool find_images:")
        for hit in tool.call(args.query).raw_output:
            print(f"  {hit.score:.4f}  {_rel(hit.node.metadata['file_path'])}")

        if not os.environ.get("OPENAI_API_KEY"):
            print("\nOPENAI_API_KEY is not set: skipping the query engine and the workflow.")
            return 0
        from llama_index.core.query_engine import RetrieverQueryEngine
        from llama_index.llms.openai import OpenAI

        llm = OpenAI(model="gpt-4o", api_base=os.environ.get("OPENAI_BASE_URL"))

        # 2. A query engine over the fused results.
        engine = RetrieverQueryEngine.from_args(retriever, llm=llm)
        response = engine.query(f"Which images match: {args.query}?")
        print(f"\nRetrieverQueryEngine: {response}")

        # 3. A workflow step: retrieve, then show the images themselves to the vision LLM.
        print(f"\nWorkflow: {asyncio.run(_ask_images(retriever, llm, args.query))}")
        return 0
    finally:
        pack.store.close()


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


def _rel(path: str) -> str:
    try:
        return str(Path(path).resolve().relative_to(HERE))
    except ValueError:
        return path


if __name__ == "__main__":
    sys.exit(main())
