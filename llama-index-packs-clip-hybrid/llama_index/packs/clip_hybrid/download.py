"""download_llama_pack for this pack: the upstream workflow, kept working.

Upstream removed ``download_llama_pack`` from core 0.14.21, and it only ever resolved
packs listed in a table shipped inside core, so it never found third-party packs.
"""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
import sys
from pathlib import Path
from typing import Any

PACK_CLASSES = ("ClipHybridPack",)
_SOURCE = Path(__file__).resolve().parent
_SKIP = ("__pycache__", "*.pyc", "testing", "BUILD")
REQUIREMENTS = """\
# What this copy of the pack imports. download_llama_pack installs nothing;
# install these yourself, e.g. `pip install -r requirements.txt`.
llama-index-packs-clip-hybrid
"""


def download_llama_pack(
    llama_pack_class: str = "ClipHybridPack",
    download_dir: str | None = None,
    llama_pack_url: str | None = None,
    refresh_cache: bool = False,
) -> type[Any]:
    """Return the pack class; with ``download_dir``, from an editable copy of its source.

    Same signature as the upstream function. Given a folder, the pack's source is copied
    to ``<download_dir>/clip_hybrid_pack/`` (with a ``requirements.txt``) and the class is
    loaded from that copy, so edits there take effect. An existing copy is reused as is
    (your edits are kept) unless ``refresh_cache=True``. Nothing is installed.

    Example:
        >>> Pack = download_llama_pack("ClipHybridPack", "./my_pack")  # doctest: +SKIP
        >>> pack = Pack(uri="./clip_hybrid.db")  # doctest: +SKIP

    Raises:
        ValueError: an unknown class name, or a ``llama_pack_url`` (nothing is fetched).
    """
    if llama_pack_class not in PACK_CLASSES:
        raise ValueError(
            f"Unknown pack class {llama_pack_class!r}; this package provides "
            f"{', '.join(PACK_CLASSES)}."
        )
    if llama_pack_url is not None:
        raise ValueError(
            "llama_pack_url is not supported: the pack is installed from PyPI "
            "(pip install llama-index-packs-clip-hybrid), nothing is downloaded at run time."
        )
    if download_dir is None:
        from . import pack

        return getattr(pack, llama_pack_class)

    target = Path(download_dir).expanduser().resolve() / "clip_hybrid_pack"
    if refresh_cache and target.exists():
        shutil.rmtree(target)
    if not target.exists():
        shutil.copytree(_SOURCE, target, ignore=shutil.ignore_patterns(*_SKIP))
        (target / "requirements.txt").write_text(REQUIREMENTS)
    return getattr(_load_copy(target), llama_pack_class)


def _load_copy(folder: Path) -> Any:
    """Import ``folder`` as a package under a name of its own (its relative imports work)."""
    name = "clip_hybrid_pack_" + hashlib.sha1(str(folder).encode()).hexdigest()[:10]
    for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
        del sys.modules[key]  # reload after edits
    spec = importlib.util.spec_from_file_location(
        name, folder / "__init__.py", submodule_search_locations=[str(folder)]
    )
    if spec is None or spec.loader is None:  # pragma: no cover
        raise ImportError(f"Cannot import the pack copy at {folder}.")
    module = importlib.util.module_from_spec(spec)
    # Registered before executing, as importlib requires, so that the copy's relative
    # imports (`from .pack import ...`) resolve inside the copy, not the installed package.
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
