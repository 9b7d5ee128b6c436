"""A seeded generator of sample images: diagrams, charts, screenshots, photos, text.

The same seed gives byte-identical PNGs on a given machine (fonts are taken from the
system; install ``fonts-wqy-microhei`` or Noto CJK to render Chinese glyphs).
"""

from __future__ import annotations

import itertools
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter, ImageFont

KINDS = (
    "architecture",
    "flowchart",
    "diagram",
    "bar_chart",
    "ui_screenshot",
    "landscape_photo",
)

CJK_FONT_CANDIDATES = (
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",
    "/System/Library/Fonts/PingFang.ttc",
    "C:/Windows/Fonts/msyh.ttc",
)
LATIN_FONT_CANDIDATES = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/System/Library/Fonts/Helvetica.ttc",
    "C:/Windows/Fonts/arial.ttf",
)

ENGLISH_TEXTS = (
    "QUARTERLY REVENUE REPORT",
    "EXIT ONLY - NO PARKING",
    "Invoice #4711  Total: $1,280.00",
)
CHINESE_TEXTS = ("系统架构图", "用户登录流程", "年度销售报告")


@dataclass(frozen=True)
class SampleImage:
    """One generated image and what it shows."""

    path: Path
    kind: str
    text: str | None = None
    lang: str | None = None


def find_cjk_font() -> str | None:
    """Path of an installed font with Chinese glyphs, or None."""
    env = os.environ.get("CLIP_HYBRID_CJK_FONT")
    for candidate in ((env,) if env else ()) + CJK_FONT_CANDIDATES:
        if candidate and os.path.isfile(candidate):
            return candidate
    return None


def _font(size: int, cjk: bool = False) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    candidates = (find_cjk_font(),) if cjk else LATIN_FONT_CANDIDATES
    for candidate in candidates:
        if candidate and os.path.isfile(candidate):
            return ImageFont.truetype(candidate, size)
    return ImageFont.load_default(size)


def _color(rng: random.Random, lo: int = 40, hi: int = 220) -> tuple[int, int, int]:
    return (rng.randint(lo, hi), rng.randint(lo, hi), rng.randint(lo, hi))


def _arrow(draw: ImageDraw.ImageDraw, a: tuple[int, int], b: tuple[int, int]) -> None:
    draw.line([a, b], fill=(30, 30, 30), width=3)
    bx, by = b
    draw.polygon([(bx, by), (bx - 8, by - 5), (bx - 8, by + 5)], fill=(30, 30, 30))


def _architecture(img: Image.Image, rng: random.Random) -> None:
    draw = ImageDraw.Draw(img)
    font = _font(13)
    labels = ["Client", "API Gateway", "Service", "Queue", "Database", "Cache"]
    boxes = []
    for row in range(2):
        for col in range(3):
            x, y = 18 + col * 100, 40 + row * 130 + rng.randint(-8, 8)
            boxes.append((x, y, x + 80, y + 50))
            draw.rectangle(boxes[-1], outline=(20, 40, 90), fill=_color(rng, 150, 230), width=3)
            draw.text((x + 6, y + 18), labels[row * 3 + col], fill=(0, 0, 0), font=font)
    for left, right in itertools.pairwise(boxes):
        if left[1] // 100 == right[1] // 100:
            _arrow(
                draw, (left[2], (left[1] + left[3]) // 2), (right[0], (right[1] + right[3]) // 2)
            )


def _flowchart(img: Image.Image, rng: random.Random) -> None:
    draw = ImageDraw.Draw(img)
    font = _font(12)
    cx = img.width // 2
    y = 10
    gap = 14
    for step in range(4):
        if step == 2:
            draw.polygon(
                [(cx, y), (cx + 50, y + 25), (cx, y + 50), (cx - 50, y + 25)],
                outline=(0, 0, 0),
                fill=(250, 220, 120),
                width=2,
            )
            draw.text((cx - 18, y + 18), "yes?", fill=(0, 0, 0), font=font)
            h = 50
        else:
            draw.rounded_rectangle(
                (cx - 60, y, cx + 60, y + 32),
                radius=12,
                outline=(0, 0, 0),
                fill=_color(rng, 170, 240),
                width=2,
            )
            draw.text((cx - 30, y + 10), f"step {step + 1}", fill=(0, 0, 0), font=font)
            h = 32
        if step < 3:
            draw.line([(cx, y + h), (cx, y + h + gap)], fill=(0, 0, 0), width=3)
        y += h + gap


def _diagram(img: Image.Image, rng: random.Random) -> None:
    draw = ImageDraw.Draw(img)
    nodes = [(rng.randint(30, img.width - 30), rng.randint(30, img.height - 30)) for _ in range(7)]
    for i, a in enumerate(nodes):
        for b in nodes[i + 1 :]:
            if rng.random() < 0.35:
                draw.line([a, b], fill=(60, 60, 60), width=2)
    for x, y in nodes:
        draw.ellipse((x - 16, y - 16, x + 16, y + 16), fill=_color(rng), outline=(0, 0, 0), width=2)


def _bar_chart(img: Image.Image, rng: random.Random) -> None:
    draw = ImageDraw.Draw(img)
    draw.line(
        [(30, 20), (30, img.height - 30), (img.width - 15, img.height - 30)],
        fill=(0, 0, 0),
        width=3,
    )
    n = rng.randint(4, 7)
    width = (img.width - 60) // n
    color = _color(rng, 30, 200)
    for i in range(n):
        h = rng.randint(20, img.height - 70)
        x = 40 + i * width
        draw.rectangle((x, img.height - 30 - h, x + width - 10, img.height - 31), fill=color)
    draw.text((40, 5), "Sales by month", fill=(0, 0, 0), font=_font(14))


def _ui_screenshot(img: Image.Image, rng: random.Random) -> None:
    draw = ImageDraw.Draw(img)
    font = _font(12)
    draw.rectangle((0, 0, img.width, 28), fill=(45, 45, 60))
    for i, c in enumerate([(240, 80, 80), (240, 200, 60), (90, 200, 90)]):
        draw.ellipse((8 + i * 18, 8, 20 + i * 18, 20), fill=c)
    draw.rectangle((0, 28, 70, img.height), fill=(230, 232, 240))
    for i in range(6):
        draw.text((8, 40 + i * 24), f"Menu {i + 1}", fill=(40, 40, 40), font=font)
    draw.rectangle((90, 50, img.width - 20, 80), outline=(150, 150, 150), width=2)
    draw.text((96, 58), "Search...", fill=(120, 120, 120), font=font)
    accent = _color(rng, 20, 160)
    for i in range(2):
        draw.rounded_rectangle((90 + i * 90, 110, 170 + i * 90, 140), radius=6, fill=accent)
        draw.text((104 + i * 90, 118), ["Save", "Cancel"][i], fill=(255, 255, 255), font=font)


def _landscape_photo(img: Image.Image, rng: random.Random) -> None:
    draw = ImageDraw.Draw(img)
    top, bottom = _color(rng, 60, 140), (225, 235, 250)
    for y in range(img.height // 2 + 20):
        t = y / (img.height / 2 + 20)
        draw.line(
            [(0, y), (img.width, y)],
            fill=tuple(int(a + (b - a) * t) for a, b in zip(top, bottom, strict=False)),
        )
    for layer in range(3):
        base = img.height // 2 + layer * 22
        pts = [(0, img.height)]
        for x in range(0, img.width + 20, 20):
            pts.append((x, base - rng.randint(0, 60 - layer * 15)))
        pts.append((img.width, img.height))
        g = 90 - layer * 25
        draw.polygon(pts, fill=(g // 2, g + rng.randint(0, 40), g // 2))
    draw.ellipse((img.width - 70, 20, img.width - 30, 60), fill=(255, 230, 140))
    noise = Image.frombytes("L", img.size, rng.randbytes(img.width * img.height)).convert("RGB")
    img.paste(Image.blend(img, noise, 0.08))
    img.paste(img.filter(ImageFilter.GaussianBlur(0.6)))


def _text_image(text: str, lang: str, rng: random.Random, size: tuple[int, int]) -> Image.Image:
    img = Image.new("RGB", size, _color(rng, 215, 250))
    draw = ImageDraw.Draw(img)
    font = _font(28 if lang == "zh" else 18, cjk=lang == "zh")
    # Wrap to the image width.
    lines: list[str] = []
    line = ""
    for ch in text:
        if draw.textlength(line + ch, font=font) > size[0] - 24:
            lines.append(line)
            line = ch.lstrip()
        else:
            line += ch
    lines.append(line)
    y = size[1] // 2 - 20 * len(lines)
    for piece in lines:
        draw.text((12, y), piece, fill=(10, 10, 10), font=font)
        y += 40
    return img


_DRAWERS: dict[str, Callable[[Image.Image, random.Random], None]] = {
    "architecture": _architecture,
    "flowchart": _flowchart,
    "diagram": _diagram,
    "bar_chart": _bar_chart,
    "ui_screenshot": _ui_screenshot,
    "landscape_photo": _landscape_photo,
}


def make_sample_images(
    dest: str | os.PathLike[str],
    *,
    seed: int = 0,
    per_kind: int = 2,
    size: tuple[int, int] = (320, 240),
    with_text: bool = True,
    subfolders: bool = True,
) -> list[SampleImage]:
    """Draw ``per_kind`` images of each kind (plus English and Chinese text images).

    Files go to ``dest/<kind>/<kind>_<i>.png`` (or flat with ``subfolders=False``). The
    same arguments always give the same bytes.
    """
    root = Path(dest)
    out: list[SampleImage] = []
    for kind in KINDS:
        for i in range(per_kind):
            rng = random.Random(f"{seed}-{kind}-{i}")
            img = Image.new("RGB", size, (255, 255, 255))
            _DRAWERS[kind](img, rng)
            out.append(_save(img, root, kind, f"{kind}_{i}.png", subfolders))
    if with_text:
        for lang, texts in (("en", ENGLISH_TEXTS), ("zh", CHINESE_TEXTS)):
            for i, text in enumerate(texts):
                rng = random.Random(f"{seed}-text-{lang}-{i}")
                img = _text_image(text, lang, rng, size)
                sample = _save(img, root, f"text_{lang}", f"text_{lang}_{i}.png", subfolders)
                out.append(SampleImage(sample.path, sample.kind, text=text, lang=lang))
    return out


def _save(img: Image.Image, root: Path, kind: str, name: str, subfolders: bool) -> SampleImage:
    folder = root / kind if subfolders else root
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    img.save(path, format="PNG", optimize=False)
    return SampleImage(path=path, kind=kind)
