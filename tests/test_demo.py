"""The README's first command, end to end, with the tiny checkpoint standing in for ViT-B/32."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from llama_index.packs.clip_hybrid import OCRCaptioner
from llama_index.packs.clip_hybrid.testing import require

ROOT = Path(__file__).resolve().parent.parent


def _demo(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.pop("CLIP_HYBRID_CAPTIONER", None)  # the README's command: automatic choice
    return subprocess.run(
        [sys.executable, str(ROOT / "examples" / "demo.py"), "--no-serve", *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        env=env,
    )


def test_demo_indexes_and_searches_by_text_and_image(tiny_clip_checkpoint, tmp_path) -> None:  # type: ignore[no-untyped-def]
    done = _demo("--clip-model", str(tiny_clip_checkpoint), "--db", str(tmp_path / "demo.db"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "WARNING clustering" not in done.stderr  # FAISS's noise: a newcomer's first screen
    out = done.stdout
    n_images = len(list((ROOT / "examples" / "images").rglob("*.png")))
    assert f"Indexed {n_images} images (0 unchanged, 0 skipped)" in out
    assert out.count("text->image") == 3
    # Each section lists three ranked results with a real cosine score and a sample path.
    ranked = re.findall(r"^\s+\d\. (-?\d\.\d{4})\s+images/\S+\.png$", out, flags=re.M)
    assert len(ranked) == 4 * 3
    image_section = out.split("image->image", 1)[1]
    query = image_section.split("\n", 1)[0].strip()
    assert query.endswith(".png")
    assert query not in image_section.split("\n", 1)[1]  # the self-hit is not listed ...
    assert re.search(r"filtered self-hit: score 1\.0000 \(matched by path\)", out)  # ... but shown
    # no API key here: offline OCR reads the in-image text
    require(OCRCaptioner.available(), "rapidocr-onnxruntime (the ocr extra)")
    assert re.search(r"^Captions by ocr:rapidocr\S+: \d+ new, 0 cached, 0 failed", out, re.M)
    assert "images/text_zh/text_zh_0.png: Text: 系统架构图" in out
    assert "QUARTERLY" in out


def test_demo_rerun_reuses_the_index(tiny_clip_checkpoint, tmp_path) -> None:  # type: ignore[no-untyped-def]
    args = ("--clip-model", str(tiny_clip_checkpoint), "--db", str(tmp_path / "demo.db"))
    assert _demo(*args).returncode == 0
    again = _demo(*args)
    n_images = len(list((ROOT / "examples" / "images").rglob("*.png")))
    assert f"Indexed 0 images ({n_images} unchanged, 0 skipped)" in again.stdout
    require(OCRCaptioner.available(), "rapidocr-onnxruntime (the ocr extra)")
    assert re.search(r"^Captions by \S+: 0 new, \d+ cached, 0 failed", again.stdout, re.M)


def test_demo_without_weights_says_so_in_one_sentence(tmp_path) -> None:  # type: ignore[no-untyped-def]
    missing = tmp_path / "no-such-checkpoint.pt"
    done = _demo("--clip-model", str(missing), "--db", str(tmp_path / "demo.db"))
    assert done.returncode == 1
    message = done.stderr.strip().splitlines()[-1]
    assert message.startswith(f"CLIP model '{missing}' is neither a known name")
    assert message.endswith("or a local checkpoint path.")
    assert "Traceback" not in done.stderr


def test_compose_example_runs_engine_tool_and_workflow(tiny_clip_checkpoint, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from llama_index.packs.clip_hybrid.testing import ApiStub

    db = str(tmp_path / "demo.db")
    assert _demo("--clip-model", str(tiny_clip_checkpoint), "--db", db).returncode == 0
    with ApiStub(caption=lambda request: f"Saw {len(request.image_urls)} images.") as stub:
        env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
        env.pop("CLIP_HYBRID_CLIP_MODEL", None)  # no model given: the index's own
        env |= {"OPENAI_API_KEY": "sk-example-test", "OPENAI_BASE_URL": stub.openai_base_url}
        done = subprocess.run(
            [sys.executable, str(ROOT / "examples" / "compose.py"), "--db", db],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=ROOT,
            env=env,
        )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout

    def section(title: str) -> str:
        return out.split(title, 1)[1].split("\n\n", 1)[0]

    pipeline = section("IngestionPipeline (openai:gpt-4o):")
    assert "text_zh_0.png: 'Saw 1 images.'" in pipeline  # the stub VLM's caption
    assert "pack.ingest: 2 indexed (0 forward passes), 0 unchanged" in pipeline
    assert "branches: clip, caption_vector, bm25" in out
    assert "MilvusVectorStore images top-3 (the pack's own: True):" in out
    assert (
        "images/text_zh/text_zh_0.png"
        in section("QueryFusionRetriever over clip, caption_vector, bm25:").split("\n")[1]
    )
    evaluation = section("RetrieverEvaluator, 8 sample queries:")
    mrr = {
        line.split(":")[0].strip(): float(line.split(":")[1])
        for line in evaluation.splitlines()[1:]
    }
    assert set(mrr) == {"hybrid mrr", "clip mrr"} and mrr["hybrid mrr"] > mrr["clip mrr"]
    assert "images/text_zh/text_zh_0.png" in section("RetrieverTool find_images:")
    assert "RetrieverQueryEngine: Saw 0 images." in out  # text-only synthesis
    assert "ImageQueryEngine: Saw 3 images." in out  # images and captions to the VLM
    assert "Workflow: Saw 3 images." in out  # the images themselves went to the VLM


def test_demo_serves_the_page_and_says_where(tiny_clip_checkpoint, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json
    import urllib.request

    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    args = [
        "--clip-model",
        str(tiny_clip_checkpoint),
        "--db",
        str(tmp_path / "d.db"),
        "--port",
        "0",
    ]
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "examples" / "demo.py"), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
        env=env,
    )
    try:
        assert proc.stdout is not None
        url = None
        for line in proc.stdout:
            if line.startswith("Preview at "):
                url = line.split()[2]
                break
        assert url and url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(url + "api/status", timeout=60) as res:
            status = json.loads(res.read())
        assert status["images"] == len(list((ROOT / "examples" / "images").rglob("*.png")))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
