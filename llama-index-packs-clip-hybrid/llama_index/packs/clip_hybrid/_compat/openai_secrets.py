"""Workaround: LlamaIndex's OpenAI integrations show the API key to anyone who prints them.

``repr()``, ``str()``, ``to_dict()``, ``to_json()`` and ``model_dump()`` of ``OpenAI``,
``OpenAILike`` and ``OpenAIEmbedding`` carry ``api_key`` in plain text
(run-llama/llama_index#12853; the fix, PR #21613, was closed unmerged; still so in
llama-index-llms-openai 0.8.3, -llms-openai-like 0.8.1, -embeddings-openai 0.7.0).
LlamaIndex's own instrumentation puts ``to_dict()`` of the LLM into its events, so the key
reaches any event handler or log. The pack builds these objects only through the
subclasses below (imported lazily, where those objects are built), which keep the key
for the client and mask it everywhere else.
``tests/test_secrets.py`` shows the upstream leak; delete this module when it fails.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from llama_index.embeddings.openai import OpenAIEmbedding
from llama_index.llms.openai import OpenAI
from llama_index.llms.openai_like import OpenAILike

SECRET_FIELDS = ("api_key",)
MASK = "**redacted**"


class RedactSecrets:
    """Mixin (first base) for a pydantic LlamaIndex component with secret fields."""

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():  # type: ignore[misc]
            yield name, (MASK if name in SECRET_FIELDS and value else value)

    def model_dump(self, **kwargs: Any) -> dict[str, Any]:
        data: dict[str, Any] = super().model_dump(**kwargs)  # type: ignore[misc]
        for name in SECRET_FIELDS:
            if data.get(name):
                data[name] = MASK
        return data

    def model_dump_json(self, *, indent: int | None = None, **kwargs: Any) -> str:
        return json.dumps(self.model_dump(mode="json", **kwargs), indent=indent)


class RedactedOpenAI(RedactSecrets, OpenAI):
    """``OpenAI`` whose key stays out of reprs, dicts and JSON."""


class RedactedOpenAILike(RedactSecrets, OpenAILike):
    """``OpenAILike`` whose key stays out of reprs, dicts and JSON."""


class RedactedOpenAIEmbedding(RedactSecrets, OpenAIEmbedding):
    """``OpenAIEmbedding`` whose key stays out of reprs, dicts and JSON."""
