"""OpenAI's published CLIP checkpoints: their names, where they are, and a checked download.

Each URL carries the file's SHA256 (as OpenAI publishes them): a file already in the
download folder with that digest is used as it is; anything else is fetched again, with
a timeout, into a temporary file that replaces the target only once its digest matches.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import urllib.request
from typing import Any

from ..images.sources import file_sha256
from ..redaction import package_logger

logger = package_logger(__name__)

_BASE = "https://openaipublic.azureedge.net/clip/models"
#: Published model name -> download URL (``<base>/<sha256>/<file>``).
MODELS: dict[str, str] = {
    name: f"{_BASE}/{digest}/{file}"
    for name, digest, file in (
        ("RN50", "afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762", "RN50.pt"),
        ("RN101", "8fa8567bab74a42d41c5915025a8e4538c3bdbe8804a470a72f30b0d94fab599", "RN101.pt"),
        (
            "RN50x4",
            "7e526bd135e493cef0776de27d5f42653e6b4c8bf9e0f653bb11773263205fdd",
            "RN50x4.pt",
        ),
        (
            "RN50x16",
            "52378b407f34354e150460fe41077663dd5b39c54cd0bfd2b27167a4a06ec9aa",
            "RN50x16.pt",
        ),
        (
            "RN50x64",
            "be1cfb55d75a9666199fb2206c106743da0f6468c9d327f3e0d0a543a9919d9c",
            "RN50x64.pt",
        ),
        (
            "ViT-B/32",
            "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af",
            "ViT-B-32.pt",
        ),
        (
            "ViT-B/16",
            "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f",
            "ViT-B-16.pt",
        ),
        (
            "ViT-L/14",
            "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836",
            "ViT-L-14.pt",
        ),
        (
            "ViT-L/14@336px",
            "3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02",
            "ViT-L-14-336px.pt",
        ),
    )
}


class ClipWeightsUnavailableError(RuntimeError):
    """The CLIP weights could not be downloaded or read."""


def weights_unavailable(name: str, exc: BaseException) -> ClipWeightsUnavailableError:
    """The error for weights of ``name`` that could not be had, and what to do instead."""
    where = "read" if os.path.isfile(name) else "download"
    return ClipWeightsUnavailableError(
        f"Could not {where} the CLIP weights for {name!r} ({type(exc).__name__}: "
        f"{exc}); pass a local checkpoint path as the model (Python: "
        "model_name='/path/to/ViT-B-32.pt', CLI: --clip-model PATH), or 'none' "
        "for the caption-only mode without CLIP."
    )


#: Seconds without data before a download is abandoned.
DOWNLOAD_TIMEOUT_S = 60.0
DEFAULT_DOWNLOAD_ROOT = os.path.join("~", ".cache", "clip")


def checkpoint_path(name: str, download_root: str | None = None) -> str:
    """A local file for ``name``: a published name is downloaded once (checked) into
    ``download_root`` (default ``~/.cache/clip``, where OpenAI's ``clip`` keeps them too);
    anything else is taken as a path."""
    if name in MODELS:
        return download(name, os.path.expanduser(download_root or DEFAULT_DOWNLOAD_ROOT))
    return name


def download(name: str, root: str, *, timeout: float = DOWNLOAD_TIMEOUT_S) -> str:
    """The verified local file of published model ``name`` in ``root``.

    Raises:
        OSError: the download failed or its SHA256 does not match (nothing is left behind).
    """
    url = MODELS[name]
    expected = url.split("/")[-2]
    target = os.path.join(root, os.path.basename(url))
    if os.path.isfile(target) and file_sha256(target) == expected:
        return target
    os.makedirs(root, exist_ok=True)
    logger.info("Downloading CLIP %s from %s", name, url)
    fd, partial = tempfile.mkstemp(dir=root, prefix=".download-", suffix=".pt")
    try:
        hasher = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as source:
            total = int(source.headers.get("Content-Length") or 0)
            progress = _progress(total, name)
            for block in iter(lambda: source.read(1 << 20), b""):
                out.write(block)
                hasher.update(block)
                if progress is not None:
                    progress.update(len(block))
            if progress is not None:
                progress.close()
        if hasher.hexdigest() != expected:
            raise OSError(f"the downloaded {name} weights do not match their SHA256 ({url})")
        os.replace(partial, target)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return target


def _progress(total: int, name: str) -> Any:
    """A download bar on stderr when it is a terminal."""
    if not sys.stderr.isatty():
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total or None, unit="B", unit_scale=True, desc=f"CLIP {name}")
