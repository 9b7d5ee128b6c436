"""ImageQueryEngine: answer a question from the images a retriever finds, with an LLM.

Retrieval-augmented generation over images: the retriever's top images go to the LLM as
image blocks (a vision LLM: GPT-4o, Qwen-VL-Max) with each image's caption and path as
text, after the question. With ``images=False`` only the captions are sent (any text
LLM). Images are shrunk to what the model bills for, as the captioner does.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.base.response.schema import RESPONSE_TYPE, Response
from llama_index.core.llms import LLM, ChatMessage, ImageBlock, TextBlock
from llama_index.core.query_engine import CustomQueryEngine
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle, QueryType
from pydantic import Field

from .captions.base import CaptionError
from .captions.llm import prepare_image
from .images.sources import ImageSource, ImageSourceError
from .options import OptionError

DEFAULT_ANSWER_PROMPT = (
    "Answer the question from the images below and their captions (a caption is a model's "
    "description of its image, or the text read in it). Say which image you used. If the "
    "images do not answer it, say so.\n\nQuestion: {question}"
)


class ImageQueryEngine(CustomQueryEngine):
    """Retrieve images for a question, then ask ``llm`` with the images and captions.

    Args:
        retriever: Any retriever of image nodes (``pack.hybrid_retriever()``, ...).
        llm: The LLM that answers; it must accept image blocks unless ``images=False``.
        images: Send the images themselves (a vision LLM), not only their captions.
        prompt: The instruction, with ``{question}``.

    Example:
        >>> engine = pack.as_query_engine(llm=OpenAI(model="gpt-4o"))  # doctest: +SKIP
        >>> print(engine.query("What does the architecture diagram say?"))  # doctest: +SKIP
    """

    retriever: BaseRetriever
    llm: LLM
    images: bool = True
    prompt: str = Field(default=DEFAULT_ANSWER_PROMPT)

    @classmethod
    def over(cls, pack: Any, llm: LLM | None = None, **kwargs: Any) -> ImageQueryEngine:
        """The engine over a pack's hybrid retriever (``kwargs``: its options, and
        ``images``); ``llm`` defaults to ``Settings.llm``. With nothing indexed yet the
        CLIP retriever answers, with nothing, honestly."""
        from llama_index.core import Settings

        images = kwargs.pop("images", True)
        try:
            retriever: BaseRetriever = pack.hybrid_retriever(**kwargs)
        except OptionError:
            retriever = pack.text_retriever(**kwargs)
        return cls(retriever=retriever, llm=llm or Settings.llm, images=images)

    # CustomQueryEngine passes custom_query only the text of a bundle: an image query
    # (``QueryBundle(question, image_path=...)``) ran as text. The bundle goes whole here.
    def query(self, str_or_query_bundle: QueryType) -> RESPONSE_TYPE:
        with self.callback_manager.as_trace("query"):
            return self.custom_query(str_or_query_bundle)

    async def aquery(self, str_or_query_bundle: QueryType) -> RESPONSE_TYPE:
        with self.callback_manager.as_trace("query"):
            return await self.acustom_query(str_or_query_bundle)

    def custom_query(self, query: str | QueryBundle) -> Response:
        hits = self.retriever.retrieve(query)
        reply = self.llm.chat([self._message(_question(query), hits)])
        return Response(response=reply.message.content or "", source_nodes=hits)

    async def acustom_query(self, query: str | QueryBundle) -> Response:
        hits = await self.retriever.aretrieve(query)
        message = await asyncio.to_thread(self._message, _question(query), hits)
        reply = await self.llm.achat([message])
        return Response(response=reply.message.content or "", source_nodes=hits)

    def _message(self, question: str, hits: list[NodeWithScore]) -> ChatMessage:
        blocks: list[Any] = [TextBlock(text=self.prompt.format(question=question))]
        for number, hit in enumerate(hits, 1):
            node = hit.node
            path = node.metadata.get("file_path") or getattr(node, "image_path", None) or ""
            caption = node.get_content(metadata_mode=MetadataMode.NONE).strip()
            lines = [f"Image {number}: {Path(path).name or node.node_id}"]
            lines.append(f"Caption: {caption}" if caption else "Caption: (none)")
            blocks.append(TextBlock(text="\n".join(lines)))
            if self.images and path:
                image = _image_block(path)
                if image is not None:
                    blocks.append(image)
        return ChatMessage(role="user", blocks=blocks)


def _question(query: str | QueryBundle) -> str:
    return query.query_str if isinstance(query, QueryBundle) else query


def _image_block(path: str) -> ImageBlock | None:
    """The image at ``path`` as the model should receive it; None when it cannot be read
    now (moved, damaged): the caption still goes."""
    try:
        data, mimetype = prepare_image(ImageSource(path=path).read())
    except (ImageSourceError, CaptionError):
        return None
    return ImageBlock(image=data, image_mimetype=mimetype)
