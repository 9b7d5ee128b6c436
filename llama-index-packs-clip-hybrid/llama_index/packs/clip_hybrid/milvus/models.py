"""Whether a collection's vectors were made by the model in use: the same name, or the
same checkpoint file (its bytes, wherever it is now)."""

from __future__ import annotations

import os

from .._util import same_file_content


def model_mismatch(
    recorded: str | None, model: str | None, option: str = "clip_model"
) -> str | None:
    """Why vectors recorded as made by ``recorded`` cannot be compared with ``model``'s,
    with the fix (``option``: the argument that picks the model), as the end of a
    sentence naming the collection; None when they can."""
    if not recorded or not model or recorded == model or same_file_content(recorded, model):
        return None
    gone = os.path.isabs(recorded) and not os.path.exists(recorded)
    fix = (
        "put that checkpoint (or a link to it) back at its path"
        if gone
        else f"use {{{option}={recorded}}} (or leave it out: the index's model is the default)"
    )
    return (
        f"was built with the model {recorded!r}{' (a file no longer there)' if gone else ''}, "
        f"but this uses {model!r}: vectors of two models are not comparable; {fix}, use "
        "another {collection_name}, or {overwrite=True} to rebuild (its data is lost)."
    )
