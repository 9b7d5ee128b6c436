"""Regenerate the sample images in examples/images/ (seeded: same bytes every run).

    uv run python examples/make_sample_images.py

Every image here is drawn by this script, so they carry no third-party licence; they are
released under CC0 1.0 with the rest of examples/ (see examples/images/LICENSE.md).
Chinese glyphs need a CJK font (Debian: `apt-get install fonts-wqy-microhei`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from llama_index.packs.clip_hybrid.testing import (
    find_cjk_font,
    make_hard_text_images,
    make_sample_images,
)

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "images")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if find_cjk_font() is None:
        raise SystemExit(
            "No CJK font found: the Chinese sample images would show empty boxes. "
            "Install one (Debian: apt-get install fonts-wqy-microhei) or set CLIP_HYBRID_CJK_FONT."
        )
    images = make_sample_images(args.out, seed=args.seed)
    for image in images:
        print(f"{image.kind:16} {image.path.relative_to(args.out)}")
    # Slides whose text OCR struggles with (bold, tight, small on busy backgrounds, mixed
    # scripts): the hard half of examples/qrels.jsonl.
    for hard in make_hard_text_images(args.out, seed=args.seed):
        print(f"{'hard_text_' + hard.lang:16} {hard.path.relative_to(args.out)}")


if __name__ == "__main__":
    main()
