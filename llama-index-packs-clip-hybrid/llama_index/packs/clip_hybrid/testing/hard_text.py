"""Seeded slides and screenshots with text drawn the way OCR struggles with it.

Bold titles set with tight letter spacing (OCR then reads "Quarterlyrevenue2023" as one
word), numbers and times, mixed English and Chinese, and small text on a busy, striped
background. :func:`make_hard_text_images` draws them into ``dest/hard_text_<lang>/``; the
evaluation set (``examples/qrels.jsonl``) asks for each one by its title.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from .sample_images import find_cjk_font

_BOLD_FONTS = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Bold.ttf",
    "/System/Library/Fonts/Helvetica.ttc",
    "C:/Windows/Fonts/arialbd.ttf",
)
_REGULAR_FONTS = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/System/Library/Fonts/Helvetica.ttc",
    "C:/Windows/Fonts/arial.ttf",
)

#: (title, second line) of each English image; the title is what its query asks for.
ENGLISH_SLIDES = (
    ("Quarterly revenue 2023", "Net income up 12% on last year"),
    ("Launch window 09:30", "Countdown starts at T-10 minutes"),
    ("Customer churn rate", "Retention by signup cohort"),
    ("Server uptime 99.9%", "Last incident resolved in 42 min"),
    ("Database migration plan", "Freeze writes before cutover"),
    ("Weekly team standup", "Blockers first, then updates"),
    ("Marketing budget 2024", "Spend split by channel"),
    ("Shipping delayed until Friday", "Carrier capacity is limited"),
    ("Password reset required", "Your account was locked"),
    ("Annual leave policy", "Carry over up to five days"),
    ("Emergency exit route", "Assemble at the north parking lot"),
    ("Monthly active users", "Growth since the redesign"),
    ("Board meeting at 14:00", "Room 3, second floor"),
    ("Product roadmap Q4", "Mobile app and offline mode"),
    ("Inventory report March", "Stock counted in all stores"),
    ("Flight departs 18:45 Gate B12", "Boarding closes 20 minutes early"),
    ("Safety training session", "Hard hats and gloves required"),
    ("Cloud storage pricing", "Per gigabyte per month"),
    ("Payment overdue notice", "Please pay within seven days"),
    ("Network latency dashboard", "Median round trip per region"),
    ("Hiring pipeline status", "Interviews scheduled this week"),
    ("Deployment checklist v2", "Run smoke tests after release"),
    ("Conference room booking", "Reserve at least a day ahead"),
    ("Energy consumption by region", "Peak load in the afternoon"),
    ("Support ticket backlog", "Oldest open ticket is 9 days"),
)

#: (title, second line) of each Chinese image (some mix in English words and numbers).
CHINESE_SLIDES = (
    ("季度营收报表", "净利润同比增长12%"),
    ("发布时间09:30", "倒计时十分钟开始"),
    ("客户流失率分析", "按注册月份统计"),
    ("服务器运行状态", "本月可用性99.9%"),
    ("数据库迁移计划", "切换前冻结写入"),
    ("每周团队例会", "先说阻塞问题"),
    ("市场预算2024", "按渠道分配费用"),
    ("物流配送延迟", "承运能力不足"),
    ("密码重置提醒", "您的账户已被锁定"),
    ("年假管理制度", "最多结转五天"),
    ("紧急疏散路线", "在北侧停车场集合"),
    ("月活跃用户数", "改版后持续增长"),
    ("董事会会议14:00", "二楼三号会议室"),
    ("产品路线图", "移动应用与离线模式"),
    ("库存盘点报告", "所有门店已完成清点"),
    ("航班登机口B12", "起飞前二十分钟停止登机"),
    ("安全培训课程", "必须佩戴安全帽"),
    ("API网关配置", "限流与鉴权规则"),
    ("用户Dashboard概览", "按地区查看访问量"),
    ("付款逾期通知", "请在七天内付款"),
)

#: The drawing styles, one per image in turn.
STYLES = ("bold_tight", "small_busy", "bold_tight_dark", "mixed_small")


@dataclass(frozen=True)
class HardTextImage:
    """One drawn image: its file, language, title (what a query asks for) and style."""

    path: Path
    lang: str
    title: str
    subtitle: str
    style: str


def _font(size: int, *, bold: bool, cjk: bool) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    candidates: tuple[str | None, ...] = (
        (find_cjk_font(),) if cjk else (_BOLD_FONTS if bold else _REGULAR_FONTS)
    )
    for candidate in candidates:
        if candidate and os.path.isfile(candidate):
            return ImageFont.truetype(candidate, size)
    return ImageFont.load_default(size)


def _draw_tight(
    draw: ImageDraw.ImageDraw,
    xy: tuple[int, int],
    text: str,
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont,
    fill: tuple[int, int, int],
    *,
    tracking: float,
    space: float,
) -> None:
    """Draw ``text`` one character at a time: ``tracking`` pixels added after each
    character (negative: tighter than the font), a space advancing ``space`` of its width."""
    x, y = float(xy[0]), xy[1]
    for ch in text:
        width = draw.textlength(ch, font=font)
        if ch == " ":
            x += width * space
            continue
        draw.text((x, y), ch, fill=fill, font=font)
        x += width + tracking


def _busy_background(img: Image.Image, rng: random.Random) -> None:
    """Diagonal stripes and speckles in light colours: text on a busy slide or photo."""
    draw = ImageDraw.Draw(img)
    for offset in range(-img.height, img.width, 14):
        colour = tuple(rng.randint(170, 235) for _ in range(3))
        draw.line([(offset, img.height), (offset + img.height, 0)], fill=colour, width=6)
    for _ in range(900):
        x, y = rng.randrange(img.width), rng.randrange(img.height)
        draw.point((x, y), fill=tuple(rng.randint(120, 255) for _ in range(3)))


def draw_hard_text(
    title: str,
    subtitle: str,
    *,
    lang: str,
    style: str,
    rng: random.Random,
    size: tuple[int, int] = (480, 270),
) -> Image.Image:
    """One slide: ``title`` large, ``subtitle`` below, in ``style`` (see :data:`STYLES`)."""
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}; choose from {', '.join(STYLES)}")
    cjk = lang == "zh"
    dark = style == "bold_tight_dark"
    img = Image.new("RGB", size, (28, 32, 48) if dark else (250, 250, 246))
    if style in ("small_busy", "mixed_small"):
        _busy_background(img, rng)
    draw = ImageDraw.Draw(img)
    ink = (245, 245, 245) if dark else (15, 15, 20)
    # A header bar and a few boxes: the layout of a slide or a dashboard.
    draw.rectangle((0, 0, size[0], 10), fill=tuple(rng.randint(40, 200) for _ in range(3)))
    for i in range(3):
        x = 24 + i * 150
        draw.rectangle((x, 190, x + 120, 250), outline=(120, 120, 130), width=2)
    small = style in ("small_busy", "mixed_small")
    title_size = (22 if cjk else 20) if small else (30 if cjk else 28)
    title_font = _font(title_size, bold=True, cjk=cjk)
    tracking = 0.0 if cjk else (-1.5 if small else -2.5)
    _draw_tight(
        draw, (18, 40 + rng.randint(0, 20)), title, title_font, ink, tracking=tracking, space=0.25
    )
    sub_font = _font(13 if small else 16, bold=False, cjk=cjk)
    draw.text((18, 120 + rng.randint(0, 20)), subtitle, fill=ink, font=sub_font)
    return img


def make_hard_text_images(
    dest: str | os.PathLike[str], *, seed: int = 0, langs: tuple[str, ...] = ("en", "zh")
) -> list[HardTextImage]:
    """Draw every slide of :data:`ENGLISH_SLIDES` and :data:`CHINESE_SLIDES` into
    ``dest/hard_text_<lang>/hard_text_<lang>_<i>.png`` (same seed, same bytes)."""
    out: list[HardTextImage] = []
    for lang in langs:
        slides = CHINESE_SLIDES if lang == "zh" else ENGLISH_SLIDES
        folder = Path(dest) / f"hard_text_{lang}"
        folder.mkdir(parents=True, exist_ok=True)
        for i, (title, subtitle) in enumerate(slides):
            style = STYLES[i % len(STYLES)]
            rng = random.Random(f"{seed}-hard-{lang}-{i}")
            img = draw_hard_text(title, subtitle, lang=lang, style=style, rng=rng)
            path = folder / f"hard_text_{lang}_{i}.png"
            img.save(path, format="PNG", optimize=False)
            out.append(HardTextImage(path, lang, title, subtitle, style))
    return out
