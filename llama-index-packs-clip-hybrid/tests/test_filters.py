"""Every MetadataFilters operator, as a Milvus expression, run on real Milvus Lite.

Each filter's rows are checked against the same condition written in Python over the
rows the test stored, for a stored field (``width``, ``path``) and for dynamic metadata
given at ingestion (``note``, ``tags``, ``year``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from llama_index.core.vector_stores.types import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
)
from llama_index.packs.clip_hybrid import ImageStore
from llama_index.packs.clip_hybrid.milvus.filters import filters_to_expr

NOTES = ["100% sure", "a_b", 'say "hi"', "c:\\dir", "", "plain", "PLAIN text", "中文 说明"]
#: Control characters (json.dumps writes them as escapes Milvus Lite cannot parse).
CONTROL = ["bell\x07 \x01 back\x08 feed\x0c", "two\nlines\r\tand a tab"]
NOTES += CONTROL


def _row(i: int, note: str | None) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": f"i{i}",
        "vector": [1.0, 0.0, 0.0, i / 10],
        "path": f"/p/{note or 'none'}.png",
        "sha256": f"{i:064x}",
        "folder": "/p",
        "category": f"c{i % 3}",
        "width": 10 * i,
        "height": 1,
        "size": 1,
        "mtime": 0.0,
    }
    if note is not None:  # the last row has no dynamic metadata at all
        row |= {"note": note, "tags": ["all", f"t{i % 2}"], "year": 2020 + i}
    return row


ROWS = [_row(i, note) for i, note in enumerate([*NOTES, None])]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Any:
    store = ImageStore(uri=str(Path(tmp_path_factory.mktemp("filters")) / "f.db"))
    store.ensure(dim=4)
    store.upsert(ROWS)
    store.flush()
    yield store
    store.close()


def _ids(store: Any, filters: MetadataFilters) -> set[str]:
    hits = store.search([1.0, 0.0, 0.0, 0.0], limit=100, filter=filters_to_expr(filters))
    return {h.id for h in hits}


def _where(test: Callable[[dict[str, Any]], bool]) -> set[str]:
    return {row["id"] for row in ROWS if test(row)}


def _one(key: str, value: Any, op: FilterOperator) -> MetadataFilters:
    return MetadataFilters(filters=[MetadataFilter(key=key, value=value, operator=op)])


CASES = [
    ("width", 30, FilterOperator.EQ, lambda r: r["width"] == 30),
    ("width", 30, FilterOperator.NE, lambda r: r["width"] != 30),
    ("width", 30, FilterOperator.GT, lambda r: r["width"] > 30),
    ("width", 30, FilterOperator.GTE, lambda r: r["width"] >= 30),
    ("width", 30, FilterOperator.LT, lambda r: r["width"] < 30),
    ("width", 30, FilterOperator.LTE, lambda r: r["width"] <= 30),
    ("width", [0, 50, 999], FilterOperator.IN, lambda r: r["width"] in (0, 50)),
    ("width", [0, 50], FilterOperator.NIN, lambda r: r["width"] not in (0, 50)),
    ("year", 2023, FilterOperator.GTE, lambda r: r.get("year", 0) >= 2023),
    ("note", "plain", FilterOperator.EQ, lambda r: r.get("note") == "plain"),
    ("note", ["plain", "a_b"], FilterOperator.IN, lambda r: r.get("note") in ("plain", "a_b")),
    ("note", "中文 说明", FilterOperator.EQ, lambda r: r.get("note") == "中文 说明"),
    ("tags", "t1", FilterOperator.CONTAINS, lambda r: "t1" in r.get("tags", [])),
    ("note", None, FilterOperator.IS_EMPTY, lambda r: not r.get("note")),
    # TEXT_MATCH: a substring, case-sensitive; quotes, backslashes, % and CJK in the value.
    ("note", "plain", FilterOperator.TEXT_MATCH, lambda r: "plain" in r.get("note", "")),
    ("note", "100%", FilterOperator.TEXT_MATCH, lambda r: "100%" in r.get("note", "")),
    ("note", '"hi"', FilterOperator.TEXT_MATCH, lambda r: '"hi"' in r.get("note", "")),
    ("note", "c:\\dir", FilterOperator.TEXT_MATCH, lambda r: "c:\\dir" in r.get("note", "")),
    ("note", "说明", FilterOperator.TEXT_MATCH, lambda r: "说明" in r.get("note", "")),
    ("file_path", "100%", FilterOperator.TEXT_MATCH, lambda r: "100%" in r["path"]),
    *[("note", note, FilterOperator.EQ, lambda r, n=note: r.get("note") == n) for note in CONTROL],
    ("note", CONTROL, FilterOperator.IN, lambda r: r.get("note") in CONTROL),
    ("note", "\x01 back\x08", FilterOperator.TEXT_MATCH, lambda r: "\x01" in r.get("note", "")),
    ("note", "lines\r\t", FilterOperator.TEXT_MATCH, lambda r: "\r" in r.get("note", "")),
    ("file_path", "/p/plain", FilterOperator.EQ, lambda r: False),  # paths end in .png
    ("file_path", "/p/plain.png", FilterOperator.EQ, lambda r: r["path"] == "/p/plain.png"),
]


@pytest.mark.parametrize(("key", "value", "op", "test"), CASES)
def test_each_operator_finds_the_rows_its_condition_names(
    store: Any, key: str, value: Any, op: FilterOperator, test: Callable[[dict[str, Any]], bool]
) -> None:
    expected = _where(test)
    assert _ids(store, _one(key, value, op)) == expected


def test_ids_with_control_characters_are_found(store: Any) -> None:
    """Rows read by id (the pack's ``get``) with ids json.dumps would write as \\u0001."""
    ids = [f"odd\x01{c}" for c in "\x08\x0c\n\x00"]
    store.upsert([_row(50 + i, None) | {"id": row_id} for i, row_id in enumerate(ids)])
    try:
        assert set(store.get([*ids, "missing\x02"], ["path"])) == set(ids)
        assert {h.id for h in store.get_hits([(i, 1.0) for i in ids], filter="width >= 0")} == set(
            ids
        )
    finally:
        store.delete(ids)


def test_a_wildcard_in_a_text_match_value_matches_as_one(store: Any) -> None:
    # No escape for LIKE's "_" that Milvus Lite parses: "a_b" also finds "axb" (none here),
    # and "_" alone finds every note with at least one character.
    assert _ids(store, _one("note", "a_b", FilterOperator.TEXT_MATCH)) == {"i1"}
    assert _ids(store, _one("note", "_", FilterOperator.TEXT_MATCH)) == _where(
        lambda r: bool(r.get("note"))
    )


def test_conditions_and_nesting(store: Any) -> None:
    wide = MetadataFilter(key="width", value=20, operator=FilterOperator.GTE)
    c0 = MetadataFilter(key="category", value="c0", operator=FilterOperator.EQ)
    both = MetadataFilters(filters=[wide, c0], condition=FilterCondition.AND)
    either = MetadataFilters(filters=[wide, c0], condition=FilterCondition.OR)
    neither = MetadataFilters(filters=[wide, c0], condition=FilterCondition.NOT)
    is_wide = lambda r: r["width"] >= 20  # noqa: E731
    is_c0 = lambda r: r["category"] == "c0"  # noqa: E731
    assert _ids(store, both) == _where(lambda r: is_wide(r) and is_c0(r))
    assert _ids(store, either) == _where(lambda r: is_wide(r) or is_c0(r))
    assert _ids(store, neither) == _where(lambda r: not (is_wide(r) and is_c0(r)))
    nested = MetadataFilters(
        filters=[either, MetadataFilter(key="width", value=60, operator=FilterOperator.LT)]
    )
    assert _ids(store, nested) == _where(lambda r: (is_wide(r) or is_c0(r)) and r["width"] < 60)


def test_an_unsupported_key_or_operator_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="not a plain field name"):
        filters_to_expr(_one("width or 1", 3, FilterOperator.EQ))
    with pytest.raises(ValueError, match="'any' is not supported"):
        filters_to_expr(_one("tags", ["a"], FilterOperator.ANY))
