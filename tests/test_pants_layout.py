"""pants.toml and the BUILD files describe the real package layout.

Pants cannot run the tests here (2.17.1, its last PyPI release, needs CPython 3.7-3.9 and
downloads pex and tool wheels for `pants test`), so these checks keep the description
true, and `pants --version`, `pants list ::` and `pants dependencies ::` run offline where a
CPython 3.9 exists.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("llama-index-retrievers-selfhit", "llama-index-packs-clip-hybrid")

PANTS_VERSION = "2.17.1"


def _pants_config() -> dict:  # type: ignore[type-arg]
    return tomllib.loads((ROOT / "pants.toml").read_text())


def _python_dirs() -> set[Path]:
    """Folders that hold tracked Python files (what Pants must own)."""
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return {(ROOT / f).parent for f in out}


def test_pants_toml_parses_and_pins_the_version() -> None:
    config = _pants_config()
    assert config["GLOBAL"]["pants_version"] == PANTS_VERSION
    assert "pants.backend.python" in config["GLOBAL"]["backend_packages"]
    constraints = config["python"]["interpreter_constraints"]
    assert any("3.10" in c for c in constraints)


def test_source_roots_are_the_package_folders() -> None:
    roots = _pants_config()["source"]["root_patterns"]
    package_roots = {r.strip("/") for r in roots if r.strip("/")}
    assert package_roots == set(PACKAGES)
    for package in PACKAGES:
        assert (ROOT / package / "pyproject.toml").is_file()
        namespace = ROOT / package / "llama_index"
        assert namespace.is_dir() and not (namespace / "__init__.py").exists()


def test_every_python_folder_has_a_build_file_with_the_right_targets() -> None:
    for folder in sorted(_python_dirs()):
        build = folder / "BUILD"
        rel = folder.relative_to(ROOT)
        assert build.is_file(), f"{rel}/ has Python files but no BUILD file"
        text = build.read_text()
        if folder.name == "tests":
            assert "python_tests(" in text and "python_test_utils(" in text, rel
        else:
            assert "python_sources(" in text, rel
    for package in PACKAGES:
        build = (ROOT / package / "BUILD").read_text()
        assert re.search(r'python_requirements\([^)]*source="pyproject.toml"', build), package


def _python39() -> str | None:
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    candidates = sorted(str(p) for p in pyenv_root.glob("versions/3.9.*/bin/python3.9"))
    candidates.append(shutil.which("python3.9") or "")
    for candidate in filter(None, candidates):
        # A pyenv shim exists even when the version behind it is not selected.
        probe = subprocess.run([candidate, "-c", "import venv"], capture_output=True)
        if probe.returncode == 0:
            return candidate
    return None


def _pants(pants: Path, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(pants), "--no-pantsd", "--no-watch-filesystem", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PANTS_CONCURRENT": "True"},
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done


@pytest.mark.slow
def test_pants_lists_the_targets_offline() -> None:
    python39 = _python39()
    if python39 is None:
        why = "no CPython 3.9 here: Pants 2.17.1 (the last on PyPI) runs only on CPython 3.7-3.9"
        # CI's machine image carries 3.9 under pyenv: there, a missing 3.9 is a failure.
        has_pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")).is_dir()
        if os.environ.get("CI") and has_pyenv:
            pytest.fail(why)
        pytest.skip(why)
    venv = ROOT / ".pants-venv"
    pants = venv / "bin" / "pants"
    if not pants.exists():
        subprocess.run([python39, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(venv / "bin" / "pip"), "install", "--quiet", f"pantsbuild.pants=={PANTS_VERSION}"],
            check=True,
        )
    version = _pants(pants, "--version")
    assert version.stdout.strip() == PANTS_VERSION
    listed = _pants(pants, "list", "::")
    targets = set(listed.stdout.split())
    for package, module in (
        ("llama-index-retrievers-selfhit", "llama_index/retrievers/selfhit"),
        ("llama-index-packs-clip-hybrid", "llama_index/packs/clip_hybrid"),
    ):
        assert f"{package}/{module}/__init__.py" in targets
        assert f"{package}/tests:tests" in targets
        assert f"{package}:reqs" in targets
    # Resolving dependencies reads every BUILD file's addresses (`./py.typed` is not one)
    # and infers imports (the Rust parser needs no pex download).
    deps = _pants(pants, "dependencies", "::")
    resolved = set(deps.stdout.split())
    pack = "llama-index-packs-clip-hybrid/llama_index/packs/clip_hybrid"
    assert f"{pack}:py.typed" in resolved
    assert f"{pack}/pack.py" in resolved
    assert "[WARN] The target" not in deps.stderr  # no ambiguous requirement owners
