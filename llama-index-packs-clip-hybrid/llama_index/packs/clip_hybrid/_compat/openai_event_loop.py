"""Workaround: LlamaIndex's OpenAI LLMs keep an async client bound to their first event loop.

Upstream: run-llama/llama_index#20433 (closed without a fix); ``tests/test_captions.py``
shows the failure ("Event loop is closed" on the second sync call). Delete this the day
upstream binds the client to the loop.
"""

from __future__ import annotations

import asyncio
from typing import Any


def forget_client_of_closed_loop(llm: Any) -> None:
    """Workaround: make LlamaIndex's OpenAI LLMs open a new async client per event loop.

    ``llama-index-llms-openai`` (0.8.x, also ``OpenAILike``) keeps one ``AsyncOpenAI``
    client for the life of the LLM (``reuse_client=True``); its httpx connections belong
    to the event loop of the first call. Each sync ``VLMCaptionTransform(...)`` call runs
    its own loop (``asyncio_run``), so the second call fails with "Event loop is closed"
    (run-llama/llama_index#20433, closed without a fix; tests/test_captions.py shows it).
    Dropping the cached client when the loop changed makes the LLM build a new one.
    Delete this the day upstream binds the client to the loop.
    """
    if not hasattr(llm, "_aclient"):
        return
    loop = asyncio.get_running_loop()
    if getattr(llm, "_clip_hybrid_loop", None) is not loop:
        llm._aclient = None
        object.__setattr__(llm, "_clip_hybrid_loop", loop)
