"""A newcomer's first hour with the CLI: it remembers its index, runs what can run, says
things in flags, stays quiet, and shows progress where a person watches."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from llama_index.packs.clip_hybrid import ClipHybridPack
from llama_index.packs.clip_hybrid.cli import main

SCRIPT = Path(sys.executable).parent / "clip-hybrid"


def _cli(capsys, *args: str) -> tuple[int, str, str]:  # type: ignore[no-untyped-def]
    capsys.readouterr()
    try:
        code = main(list(args))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def _caption(request) -> str:  # type: ignore[no-untyped-def]
    return "A diagram. Text: 系统架构图 API gateway"


@pytest.fixture
def stub(monkeypatch):  # type: ignore[no-untyped-def]
    from llama_index.packs.clip_hybrid.testing import ApiStub

    with ApiStub(caption=_caption) as server:
        monkeypatch.setenv("OPENAI_API_KEY", "sk-first-hour-000")
        monkeypatch.setenv("OPENAI_BASE_URL", server.openai_base_url)
        yield server


@pytest.fixture
def captioned(tmp_path, image_dir, tiny_clip_checkpoint, stub, capsys):  # type: ignore[no-untyped-def]
    """An index with CLIP vectors and captions whose vectors are off (--caption-embed none)."""
    db = str(tmp_path / "first.db")
    code, _, err = _cli(
        capsys,
        *("index", str(image_dir), "--db", db, "--clip-model", str(tiny_clip_checkpoint)),
        *("--captioner", "openai", "--caption-embed", "none", "--json"),
    )
    assert code == 0, err
    return db


def test_search_eval_and_serve_use_the_model_the_index_was_built_with(
    captioned, image_dir, tiny_clip_checkpoint, tmp_path, capsys
) -> None:
    """No --clip-model: the index's own model (it used to fall back to ViT-B/32 and
    refuse the index). Only an explicit, different model is an error, naming both."""
    code, out, err = _cli(capsys, "search", "a chart", "--db", captioned, "--json")
    assert code == 0 and json.loads(out)["results"], err
    qrels = tmp_path / "q.jsonl"
    first = sorted(image_dir.rglob("*.png"))[0]
    qrels.write_text(json.dumps({"query": "a chart", "relevant": [str(first)]}) + "\n")
    code, out, err = _cli(capsys, "eval", str(qrels), "--db", captioned, "--modes", "text")
    assert code == 0, err
    other = tmp_path / "other.pt"
    from llama_index.packs.clip_hybrid.testing import make_tiny_clip_checkpoint

    make_tiny_clip_checkpoint(other, seed=1)
    code, _, err = _cli(capsys, "search", "a chart", "--db", captioned, "--clip-model", str(other))
    assert code == 1 and "other.pt" in err and tiny_clip_checkpoint.name in err, err


def test_an_index_built_with_a_relative_checkpoint_path_searches_from_anywhere(
    tmp_path, image_dir, tiny_clip_checkpoint, capsys, monkeypatch
) -> None:
    """``--clip-model ./tiny.pt`` was recorded as typed: from another folder the default
    model could not be found, and another spelling of the same file was refused."""
    import shutil

    built_in, elsewhere = tmp_path / "built", tmp_path / "elsewhere"
    built_in.mkdir()
    elsewhere.mkdir()
    shutil.copyfile(tiny_clip_checkpoint, built_in / "tiny.pt")
    shutil.copyfile(tiny_clip_checkpoint, elsewhere / "copy.pt")  # the same bytes
    db = str(tmp_path / "rel.db")
    monkeypatch.chdir(built_in)
    code, _, err = _cli(capsys, "index", str(image_dir), "--db", db, "--clip-model", "./tiny.pt")
    assert code == 0, err
    code, _, err = _cli(capsys, "search", "a chart", "--db", db, "--clip-model", "tiny.pt")
    assert code == 0, err
    monkeypatch.chdir(elsewhere)
    for model in ([], ["--clip-model", str(built_in / "tiny.pt")], ["--clip-model", "copy.pt"]):
        code, out, err = _cli(capsys, "search", "a chart", "--db", db, "--json", *model)
        assert code == 0 and json.loads(out)["results"], (model, err)
    from llama_index.packs.clip_hybrid.testing import make_tiny_clip_checkpoint

    make_tiny_clip_checkpoint(elsewhere / "other.pt", seed=1)
    code, _, err = _cli(capsys, "search", "a chart", "--db", db, "--clip-model", "other.pt")
    assert code == 1 and "other.pt" in err and "use --clip-model" in err, err
    # The recorded file moved away: the message must not send the user to a dead path.
    (built_in / "tiny.pt").rename(built_in / "moved.pt")
    code, _, err = _cli(capsys, "search", "a chart", "--db", db, "--clip-model", "copy.pt")
    assert code == 1 and "(a file no longer there)" in err, err
    assert "put that checkpoint (or a link to it) back at its path" in err


def test_the_preview_names_the_model_not_a_local_path(captioned, tiny_clip_checkpoint) -> None:
    from llama_index.packs.clip_hybrid.preview import PreviewApp

    with ClipHybridPack(uri=captioned, captioner="none") as pack:
        page = PreviewApp(pack).handle("GET", "/api/status", b"")
    status = json.loads(page.body)
    assert status["model"] == tiny_clip_checkpoint.name
    assert str(tiny_clip_checkpoint.parent) not in page.body.decode()


def test_caption_branches_run_without_clip_on_an_index_that_has_clip(captioned, capsys) -> None:
    """No vectors are compared, so nothing is "not comparable": --clip-model none, or
    --branches without clip, runs the caption branches (here BM25: no caption vectors)."""
    for extra in (["--clip-model", "none"], ["--branches", "bm25,caption"]):
        code, out, err = _cli(
            capsys, "search", "系统架构图", "--db", captioned, "--mode", "hybrid", "--json", *extra
        )
        assert code == 0, (extra, err)
        result = json.loads(out)
        assert result["branches"] == ["bm25"] and result["results"], (extra, result)
        assert "not comparable" not in err and "skipped" not in err, err
    with ClipHybridPack(uri=captioned, clip_model="none", captioner="none") as pack:
        assert pack.search("系统架构图", mode="hybrid").branches == ["bm25"]
        assert not pack.embed_model or not getattr(pack.embed_model, "is_loaded", False)
    with ClipHybridPack(uri=captioned, captioner="none") as pack:
        assert pack.search("系统架构图", branches=["bm25"]).branches == ["bm25"]


def test_an_index_without_caption_vectors_searches_without_warnings(
    captioned, capsys, caplog
) -> None:
    """Captions stored without vectors: the caption-vector branch has nothing to compare,
    which is not worth a warning on every search."""
    import logging

    with caplog.at_level(logging.WARNING):
        code, out, err = _cli(capsys, "search", "diagram", "--db", captioned, "--mode", "hybrid")
    assert code == 0 and out.strip(), err
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert "caption-vector branch is skipped" not in err


def test_hybrid_json_carries_score_like_the_other_modes(captioned, capsys) -> None:
    code, out, err = _cli(
        capsys, "search", "系统架构图", "--db", captioned, "--mode", "hybrid", "--json"
    )
    assert code == 0, err
    for item in json.loads(out)["results"]:
        assert item["score"] == item["rrf"] > 0


def test_messages_name_flags_on_the_cli_and_arguments_in_python(
    captioned, image_dir, capsys
) -> None:
    image = str(sorted(image_dir.rglob("*.png"))[0])
    code, _, err = _cli(
        capsys,
        "search",
        "--image",
        image,
        "--db",
        captioned,
        "--mode",
        "image",
        "--branches",
        "bm25",
    )
    assert code == 2 and "--mode hybrid" in err and "mode=" not in err, err
    with (
        ClipHybridPack(uri=captioned, captioner="none") as pack,
        pytest.raises(ValueError, match=r"mode='hybrid'") as info,
    ):
        pack.search("x", mode="text", branches=["bm25"])
    assert "--mode" not in str(info.value)


def test_eval_says_when_relevant_paths_are_not_in_the_index(captioned, tmp_path, capsys) -> None:
    """A qrels file resolved against the wrong folder used to print all zeros."""
    qrels = tmp_path / "wrong.jsonl"
    lines = [{"query": "a chart", "relevant": [f"elsewhere/chart_{i}.png"]} for i in range(3)]
    qrels.write_text("".join(json.dumps(line) + "\n" for line in lines))
    code, out, err = _cli(capsys, "eval", str(qrels), "--db", captioned, "--modes", "text")
    assert code == 0
    assert "3 of the 3 relevant paths" in out + err and "not in the index" in out + err


def test_a_normal_run_prints_only_its_own_output(captioned, tmp_path, image_dir, stub) -> None:
    """No FAISS "clustering" lines, no jieba or pkg_resources chatter, no gRPC lines;
    --debug shows them (so it is the program that hides them, not their absence)."""
    db = str(tmp_path / "quiet.db")
    env = dict(os.environ)
    index = [str(SCRIPT), "index", str(image_dir), "--db", db, "--caption-embed", "none"]
    index += ["--captioner", "openai", "--clip-model", captioned_model(captioned)]
    quiet = subprocess.run([*index, "--json"], capture_output=True, text=True, env=env)
    assert quiet.returncode == 0, quiet.stderr
    search = [str(SCRIPT), "search", "系统架构图", "--db", db, "--mode", "hybrid"]
    searched = subprocess.run(search, capture_output=True, text=True, env=env)
    assert searched.returncode == 0 and searched.stdout.strip(), searched.stderr
    assert quiet.stderr == "" and searched.stderr == "", (quiet.stderr, searched.stderr)
    loud_db = str(tmp_path / "loud.db")
    loud = subprocess.run(
        [*index[:4], loud_db, *index[5:], "--json", "--debug"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert loud.returncode == 0 and "clustering" in loud.stderr, loud.stderr[-2000:]


def captioned_model(db: str) -> str:
    """The checkpoint an index was built with, as the index records it."""
    with ClipHybridPack(uri=db, captioner="none") as pack:
        model = pack.store.model
    assert model
    return model


def test_progress_bars_have_totals_on_a_terminal(captioned, tmp_path, image_dir, stub) -> None:
    """On a terminal both phases show a bar with a total (captioning is the slow one);
    piped, nothing."""
    import pty

    n = len(list(image_dir.rglob("*.png")))
    db = str(tmp_path / "bars.db")
    args = [str(SCRIPT), "index", str(image_dir), "--db", db, "--captioner", "openai"]
    args += ["--caption-embed", "none", "--clip-model", captioned_model(captioned), "--json"]
    leader, follower = pty.openpty()
    try:
        done = subprocess.run(args, stdout=subprocess.PIPE, stderr=follower, timeout=600)
        os.close(follower)
        chunks = []
        while True:
            try:
                data = os.read(leader, 65536)
            except OSError:  # the terminal closed: everything was read
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(leader)
    bars = b"".join(chunks).decode(errors="replace")
    assert done.returncode == 0
    assert f"{n}/{n}" in bars and "images" in bars and "captions" in bars, bars[-1500:]
    piped = subprocess.run(
        [*args[:4], str(tmp_path / "piped.db"), *args[5:]], capture_output=True, text=True
    )
    assert piped.returncode == 0 and piped.stderr == "", piped.stderr


def test_the_no_clip_mode_counts_no_forward_passes(tmp_path, image_dir, stub, capsys) -> None:
    db = str(tmp_path / "noclip.db")
    code, out, err = _cli(
        capsys,
        *("index", str(image_dir), "--db", db, "--clip-model", "none"),
        *("--captioner", "openai", "--caption-embed", "none", "--json"),
    )
    assert code == 0, err
    report = json.loads(out)
    assert report["indexed"] > 0 and report["forward_passes"] == 0


def test_a_branch_that_cannot_run_loads_no_model_for_it(captioned) -> None:
    """Captions stored without vectors, a pack configured for local caption vectors: the
    hybrid search skips that branch without loading MiniLM first (it took 22 s)."""
    code = (
        "import sys\n"
        "from llama_index.packs.clip_hybrid import ClipHybridPack\n"
        f"pack = ClipHybridPack(uri={captioned!r}, caption_embed='local', captioner='none')\n"
        "result = pack.search('系统架构图', mode='hybrid')\n"
        "print(result.branches)\n"
        "print(any(m.startswith(('sentence_transformers', 'llama_index.embeddings.hugging'))"
        " for m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    branches, loaded = done.stdout.strip().splitlines()[-2:]
    assert "caption_vector" not in branches and "bm25" in branches
    assert loaded == "False"


def test_a_milvus_lite_path_without_db_is_named_with_the_fix(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """pymilvus refuses a local path not ending in .db only when it connects, with
    "needs start with [unix, http, https, tcp]": the pack says what to write instead."""
    from llama_index.packs.clip_hybrid import ClipHybridPack

    with pytest.raises(ValueError, match=r"must end with \.db \(for example .*index\.db\)"):
        ClipHybridPack(uri=str(tmp_path / "index"))
