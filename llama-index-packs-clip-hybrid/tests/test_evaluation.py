"""The evaluation harness's metrics against hand-computed values."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from llama_index.packs.clip_hybrid.evaluation import evaluate, load_qrels


class _Node:
    def __init__(self, path: str) -> None:
        self.metadata = {"file_path": path}
        self.node_id = path


class _Hit:
    def __init__(self, path: str) -> None:
        self.node = _Node(path)


class _FixedPack:
    """Stands in for a pack's retrieval (the harness is what is tested here)."""

    def __init__(self, ranking: dict[str, list[str]]) -> None:
        self.ranking = ranking

    def retrieve(self, query, *, mode: str, similarity_top_k: int):  # type: ignore[no-untyped-def]
        key = str(query)
        return [_Hit(p) for p in self.ranking[key]][:similarity_top_k]


def test_metrics_match_hand_computed_values(tmp_path: Path) -> None:
    qrels = tmp_path / "q.jsonl"
    lines = [
        {"query": "a", "lang": "en", "relevant": ["x.png"]},
        {"query": "b", "lang": "zh", "relevant": ["y.png", "z.png"]},
    ]
    qrels.write_text("\n".join(json.dumps(line) for line in lines))
    parsed = load_qrels(qrels)
    x, y, z = (str((tmp_path / n).resolve()) for n in ("x.png", "y.png", "z.png"))
    other = [str(tmp_path / f"o{i}.png") for i in range(10)]
    # "a": x at rank 3; "b": y at rank 1, z at rank 7.
    pack = _FixedPack({"a": [other[0], other[1], x, *other[2:]], "b": [y, *other[:5], z]})
    report = evaluate(pack, parsed, ("text",))
    scores = report.modes["text"]
    assert scores.queries == 2
    assert scores.recall_at_1 == pytest.approx((0 + 0.5) / 2)
    assert scores.recall_at_5 == pytest.approx((1 + 0.5) / 2)
    assert scores.recall_at_10 == pytest.approx(1.0)
    assert scores.mrr == pytest.approx((1 / 3 + 1) / 2, abs=1e-4)
    import math

    ndcg_a = (1 / math.log2(4)) / 1
    ndcg_b = (1 + 1 / math.log2(8)) / (1 + 1 / math.log2(3))
    assert scores.ndcg_at_10 == pytest.approx((ndcg_a + ndcg_b) / 2, abs=1e-4)
    assert report.by_language["text"]["zh"].recall_at_5 == pytest.approx(0.5)
    assert report.misses == []


def test_qrels_errors_name_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"query": "a", "relevant": ["x"]}\n{"query": "b", "image": "c", "relevant": ["x"]}\n'
    )
    with pytest.raises(ValueError, match=r"bad.jsonl:2: give exactly one"):
        load_qrels(bad)
    bad.write_text("not json\n")
    with pytest.raises(ValueError, match=r":1: not JSON"):
        load_qrels(bad)
    # Values of the wrong kind said "expected str, bytes or os.PathLike object, not int",
    # with no line; an empty file printed an empty table.
    for line, said in (
        ('{"query": "x", "relevant": [5]}', '"relevant" must be a non-empty list of paths'),
        ('{"query": "x", "relevant": [null]}', '"relevant" must be a non-empty list of paths'),
        ('{"image": null, "relevant": ["x"]}', '"image" must be a non-empty string'),
        ('{"query": 5, "relevant": ["x"]}', '"query" must be a non-empty string'),
        ('{"query": "x", "relevant": ["x"], "lang": null}', '"lang" must be a string'),
    ):
        bad.write_text('{"query": "ok", "relevant": ["y"]}\n' + line + "\n")
        with pytest.raises(ValueError, match=rf"bad.jsonl:2: {re.escape(said)}"):
            load_qrels(bad)
    bad.write_text("\n# only a comment\n")
    with pytest.raises(ValueError, match="has no queries"):
        load_qrels(bad)


def test_the_shipped_qrels_parse_and_point_at_existing_images() -> None:
    root = Path(__file__).resolve().parents[2] / "examples"
    qrels = load_qrels(root / "qrels.jsonl")
    assert {q.lang for q in qrels} >= {"en", "zh"} and any(q.image for q in qrels)
    for q in qrels:
        assert all(Path(p).is_file() for p in q.relevant)
        assert q.image is None or Path(q.image).is_file()


def test_ndcg_at_10_is_1_for_a_perfect_top_10_of_more_relevant_images() -> None:
    from llama_index.core.evaluation.retrieval.metrics import NDCG
    from llama_index.packs.clip_hybrid.evaluation import ndcg_at

    relevant = [f"r{i}" for i in range(12)]
    perfect = relevant[:10]
    # Upstream sums the ideal over all 12 expected ids: a perfect top 10 scores < 1.
    assert NDCG().compute(expected_ids=relevant, retrieved_ids=perfect).score < 0.9
    assert ndcg_at(relevant, perfect, 10) == pytest.approx(1.0)
    assert ndcg_at(relevant, ["x", *perfect], 10) < 1.0


def test_duplicate_relevant_paths_and_a_self_relevant_image_query(tmp_path: Path) -> None:
    qrels = tmp_path / "q.jsonl"
    lines = [
        {"query": "a", "relevant": ["x.png", "./x.png", "x.png"]},  # one image, thrice
        {"image": "q.png", "relevant": ["q.png", "y.png"]},  # the query is a self-hit
        {"image": "y.png", "relevant": ["y.png"]},  # nothing else to find: skipped
    ]
    qrels.write_text("\n".join(json.dumps(line) for line in lines))
    parsed = load_qrels(qrels)
    x, y = (str((tmp_path / n).resolve()) for n in ("x.png", "y.png"))
    assert parsed[0].relevant == (x,)
    other = [str(tmp_path / f"o{i}.png") for i in range(10)]
    q = str((tmp_path / "q.png").resolve())
    pack = _FixedPack({"a": [x, *other], q: [y, *other], y: other})
    report = evaluate(pack, parsed, ("text", "image"))
    assert report.modes["text"].ndcg_at_10 == pytest.approx(1.0)
    assert report.modes["image"].queries == 1
    assert report.modes["image"].recall_at_1 == pytest.approx(1.0)
    assert report.modes["image"].ndcg_at_10 == pytest.approx(1.0)
    assert report.misses == []


def test_a_copy_of_the_query_image_is_a_self_hit_not_a_miss(tmp_path: Path) -> None:
    """The self-hit filter drops files with the query's bytes too: a relevant copy could
    never be found, and eval counted it as a miss (recall@10 0.5 for a perfect search)."""
    (tmp_path / "q.png").write_bytes(b"the same bytes")
    (tmp_path / "copy.png").write_bytes(b"the same bytes")
    (tmp_path / "y.png").write_bytes(b"other bytes")
    qrels = tmp_path / "q.jsonl"
    qrels.write_text(json.dumps({"image": "q.png", "relevant": ["copy.png", "y.png"]}))
    parsed = load_qrels(qrels)
    q, y = (str((tmp_path / n).resolve()) for n in ("q.png", "y.png"))
    other = [str(tmp_path / f"o{i}.png") for i in range(10)]
    report = evaluate(_FixedPack({q: [y, *other]}), parsed, ("image",))
    assert report.modes["image"].recall_at_10 == pytest.approx(1.0)
    assert report.misses == []


def test_a_query_a_mode_cannot_run_skips_that_query_not_the_mode(tmp_path: Path) -> None:
    """One image query the caption-only mode could not run made eval drop the mode for
    every query after it."""
    from llama_index.packs.clip_hybrid.options import OptionError

    class _Picky(_FixedPack):
        def retrieve(self, query, *, mode: str, similarity_top_k: int):  # type: ignore[no-untyped-def]
            if str(query).endswith("q.png"):
                raise OptionError("Without CLIP an image query needs a caption")
            return super().retrieve(query, mode=mode, similarity_top_k=similarity_top_k)

    qrels = tmp_path / "q.jsonl"
    lines = [{"query": "a", "relevant": ["x.png"]}, {"image": "q.png", "relevant": ["x.png"]}]
    lines += [{"query": "b", "relevant": ["x.png"]}, {"query": "c", "relevant": ["x.png"]}]
    qrels.write_text("\n".join(json.dumps(line) for line in lines))
    x = str((tmp_path / "x.png").resolve())
    pack = _Picky({"a": [x], "b": [x], "c": [x]})
    report = evaluate(pack, load_qrels(qrels), ("hybrid",))
    assert report.modes["hybrid"].queries == 3 and report.skipped_modes == {}
    only_images = evaluate(pack, load_qrels(qrels)[1:2], ("hybrid",))
    assert "caption" in only_images.skipped_modes["hybrid"] and only_images.modes == {}
