"""The walkthrough notebook: valid nbformat 4, code that compiles, the same API as the pack."""

from __future__ import annotations

import ast
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_notebook_cells_compile_and_use_the_real_api() -> None:
    notebook = json.loads((ROOT / "examples" / "walkthrough.ipynb").read_text())
    assert notebook["nbformat"] == 4
    code = ["".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == "code"]
    assert len(code) >= 5
    import llama_index.packs.clip_hybrid as pack_module
    from llama_index.packs.clip_hybrid import ClipHybridPack

    names: set[str] = set()
    for source in code:
        tree = ast.parse(source)  # compiles (magics are commented out)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "llama_index.packs.clip_hybrid":
                names |= {alias.name for alias in node.names}
            attribute = isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
            if attribute and node.value.id == "pack":  # type: ignore[attr-defined]
                assert hasattr(ClipHybridPack, node.attr), node.attr  # type: ignore[attr-defined]
    assert names and all(hasattr(pack_module, name) for name in names)
