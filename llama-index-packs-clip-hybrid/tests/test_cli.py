"""The clip-hybrid command with the tiny checkpoint: main() in-process, and the script."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from llama_index.packs.clip_hybrid.cli import main
from llama_index.packs.clip_hybrid.testing.bad_images import make_odd_images


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def run_cli(capsys):  # type: ignore[no-untyped-def]
    """Run ``main(argv)`` in-process (the model and imports stay warm), as the CLI does."""

    def run(*args: str) -> Result:
        capsys.readouterr()
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse usage errors
            code = int(exc.code or 0)
        out = capsys.readouterr()
        return Result(code, out.out, out.err)

    return run


@pytest.fixture
def indexed(tmp_path, image_dir, tiny_clip_checkpoint, run_cli):  # type: ignore[no-untyped-def]
    db = str(tmp_path / "cli.db")
    make_odd_images(image_dir / "odd")
    done = run_cli(
        "index", str(image_dir), "--db", db, "--clip-model", str(tiny_clip_checkpoint), "--json"
    )
    assert done.returncode == 0, done.stderr
    return db, json.loads(done.stdout)


def test_index_json_report(indexed, image_dir) -> None:  # type: ignore[no-untyped-def]
    _db, report = indexed
    odd = make_odd_images(image_dir / "odd")  # same files again, to know what was bad
    bad = sorted(str(i.path) for i in odd if i.expect_failure)
    assert sorted(f["path"] for f in report["failures"]) == bad
    assert all(f["reason"] for f in report["failures"])
    assert report["unchanged"] == 0 and report["removed"] == 0
    assert report["indexed"] == report["seen"] - len(bad)


def test_reindex_and_sync(indexed, image_dir, tiny_clip_checkpoint, run_cli) -> None:  # type: ignore[no-untyped-def]
    db, first = indexed
    shutil.rmtree(image_dir / "odd")
    done = run_cli(
        "index",
        str(image_dir),
        "--db",
        db,
        "--clip-model",
        str(tiny_clip_checkpoint),
        "--sync",
        "--json",
    )
    report = json.loads(done.stdout)
    assert report["indexed"] == 0 and report["forward_passes"] == 0
    assert report["removed"] == first["indexed"] - report["unchanged"]
    assert report["failures"] == []


def test_search_text_and_image_json(indexed, image_dir, tiny_clip_checkpoint, run_cli) -> None:  # type: ignore[no-untyped-def]
    db, _ = indexed
    model = ["--db", db, "--clip-model", str(tiny_clip_checkpoint)]
    text = run_cli("search", "a bar chart", "--top-k", "4", "--json", *model)
    assert text.returncode == 0, text.stderr
    out = json.loads(text.stdout)
    assert out["mode"] == "text" and [r["rank"] for r in out["results"]] == [1, 2, 3, 4]
    assert all({"rank", "id", "path", "score"} <= set(r) for r in out["results"])
    assert out["filtered_self_hits"] == []
    assert all(-1.0 <= r["score"] <= 1.0 for r in out["results"])

    query = str(next(image_dir.rglob("flowchart_1.png")))
    image = json.loads(run_cli("search", "--image", query, "--top-k", "3", "--json", *model).stdout)
    assert image["mode"] == "image" and len(image["results"]) == 3
    assert query not in [r["path"] for r in image["results"]]
    (dropped,) = image["filtered_self_hits"]
    assert dropped["path"] == query and dropped["reason"] == "path"
    assert dropped["score"] == pytest.approx(1.0, abs=1e-4)

    kept = json.loads(
        run_cli("search", "--image", query, "--keep-self-hit", "--json", *model).stdout
    )
    assert kept["results"][0]["path"] == query and kept["filtered_self_hits"] == []

    only = json.loads(
        run_cli(
            "search", "x", "--filter", "category=diagram", "--top-k", "9", "--json", *model
        ).stdout
    )
    assert {r["category"] for r in only["results"]} == {"diagram"}


def test_an_index_of_a_folder_without_images_says_so(
    tmp_path, run_cli, tiny_clip_checkpoint
) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.txt").write_text("not an image")
    done = run_cli(
        *("index", str(tmp_path / "docs"), "--db", str(tmp_path / "e.db")),
        *("--clip-model", str(tiny_clip_checkpoint), "--captioner", "none"),
    )
    assert done.returncode == 0, done.stderr
    assert f"no images found in {tmp_path / 'docs'} (PNG, JPEG" in done.stdout


def test_path_filters_take_relative_paths_and_an_empty_filtered_search_says_why(
    indexed, image_dir, tiny_clip_checkpoint, run_cli, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    """`index` and --image take relative paths; --filter file_path=/folder= did not (no
    results, no word). A filter that matches nothing names the stored fields."""
    db, _ = indexed
    model = ("--db", db, "--clip-model", str(tiny_clip_checkpoint))
    target = next(image_dir.rglob("flowchart_1.png"))
    monkeypatch.chdir(image_dir)
    for key, value in (("file_path", target.relative_to(image_dir)), ("folder", "flowchart")):
        found = json.loads(
            run_cli("search", "x", "--filter", f"{key}={value}", "--json", *model).stdout
        )
        paths = [r["path"] for r in found["results"]]
        assert paths and str(target) in paths, (key, paths)
    typo = run_cli("search", "x", "--filter", "categry=diagram", *model)
    assert typo.returncode == 0
    said = typo.stdout.strip().splitlines()
    assert said[-2] == "no results" and "--filter categry=diagram" in said[-1]
    assert "category" in said[-1] and "metadata given at ingestion" in said[-1]


def test_plain_output(indexed, tiny_clip_checkpoint, run_cli) -> None:  # type: ignore[no-untyped-def]
    db, _ = indexed
    done = run_cli(
        "search", "mountains", "--db", db, "--clip-model", str(tiny_clip_checkpoint), "--top-k", "2"
    )
    header, *lines = done.stdout.strip().splitlines()
    assert header == "mode: text (CLIP cosine)"  # no captions: CLIP alone, and it says so
    assert len(lines) == 2 and lines[0].lstrip().startswith("1. ")


@pytest.mark.parametrize(
    "args",
    [
        ["search"],  # neither query nor --image
        ["search", "text", "--image", "x.png"],  # both
        ["search", "text", "--top-k", "0"],
        ["search", "--mode", "text", "--image", "x.png"],
        ["index"],  # no paths
        ["frobnicate"],
    ],
)
def test_usage_errors_exit_2(args, run_cli) -> None:  # type: ignore[no-untyped-def]
    done = run_cli(*args)
    assert done.returncode == 2, done.stderr
    assert "error:" in done.stderr and "Traceback" not in done.stderr


def test_failures_exit_1_with_one_line(tmp_path, tiny_clip_checkpoint, run_cli) -> None:  # type: ignore[no-untyped-def]
    missing_db = run_cli(
        "search", "x", "--db", str(tmp_path / "none.db"), "--clip-model", str(tiny_clip_checkpoint)
    )
    assert missing_db.returncode == 1
    assert missing_db.stderr.strip().splitlines() == [missing_db.stderr.strip().splitlines()[-1]]
    assert "No index at" in missing_db.stderr and "clip-hybrid index" in missing_db.stderr

    broken = tmp_path / "broken.pt"  # a file that is no checkpoint (a missing one: exit 2)
    broken.write_bytes(b"not a checkpoint")
    no_weights = run_cli(
        "index", str(tmp_path), "--db", str(tmp_path / "y.db"), "--clip-model", str(broken)
    )
    assert no_weights.returncode == 1
    assert len(no_weights.stderr.strip().splitlines()) == 1
    assert "checkpoint" in no_weights.stderr

    # --debug: the traceback, with any key it carries masked (an API error can echo the
    # key it was sent; here the key is in the missing checkpoint's path)
    import os

    key = "WRONGKEY-abcdefgh1234"
    (tmp_path / f"{key}.pt").write_bytes(b"not a checkpoint")
    os.environ["OPENAI_API_KEY"] = key
    try:
        debug = run_cli(
            *("index", str(tmp_path), "--db", str(tmp_path / "y.db")),
            *("--clip-model", str(tmp_path / f"{key}.pt"), "--debug"),
        )
    finally:
        del os.environ["OPENAI_API_KEY"]
    assert debug.returncode == 1 and "Traceback (most recent call last)" in debug.stderr
    assert "***.pt" in debug.stderr and key not in debug.stderr, debug.stderr[-600:]


def test_installed_command_runs_as_a_program(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The console script itself: usage errors exit 2, failures exit 1, one line each."""
    script = Path(sys.executable).parent / "clip-hybrid"
    usage = subprocess.run([str(script), "search"], capture_output=True, text=True, timeout=300)
    assert usage.returncode == 2 and "give either a text QUERY" in usage.stderr
    failure = subprocess.run(
        [
            str(script),
            "search",
            "x",
            "--db",
            str(tmp_path / "none.db"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert failure.returncode == 1, failure.stderr
    assert len(failure.stderr.strip().splitlines()) == 1 and "Traceback" not in failure.stderr


def test_the_index_program_limits_memory_retention(
    tmp_path, tiny_clip_checkpoint, image_dir
) -> None:  # type: ignore[no-untyped-def]
    """``clip-hybrid index`` owns its process: it caps malloc arenas and puts pyarrow on
    the system allocator (memory.limit_memory_retention); ``main(argv)`` from Python
    does not touch the caller's process."""
    script = Path(sys.executable).parent / "clip-hybrid"
    done = subprocess.run(
        [
            *(str(script), "index", str(image_dir), "--db", str(tmp_path / "m.db"), "--debug"),
            *("--clip-model", str(tiny_clip_checkpoint), "--captioner", "none", "--json"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert "memory: malloc arenas: 2, pyarrow memory pool: system" in done.stderr
    code = (
        "import pyarrow as pa\n"
        "from llama_index.packs.clip_hybrid.cli import main\n"
        f"main(['index', {str(image_dir)!r}, '--db', {str(tmp_path / 'n.db')!r}, '--json',"
        f" '--clip-model', {str(tiny_clip_checkpoint)!r}, '--captioner', 'none'])\n"
        "print(pa.default_memory_pool().backend_name)\n"
    )
    library = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert library.returncode == 0, library.stderr
    assert library.stdout.strip().splitlines()[-1] != "system"


def test_index_with_captions_reports_counts_and_usage(
    tmp_path, image_dir, tiny_clip_checkpoint, run_cli, monkeypatch
) -> None:
    from llama_index.packs.clip_hybrid.testing import ApiStub

    db = str(tmp_path / "captions.db")
    args = ["index", str(image_dir), "--db", db, "--clip-model", str(tiny_clip_checkpoint)]
    with ApiStub() as stub:
        monkeypatch.setenv("OPENAI_API_KEY", "sk-cli-test-123456")
        monkeypatch.setenv("OPENAI_BASE_URL", stub.openai_base_url)
        stub.fail_next(1, status=401, path_prefix="/v1/chat")  # the first image: a bad key
        done = run_cli(
            *args,
            "--captioner",
            "openai",
            "--caption-embed",
            "openai",
            "--concurrency",
            "1",
            "--json",
        )
        assert done.returncode == 1, done.stderr  # indexed, but nothing will be captioned
        first = json.loads(done.stdout)["captions"]
        n = json.loads(done.stdout)["indexed"]
        assert first["captioner"] == "openai:gpt-4o" and first["failed"] == n
        assert "check the API key" in first["failures"][0]["reason"]
        assert "check the API key" in first["stopped"]
        stub.fail_next(1, status=401, path_prefix="/v1/chat")
        plain = run_cli(*args, "--captioner", "openai", "--concurrency", "1")
        assert plain.returncode == 1
        said = [line for line in plain.stdout.splitlines() if "no caption for" in line]
        assert len(said) == 2 and f"and {n - 4} more: not attempted" in said[1], plain.stdout
        assert plain.stdout.rstrip().splitlines()[-1].startswith("captioning stopped: HTTP 401")
        done = run_cli(*args, "--captioner", "openai", "--concurrency", "4", "--json")
        second = json.loads(done.stdout)["captions"]
        assert (second["captioned"], second["cached"], second["failed"]) == (n, 0, 0)
        assert second["usage"]["calls"] == n and second["usage"]["total_tokens"] > 0
        third = json.loads(run_cli(*args, "--captioner", "openai", "--json").stdout)["captions"]
        assert third["usage"]["calls"] == 0
        plain = run_cli(*args, "--captioner", "openai")
        assert "captions by openai:gpt-4o: 0 new" in plain.stdout
    assert "sk-cli-test-123456" not in done.stdout + done.stderr + plain.stdout + plain.stderr


def test_a_bad_key_for_the_caption_embedder_stops_the_run_too(
    tmp_path, image_dir, tiny_clip_checkpoint, run_cli, monkeypatch
) -> None:
    from llama_index.packs.clip_hybrid.testing import ApiStub

    args = ["index", str(image_dir), "--db", str(tmp_path / "e.db")]
    args += ["--clip-model", str(tiny_clip_checkpoint), "--captioner", "openai"]
    with ApiStub() as stub:
        monkeypatch.setenv("OPENAI_API_KEY", "sk-cli-test-123456")
        monkeypatch.setenv("OPENAI_BASE_URL", stub.openai_base_url)
        stub.fail_next(1, status=401, path_prefix="/v1/embeddings")
        done = run_cli(*args, "--caption-embed", "openai", "--json")
    assert done.returncode == 1, done.stderr  # no caption can be stored with that key
    captions = json.loads(done.stdout)["captions"]
    assert captions["stopped"].startswith("caption embedding failed (HTTP 401")
    assert captions["failed"] == json.loads(done.stdout)["indexed"]


def test_index_captioner_none_and_bad_concurrency(
    tmp_path, image_dir, tiny_clip_checkpoint, run_cli
) -> None:
    args = ["index", str(image_dir), "--db", str(tmp_path / "c.db")]
    args += ["--clip-model", str(tiny_clip_checkpoint)]
    done = run_cli(*args, "--captioner", "none", "--json")
    assert json.loads(done.stdout)["captions"] is None
    assert run_cli(*args, "--concurrency", "0").returncode == 2
    assert run_cli(*args, "--captioner", "gpt").returncode == 2


@pytest.fixture
def captioned(tmp_path, image_dir, tiny_clip_checkpoint, run_cli, monkeypatch):
    """An index with captions from the stub VLM (and stub text-embedding-3-small)."""
    from llama_index.packs.clip_hybrid.testing import ApiStub

    def caption(request) -> str:  # two captions, split by the image's bytes
        first = hashlib.sha256(request.image_urls[0].encode()).digest()[0]
        return "Text: 系统架构图 API gateway" if first % 2 else "A chart. Text: 年度销售报告"

    db = str(tmp_path / "hybrid.db")
    with ApiStub(caption=caption) as stub:
        monkeypatch.setenv("OPENAI_API_KEY", "sk-cli-test-123456")
        monkeypatch.setenv("OPENAI_BASE_URL", stub.openai_base_url)
        model = ["--db", db, "--clip-model", str(tiny_clip_checkpoint)]
        done = run_cli("index", str(image_dir), *model, "--captioner", "openai", "--json")
        assert done.returncode == 0, done.stderr
        yield model


def test_search_hybrid_json_has_branch_ranks_and_scores(captioned, run_cli) -> None:
    done = run_cli("search", "销售报告", "--mode", "hybrid", "--top-k", "4", "--json", *captioned)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["mode"] == "hybrid" and out["branches"] == ["clip", "caption_vector", "bm25"]
    assert [r["rank"] for r in out["results"]] == [1, 2, 3, 4]
    top = out["results"][0]
    assert {"clip", "bm25"} <= set(top["branches"])
    assert top["branches"]["bm25"]["rank"] >= 1 and top["rrf"] > 0
    rrf = [r["rrf"] for r in out["results"]]
    assert rrf == sorted(rrf, reverse=True)
    plain = run_cli("search", "销售报告", "--mode", "hybrid", *captioned)
    assert plain.stdout.startswith("branches: clip, caption_vector, bm25")


def test_eval_reports_metrics_per_mode_and_language(
    captioned, run_cli, image_dir, tmp_path
) -> None:
    arch = sorted(str(p) for p in image_dir.rglob("architecture_*.png"))
    qrels = tmp_path / "qrels.jsonl"
    lines = [
        {"query": "系统架构图", "lang": "zh", "relevant": arch},
        {"query": "an architecture diagram", "lang": "en", "relevant": arch},
        {"image": arch[0], "relevant": [arch[1]]},
    ]
    qrels.write_text("\n".join(json.dumps(x, ensure_ascii=False) for x in lines))
    done = run_cli("eval", str(qrels), "--modes", "text,image,hybrid,caption", "--json", *captioned)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["modes"]["text"]["queries"] == 2 and report["modes"]["image"]["queries"] == 1
    assert report["modes"]["hybrid"]["queries"] == 3
    assert set(report["by_language"]["hybrid"]) == {"zh", "en", "-"}
    for scores in report["modes"].values():
        assert 0.0 <= scores["recall_at_1"] <= scores["recall_at_5"] <= scores["recall_at_10"] <= 1
    assert all({"mode", "query", "line", "missing"} <= set(m) for m in report["misses"])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query": "x"}\n')
    failed = run_cli("eval", str(bad), *captioned)
    assert failed.returncode == 2 and ":1:" in failed.stderr and "relevant" in failed.stderr
    assert run_cli("eval", str(qrels), "--modes", "nope", *captioned).returncode == 2


def test_caption_only_mode_from_the_shell(tmp_path, image_dir, run_cli, monkeypatch) -> None:
    from llama_index.packs.clip_hybrid.testing import ApiStub

    db = ["--db", str(tmp_path / "nc.db"), "--clip-model", "none"]
    with ApiStub(caption=lambda request: "Text: 系统架构图") as stub:
        monkeypatch.setenv("OPENAI_API_KEY", "sk-cli-test-123456")
        monkeypatch.setenv("OPENAI_BASE_URL", stub.openai_base_url)
        done = run_cli("index", str(image_dir), *db, "--captioner", "openai", "--json")
        assert done.returncode == 0, done.stderr
        out = json.loads(run_cli("search", "架构", "--json", *db).stdout)
        assert out["mode"] == "hybrid" and out["branches"] == ["caption_vector", "bm25"]
        refused = run_cli("search", "架构", "--mode", "text", *db)
        assert refused.returncode == 2 and "--clip-model none" in refused.stderr
        assert "--mode hybrid" in refused.stderr and "clip_model=" not in refused.stderr


def test_a_mistyped_db_is_named_and_not_created(tmp_path, run_cli) -> None:  # type: ignore[no-untyped-def]
    missing = tmp_path / "nope.db"
    qrels = tmp_path / "q.jsonl"
    qrels.write_text('{"query": "a", "relevant": ["x.png"]}\n')
    for args in (["search", "a diagram"], ["eval", str(qrels)], ["serve", "--port", "0"]):
        result = run_cli(*args, "--db", str(missing))
        assert result.returncode == 1 and f"No index at {missing}" in result.stderr
    assert not missing.exists()


def test_an_empty_query_is_a_usage_error(indexed, run_cli) -> None:  # type: ignore[no-untyped-def]
    result = run_cli("search", "  ", "--db", indexed[0])
    assert result.returncode == 2 and "QUERY is empty" in result.stderr


def test_index_of_a_path_that_does_not_exist_is_a_usage_error(tmp_path, run_cli) -> None:  # type: ignore[no-untyped-def]
    db = tmp_path / "typo.db"
    done = run_cli("index", str(tmp_path / "imgaes"), "--db", str(db), "--captioner", "none")
    assert done.returncode == 2 and "no such file or folder" in done.stderr
    assert str(tmp_path / "imgaes") in done.stderr and not db.exists()


def test_a_fifo_as_query_image_is_named_as_such(indexed, tmp_path, run_cli) -> None:  # type: ignore[no-untyped-def]
    import os

    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    done = run_cli("search", "--image", str(fifo), "--db", indexed[0])  # must not block
    assert done.returncode == 2 and "not a regular file" in done.stderr, done.stderr
    assert "does not exist" not in done.stderr


def test_an_svg_query_image_is_named_in_one_line(indexed, tmp_path, run_cli) -> None:  # type: ignore[no-untyped-def]
    svg = tmp_path / "logo.svg"
    svg.write_text('<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"/>')
    done = run_cli("search", "--image", str(svg), "--db", indexed[0])
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1, done.stderr
    assert "logo.svg" in lines[0] and "SVG" in lines[0] and "PNG" in lines[0], lines[0]
    assert " object at 0x" not in lines[0] and "Traceback" not in done.stderr


def test_hostile_file_names_cannot_forge_output(tmp_path, tiny_clip_checkpoint, run_cli) -> None:  # type: ignore[no-untyped-def]
    """A newline or an ANSI escape in a file name is written escaped on the terminal (it
    cannot fake a result line or recolour it); the JSON stays valid UTF-8 and exact; a
    name that is not UTF-8 is a named failure, not invalid JSON."""
    import os

    from PIL import Image

    folder = tmp_path / "names"
    folder.mkdir()
    forged = "chart\x1b[31m\n  9. 0.9999  passwd.png"
    Image.new("RGB", (40, 30), (200, 20, 20)).save(folder / forged, format="PNG")
    Image.new("RGB", (40, 30), (20, 200, 20)).save(
        os.fsencode(folder) + b"/latin1-\xe9t\xe9.png", format="PNG"
    )
    model = ["--db", str(tmp_path / "n.db"), "--clip-model", str(tiny_clip_checkpoint)]
    done = run_cli("index", str(folder), *model, "--captioner", "none", "--json")
    report = json.loads(done.stdout)  # valid JSON
    done.stdout.encode("utf-8")  # and encodable: no lone surrogates
    assert report["indexed"] == 1 and len(report["failures"]) == 1
    assert "not valid UTF-8" in report["failures"][0]["reason"]
    plain = run_cli("index", str(folder), *model, "--captioner", "none")
    assert "\\xe9" in plain.stdout and "\udce9" not in plain.stdout
    human = run_cli("search", "a red chart", *model)
    assert human.returncode == 0 and len(human.stdout.strip().splitlines()) == 2  # + mode
    assert "\x1b" not in human.stdout and "\\x1b[31m\\x0a" in human.stdout
    as_json = json.loads(run_cli("search", "a red chart", *model, "--json").stdout)
    assert as_json["results"][0]["path"] == str(folder / forged)


def _serve(args: list[str]) -> tuple[subprocess.Popen, str]:  # type: ignore[type-arg]
    script = Path(sys.executable).parent / "clip-hybrid"
    proc = subprocess.Popen(
        [str(script), "serve", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline()  # type: ignore[union-attr]
    if not line.startswith("Preview at "):
        proc.kill()
        raise AssertionError(line + proc.stderr.read())  # type: ignore[union-attr]
    return proc, line.split()[2]


def test_serve_binds_ipv6_loopback_and_answers_allowed_host_names(
    indexed, tiny_clip_checkpoint
) -> None:  # type: ignore[no-untyped-def]
    import http.client
    from urllib.parse import urlsplit

    model = ["--db", indexed[0], "--clip-model", str(tiny_clip_checkpoint)]
    proc, url = _serve(["--host", "::1", "--allow-host", "photos.lan", *model])
    try:
        parts = urlsplit(url)
        assert parts.hostname == "::1"

        def status(host: str) -> int:
            conn = http.client.HTTPConnection("::1", parts.port, timeout=60)
            conn.request("GET", "/api/status", headers={"Host": host})
            code = conn.getresponse().status
            conn.close()
            return code

        assert status(f"[::1]:{parts.port}") == 200
        assert status(f"photos.lan:{parts.port}") == 200
        assert status(f"evil.example:{parts.port}") == 421  # DNS rebinding refused
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_log_lines_escape_file_names_too(tmp_path, tiny_clip_checkpoint) -> None:  # type: ignore[no-untyped-def]
    """The program's warnings (a skipped file) name files as its output does: escaped."""
    from PIL import Image

    folder = tmp_path / "esc"
    folder.mkdir()
    Image.new("RGB", (40, 30), (9, 90, 9)).save(folder / "fine.png")
    (folder / "evil\n  1. 0.9999  shadow \x1b[2J\x1b[31mRED.png").write_bytes(b"not an image")
    script = Path(sys.executable).parent / "clip-hybrid"
    done = subprocess.run(
        [
            *(str(script), "index", str(folder), "--db", str(tmp_path / "e.db")),
            *("--clip-model", str(tiny_clip_checkpoint), "--captioner", "none"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stdout + done.stderr and "\\x1b[2J" in done.stderr, done.stderr
    assert "\n  1. 0.9999" not in done.stdout + done.stderr


def test_an_unknown_clip_model_is_a_usage_error_that_creates_nothing(
    tmp_path, image_dir, run_cli
) -> None:  # type: ignore[no-untyped-def]
    db = tmp_path / "t3.db"
    done = run_cli("index", str(image_dir), "--db", str(db), "--clip-model", "ViT-X/99")
    assert done.returncode == 2
    assert "--clip-model ViT-X/99 is neither a known name (RN50" in done.stderr
    assert not db.exists()  # no empty database left behind


def test_eval_runs_the_modes_that_can_run_and_names_the_others(
    tmp_path, image_dir, tiny_clip_checkpoint, run_cli
) -> None:  # type: ignore[no-untyped-def]
    """Without captions the caption mode cannot run: it aborted every mode (exit 2)."""
    db = str(tmp_path / "nocap.db")
    model = ("--db", db, "--clip-model", str(tiny_clip_checkpoint))
    assert run_cli("index", str(image_dir), *model, "--captioner", "none").returncode == 0
    qrels = tmp_path / "q.jsonl"
    first = sorted(image_dir.rglob("*.png"))[0]
    qrels.write_text(json.dumps({"query": "a chart", "relevant": [str(first)]}) + "\n")
    done = run_cli("eval", str(qrels), "--modes", "caption,hybrid", *model)
    assert done.returncode == 0, done.stderr
    assert "warning: mode caption cannot run on this index" in done.stderr
    rows = [line.split()[0] for line in done.stdout.splitlines()[1:] if line and line[0] != " "]
    assert "hybrid" in rows and "caption" not in rows
    payload = json.loads(
        run_cli("eval", str(qrels), "--modes", "caption,hybrid", "--json", *model).stdout
    )
    assert set(payload["modes"]) == {"hybrid"} and set(payload["skipped_modes"]) == {"caption"}
