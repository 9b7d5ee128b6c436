"""Keys never reach disk, logs, reprs, pages or the terminal, whatever a service echoes."""

from __future__ import annotations

import logging
import os
import resource
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from llama_index.packs.clip_hybrid import ClipHybridPack, DatabaseBusyError
from llama_index.packs.clip_hybrid.hybrid.bm25 import CaptionBM25Index, CaptionText
from llama_index.packs.clip_hybrid.testing.bad_images import make_odd_images
from PIL import Image

_CLI_RUN = """
import sys
from llama_index.packs.clip_hybrid.cli import main
code = main(sys.argv[1:])
sys.exit(code)
"""


def test_a_planted_key_appears_nowhere_a_run_writes(
    image_dir, tiny_clip_checkpoint, tmp_path, monkeypatch, caplog
) -> None:
    import json
    import secrets

    from llama_index.packs.clip_hybrid.testing import ApiStub

    planted = "sk-planted-" + secrets.token_hex(12)
    home = tmp_path / "home"  # every default cache lands here
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    monkeypatch.delenv("CLIP_HYBRID_CAPTIONER", raising=False)
    seen: list[str] = []
    with ApiStub(expected_key=planted) as stub:  # the key really is sent to the API
        monkeypatch.setenv("OPENAI_API_KEY", planted)
        monkeypatch.setenv("OPENAI_BASE_URL", stub.openai_base_url)
        with caplog.at_level(logging.DEBUG):
            pack = ClipHybridPack(
                uri=str(tmp_path / "data" / "p.db"),
                clip_model=str(tiny_clip_checkpoint),
                precision="fp32",
                captioner="auto",
                caption_embed="auto",
                show_progress=False,
            )
            report = pack.ingest(image_dir)
            assert report.captions is not None and report.captions.captioned > 0
            hits = pack.retrieve("系统架构图 diagram", mode="hybrid")
            assert hits
            seen += [json.dumps(report.to_dict()), repr(pack), str(pack.store)]
            for name, module in pack.get_modules().items():
                seen += [name, repr(module), str(module)]
                to_dict = getattr(module, "to_dict", None)
                if callable(to_dict):
                    seen.append(json.dumps(to_dict(), default=repr))
            seen += [repr(h) for h in hits]
            pack.store.close()
        env = {**os.environ, "OPENAI_API_KEY": planted, "OPENAI_BASE_URL": stub.openai_base_url}
        db = str(tmp_path / "data" / "cli.db")
        for argv in (
            ["index", str(image_dir), "--db", db, "--clip-model", str(tiny_clip_checkpoint)],
            ["search", "系统架构图", "--mode", "hybrid", "--db", db, "--json"],
            ["search", "--image", str(next(image_dir.rglob("*.png"))), "--db", db, "--json"],
        ):
            argv += ["--clip-model", str(tiny_clip_checkpoint)] if argv[0] == "search" else []
            for extra in (["--json", "--debug"] if argv[0] == "index" else ["--debug"],):
                done = subprocess.run(
                    [sys.executable, "-c", _CLI_RUN, *argv, *extra],
                    capture_output=True,
                    text=True,
                    env=env,
                    timeout=300,
                )
                assert done.returncode == 0, done.stderr[-2000:]
                seen += [done.stdout, done.stderr]
    seen += [r.getMessage() for r in caplog.records]
    assert caplog.records and any("openai" in s for s in seen)  # the logs were captured
    for text in seen:
        assert planted not in text
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.suffix == ".sqlite" for p in written)  # the caption caches were written
    for path in written:
        assert planted.encode() not in path.read_bytes(), path


def test_upstream_openai_objects_leak_the_key_and_ours_do_not() -> None:
    from llama_index.embeddings.openai import OpenAIEmbedding
    from llama_index.llms.openai import OpenAI
    from llama_index.llms.openai_like import OpenAILike
    from llama_index.packs.clip_hybrid import LLMCaptioner
    from llama_index.packs.clip_hybrid.captions.embedding import openai_caption_embedding

    key = "sk-upstream-leak-check"

    def views(obj) -> list[str]:
        return [repr(obj), str(obj), str(obj.to_dict()), obj.to_json(), obj.model_dump_json()]

    # upstream: run-llama/llama_index#12853 (when this fails, delete _compat/openai_secrets.py)
    for upstream in (
        OpenAI(api_key=key),
        OpenAILike(api_key=key, model="m"),
        OpenAIEmbedding(api_key=key),
    ):
        assert any(key in view for view in views(upstream))
    ours = [
        LLMCaptioner.openai(api_key=key).llm,
        LLMCaptioner.dashscope(api_key=key).llm,
        openai_caption_embedding(api_key=key),
    ]
    for obj in ours:
        assert not any(key in view for view in views(obj)), type(obj).__name__
        assert obj.api_key == key  # the client still gets it
        assert "**redacted**" in repr(obj)


def test_a_401_that_echoes_the_key_is_redacted_and_the_other_branches_answer(
    image_dir, tiny_clip_checkpoint, tmp_path, caplog
) -> None:
    """A caption index built on OpenAI embeddings, then searched with a key the service
    refuses, and (as some proxies do) echoes in its 401: the hybrid search answers from
    CLIP and BM25 and names the failed branch; the key (not even shaped like one) appears
    nowhere: not on the terminal, not in the JSON, not in the preview's answer or logs."""
    import json

    from llama_index.packs.clip_hybrid.preview import PreviewApp
    from llama_index.packs.clip_hybrid.testing import ApiStub

    refused = "proxy-credential-7f3a9c2e51"
    db = str(tmp_path / "echo.db")
    with ApiStub() as stub:
        env = {
            **os.environ,
            "OPENAI_API_KEY": "sk-the-key-that-built-it-01",
            "OPENAI_BASE_URL": stub.openai_base_url,
            "CLIP_HYBRID_CAPTIONER": "openai",
        }
        index = ["index", str(image_dir), "--db", db, "--clip-model", str(tiny_clip_checkpoint)]
        built = subprocess.run(
            [sys.executable, "-c", _CLI_RUN, *index, "--caption-embed", "openai", "--json"],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        assert built.returncode == 0, built.stderr[-2000:]
        stub.state.expected_key = "sk-a-key-nobody-has-000"  # every call now gets a 401
        env["OPENAI_API_KEY"] = refused
        outputs = []
        for extra in (["--json"], []):
            done = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    _CLI_RUN,
                    "search",
                    "系统架构图",
                    "--mode",
                    "hybrid",
                    "--db",
                    db,
                    *extra,
                ],
                capture_output=True,
                text=True,
                env=env,
                timeout=300,
            )
            assert done.returncode == 0, done.stderr[-2000:]
            outputs += [done.stdout, done.stderr]
        result = json.loads(outputs[0])
        assert result["results"] and set(result["branches"]) >= {"clip", "bm25"}
        assert list(result["failed_branches"]) == ["caption_vector"]
        assert "401" in result["failed_branches"]["caption_vector"]
        assert "branch caption_vector failed" in outputs[2]
        # the same in the preview, in process
        os.environ["OPENAI_API_KEY"] = refused
        os.environ["OPENAI_BASE_URL"] = stub.openai_base_url
        try:
            with ClipHybridPack(uri=db) as pack, caplog.at_level(logging.DEBUG):
                page = PreviewApp(pack).handle(
                    "POST", "/api/search", b'{"mode": "hybrid", "query": "diagram"}'
                )
        finally:
            os.environ.pop("OPENAI_API_KEY")
            os.environ.pop("OPENAI_BASE_URL")
        assert page.status == 200 and b"caption_vector" in page.body and b"401" in page.body
        outputs += [page.body.decode(), *(r.getMessage() for r in caplog.records)]
    assert any("Incorrect API key" in text for text in outputs)  # the echo was there ...
    for text in outputs:
        assert refused not in text  # ... and the key was not


def test_key_shaped_file_names_are_data_and_short_keys_are_still_keys(
    tmp_path, tiny_clip_checkpoint, capsys, monkeypatch
) -> None:
    """Results are the user's data: a file named like a bearer token or containing
    "sk-" prints as it is, and --json stays valid. A 6-character key (a local proxy's)
    is masked wherever a message carries it."""
    import json

    from llama_index.packs.clip_hybrid.cli import main
    from llama_index.packs.clip_hybrid.redaction import redact
    from PIL import Image

    folder = tmp_path / "names"
    folder.mkdir()
    names = ["Bearer bond.png", "desk-lamp.png", "api_key=notes.png", "task-sk-list-2024-06-01.png"]
    for i, name in enumerate(names):
        Image.new("RGB", (40, 30), (60 * i, 20, 200)).save(folder / name)
    db = ["--db", str(tmp_path / "k.db"), "--clip-model", str(tiny_clip_checkpoint)]
    assert main(["index", str(folder), *db, "--captioner", "none", "--json"]) == 0
    capsys.readouterr()
    assert main(["search", "a lamp", *db, "--json", "--top-k", "4"]) == 0
    shown = {r["path"] for r in json.loads(capsys.readouterr().out)["results"]}
    assert shown == {str(folder / name) for name in names}
    assert main(["search", "a lamp", *db, "--top-k", "4"]) == 0
    plain = capsys.readouterr().out
    assert all(name in plain for name in names), plain
    monkeypatch.setenv("OPENAI_API_KEY", "short1")
    assert (
        redact("401: Incorrect API key provided: short1.")
        == "401: Incorrect API key provided: ***."
    )


def test_url_passwords_are_masked_in_messages_and_data() -> None:
    from llama_index.packs.clip_hybrid.redaction import redact, redact_known

    text = "POST http://user:urlpassXYZ987@127.0.0.1:9/v1 and ftp://bob:p@ss@host/x"
    for masked in (redact(text), redact_known(text)):
        assert masked == "POST http://user:***@127.0.0.1:9/v1 and ftp://bob:***@host/x"
    # A user without a password, an address or a path with ":" and "@" are not secrets,
    # nor is a port followed by an "@" in the query, fragment or a later part.
    plain = (
        "https://alice@example.com/a.png mail me@x.org /data/a:b@c.png git@github.com:o/r "
        "http://host:8080?q=a@b.com https://host:443#frag@x"
    )
    assert redact(plain) == redact_known(plain) == plain


def test_the_cli_masks_secrets_in_every_library_record_it_prints() -> None:
    """``--debug`` prints httpx's and openai's records too (not only the package's, which
    carry their own filter): a password in ``OPENAI_BASE_URL`` must not reach the terminal."""
    script = textwrap.dedent(
        """
        import logging
        from llama_index.packs.clip_hybrid.cli import quiet
        quiet.configure_logging(True)
        logging.getLogger("httpx").info(
            'HTTP Request: POST http://user:urlpassXYZ987@127.0.0.1:9/v1/embeddings')
        logging.getLogger("openai._base_client").debug("key sk-planted0123456789abcdef")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "POST http://user:***@127.0.0.1:9/v1/embeddings" in done.stderr
    assert "key ***" in done.stderr
    assert "urlpassXYZ987" not in done.stderr and "sk-planted" not in done.stderr


def test_a_milvus_password_in_the_uri_becomes_the_token_and_is_never_shown(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from llama_index.packs.clip_hybrid.hybrid.bm25 import default_bm25_path
    from llama_index.packs.clip_hybrid.milvus.database import MilvusDatabase
    from llama_index.packs.clip_hybrid.redaction import redact

    database = MilvusDatabase("http://root:Milvus%2F123pwSECRET@127.0.0.1:9")
    assert database.uri == "http://127.0.0.1:9"
    assert database.token == "root:Milvus/123pwSECRET"  # what pymilvus takes, unescaped
    assert "SECRET" not in repr(database)
    # Unescaped, "/" "?" "#" "@" in a password end the host for URL parsers (pymilvus then
    # said "Port could not be cast to integer value as 'S3cret'"): still all credentials.
    raw = MilvusDatabase("http://root:S3cret/p?w#d@x@127.0.0.1:19530/db_1")
    assert (raw.uri, raw.token) == ("http://127.0.0.1:19530/db_1", "root:S3cret/p?w#d@x")
    assert redact("Port could not be cast: S3cret/p?w#d@x") == "Port could not be cast: ***"
    assert redact("auth failed for Milvus/123pwSECRET") == "auth failed for ***"
    pack = ClipHybridPack(
        uri="http://root:Milvus123pwSECRET@127.0.0.1:9", clip_model="none", captioner="none"
    )
    assert "SECRET" not in repr(pack) and "SECRET" not in repr(pack.store)
    assert pack.bm25_path == default_bm25_path("http://127.0.0.1:9", "captions")
    with pytest.raises(ValueError, match="credentials once"):
        MilvusDatabase("http://root:one-password@127.0.0.1:9", token="root:other-password")
    same = MilvusDatabase("http://root:one-password@127.0.0.1:9", token="root:one-password")
    assert same.token == "root:one-password"
