"""The README's promises: two commands, CI runs the test one, the examples run."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _code_blocks(markdown: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", markdown, flags=re.S)


def test_readme_opens_with_one_sentence_and_two_commands() -> None:
    text = (ROOT / "README.md").read_text()
    intro = text.split("```", 1)[0]
    prose = " ".join(line for line in intro.splitlines()[1:] if line.strip())
    assert prose.count(". ") == 0 and prose.endswith(".")  # one sentence
    commands = [
        line.split("#", 1)[0].strip() for line in _code_blocks(text, "bash")[0].splitlines()
    ]
    assert commands == ["make demo", "make test"]


def test_ci_runs_the_readme_test_command_and_only_installs_besides() -> None:
    script = (ROOT / ".ci" / "run").read_text()
    steps = [
        line.strip()
        for line in script.splitlines()
        if line.strip() and not line.lstrip().startswith(("#", "set ", "cd "))
    ]
    assert steps[-1] == "make test" and steps.count("make test") == 1
    # Anything before it installs system packages the tests need; it runs no checks of its own.
    for step in steps[:-1]:
        assert not re.search(r"\b(pytest|ruff|mypy|make)\b", step), step


def test_makefile_test_runs_lint_types_and_pytest() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^test: lint typecheck unit$", makefile, flags=re.M)
    for command in ("ruff check", "ruff format --check", "mypy", "pytest"):
        assert command in makefile


def test_selfhit_readme_example_runs(tiny_clip_checkpoint, tmp_path) -> None:  # type: ignore[no-untyped-def]
    readme = (ROOT / "llama-index-retrievers-selfhit" / "README.md").read_text()
    (example,) = _code_blocks(readme, "python")
    assert len([line for line in example.splitlines() if line.strip()]) <= 15
    code = example.replace('"ViT-B/32"', repr(str(tiny_clip_checkpoint))).replace(
        '"./selfhit.db"', repr(str(tmp_path / "selfhit.db"))
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 4
    assert all(" examples/images/" in line for line in lines[:3])
    assert "architecture_0.png" not in "".join(lines[:3])
    assert "reason='path'" in lines[3]
    score = float(re.search(r"score=([0-9.]+)", lines[3]).group(1))  # type: ignore[union-attr]
    assert abs(score - 1.0) < 1e-4


def test_every_number_row_names_an_existing_benchmark_command() -> None:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Numbers", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) >= 5
    for row in rows[1:]:  # the header has no command
        match = re.search(r"`uv run python (benchmarks/\S+\.py)[^`]*`", row)
        assert match, f"no command in: {row}"
        assert (ROOT / match.group(1)).is_file(), match.group(1)


def _run_python(code: str, cwd: Path, **env: str) -> list[str]:
    import os

    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **env},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()


def test_root_readme_quickstart_runs(tiny_clip_checkpoint, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The Quickstart as written (the tiny checkpoint for ViT-B/32, the index in a temp
    folder, no captioner: OCR over every sample would only make it slower)."""
    readme = (ROOT / "README.md").read_text()
    quickstart = readme.split("## Quickstart", 1)[1]
    example = _code_blocks(quickstart, "python")[0]
    code = example.replace('clip_model="ViT-B/32"', f"clip_model={str(tiny_clip_checkpoint)!r}")
    code = code.replace('"./clip_hybrid.db"', repr(str(tmp_path / "q.db")))
    assert code.count(str(tiny_clip_checkpoint)) == 1 and str(tmp_path) in code
    lines = _run_python(code, ROOT, CLIP_HYBRID_CAPTIONER="none")
    indexed = len([p for p in (ROOT / "examples" / "images").rglob("*") if p.suffix == ".png"])
    assert lines[0] == f"{indexed} 0 []"
    assert lines[-2].startswith(str(ROOT / "examples" / "images"))  # the nearest other image
    assert "architecture_0.png" not in lines[-2]
    assert "reason='path'" in lines[-1] and "score=1.0" in lines[-1]  # the query, dropped


def test_pack_readme_quickstart_runs(tiny_clip_checkpoint, tmp_path, sample_images) -> None:  # type: ignore[no-untyped-def]
    import shutil

    readme = (ROOT / "llama-index-packs-clip-hybrid" / "README.md").read_text()
    example = _code_blocks(readme, "python")[0]
    code = example.replace(
        'uri="./clip_hybrid.db")',
        f'uri="./clip_hybrid.db", clip_model={str(tiny_clip_checkpoint)!r})',
    )
    assert str(tiny_clip_checkpoint) in code
    photos = tmp_path / "photos"
    photos.mkdir()
    for sample in sample_images[:6]:
        shutil.copyfile(sample.path, photos / Path(sample.path).name)
    shutil.copyfile(sample_images[6].path, photos / "cat.png")
    lines = _run_python(code, tmp_path, CLIP_HYBRID_CAPTIONER="none")
    assert lines[0] == "7 0 []"
    assert lines[-2].split()[0] == "text"
    assert "reason='path'" in lines[-1] and "score=1.0" in lines[-1]  # the query, dropped
