"""LlamaIndex MetadataFilters -> a Milvus boolean expression (upstream's is broken for
image retrieval, #15165)."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from llama_index.core.vector_stores.types import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
)

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ALIASES = {"file_path": "path", "image_sha256": "sha256", "file_name": None}

_BINARY = {
    FilterOperator.EQ: "==",
    FilterOperator.NE: "!=",
    FilterOperator.GT: ">",
    FilterOperator.GTE: ">=",
    FilterOperator.LT: "<",
    FilterOperator.LTE: "<=",
}


def _field(key: str) -> str:
    key = _ALIASES.get(key, key) or key
    if not _KEY.match(key):
        raise ValueError(
            f"Metadata filter key {key!r} is not a plain field name (letters, digits, _)."
        )
    return key


#: The escapes a Milvus string literal may use. Milvus Lite's parser knows only these
#: (``\u0001``, ``\b`` or ``\f``, which ``json.dumps`` writes, fail to parse:
#: "unknown escape sequence"); every other character, controls and NUL included, is
#: written as itself (measured on Milvus Lite: each such id and filter value finds its row).
_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"})


def string_literal(text: str) -> str:
    """``text`` as a Milvus expression's double-quoted string."""
    return f'"{text.translate(_ESCAPES)}"'


def _value(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return f"[{', '.join(_value(item) for item in value)}]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return string_literal(value)
    return json.dumps(value, ensure_ascii=False)


def list_literal(values: Sequence[Any]) -> str:
    """Values as the list literal of a Milvus expression (``["a", "b"]``)."""
    return _value(list(values))


def _one(flt: MetadataFilter) -> str:
    key = _field(flt.key)
    op = flt.operator
    if op in _BINARY:
        return f"{key} {_BINARY[op]} {_value(flt.value)}"
    if op == FilterOperator.IN:
        return f"{key} in {_value(flt.value)}"
    if op == FilterOperator.NIN:
        return f"{key} not in {_value(flt.value)}"
    if op == FilterOperator.CONTAINS:
        return f"array_contains({key}, {_value(flt.value)})"
    if op == FilterOperator.TEXT_MATCH:
        # A substring match. Milvus Lite 3.2.2 parses no escape for LIKE's wildcards ("\%"
        # is a parse error), so a "%" or "_" in the value matches as one: any run of
        # characters, any one character ("a_b" also finds "axb").
        return f"{key} like {string_literal(f'%{flt.value}%')}"
    if op == FilterOperator.IS_EMPTY:
        return f'({key} is null or {key} == "")'
    raise ValueError(f"Metadata filter operator {op.value!r} is not supported for images.")


def filters_to_expr(filters: MetadataFilters | None) -> str:
    """A Milvus filter expression for ``filters`` ("" for none).

    Keys are the stored fields (``path``/``file_path``, ``folder``, ``category``,
    ``width``, ``height``, ``size``, ``mtime``, ``sha256``) or any metadata key given at
    ingestion (Milvus dynamic fields).
    """
    if filters is None or not filters.filters:
        return ""
    parts = []
    for flt in filters.filters:
        if isinstance(flt, MetadataFilters):
            inner = filters_to_expr(flt)
            if inner:
                parts.append(f"({inner})")
        else:
            parts.append(f"({_one(flt)})")
    condition = filters.condition or FilterCondition.AND
    if condition == FilterCondition.NOT:
        return "not (" + " and ".join(parts) + ")"
    joiner = " or " if condition == FilterCondition.OR else " and "
    return joiner.join(parts)
