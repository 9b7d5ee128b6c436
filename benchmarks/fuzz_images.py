"""Fuzzing open_image: coverage-guided (atheris + libFuzzer) from seeds of every format.

    uv run python benchmarks/fuzz_images.py [--seconds 120] [--corpus DIR]

``open_image`` promises one outcome for bad bytes: :class:`ImageLoadError`. Each fuzz
input is written to one reused temp file and opened; an ``ImageLoadError`` is expected, any
other exception is a finding (atheris prints its traceback and saves the input under
``--findings``), and so is an image that comes back in a mode other than 8-bit RGB or with
more pixels than ``max_pixels``. libFuzzer also reports hangs (``--timeout`` per input) and
memory blow-ups (over 2048 MB RSS); it stops at the first finding.

The corpus (default: a temp folder) is seeded with small valid images made here: PNG,
JPEG, animated GIF, WebP, BMP, TIFF, palette PNG with transparency, 16-bit PNG, CMYK JPEG
and an EXIF-rotated JPEG. PIL's Python code (all plugins) and ``images/decode.py``'s decoder
are instrumented; PIL's C decoders are exercised but give no coverage feedback.

The fuzzer runs in a child process; this one relays its output and sums it up.
Requires atheris (dev dependency, Python 3.11+).
"""

from __future__ import annotations

import argparse
import importlib
import io
import re
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

MAX_LEN = 65536
RSS_LIMIT_MB = 2048


def write_seeds(folder: Path) -> list[Path]:
    """Small valid images, one per format and normalisation path of ``to_rgb``."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rgb = Image.linear_gradient("L").resize((24, 16)).convert("RGB")
    rgb.paste((200, 40, 40), (4, 4, 12, 10))
    seeds: dict[str, tuple[Image.Image, dict]] = {
        "rgb.png": (rgb, {}),
        "rgb.jpg": (rgb, {"quality": 80}),
        "rgb.webp": (rgb, {"quality": 80}),
        "rgb.bmp": (rgb, {}),
        "rgb.tif": (rgb, {}),
        "cmyk.jpg": (rgb.convert("CMYK"), {}),
        "grey16.png": (Image.linear_gradient("L").resize((16, 16)).convert("I;16"), {}),
    }
    palette = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    seeds["palette-transparent.png"] = (palette, {"transparency": 0})
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW to display
    seeds["exif-rotated.jpg"] = (rgb, {"exif": exif.tobytes()})
    frames = [rgb.rotate(angle).convert("P") for angle in (0, 90, 180)]
    seeds["animated.gif"] = (
        frames[0],
        {"save_all": True, "append_images": frames[1:], "duration": 50, "loop": 0},
    )

    paths = []
    for name, (img, params) in seeds.items():
        buf = io.BytesIO()
        img.save(buf, format=Image.registered_extensions()[Path(name).suffix], **params)
        path = folder / f"seed-{name}"
        path.write_bytes(buf.getvalue())
        paths.append(path)
    return paths


def fuzz(args: argparse.Namespace) -> None:
    """Child process: instrument PIL and images.py, then hand over to libFuzzer."""
    import atheris

    # include= works per top-level package: "llama_index" would instrument all of llama_index
    # (hundreds of modules), so the decoder's functions are instrumented one by one.
    with atheris.instrument_imports(include=["PIL"]):
        from PIL import Image

        importlib.import_module("PIL.ImageOps")  # used by to_rgb
        Image.init()  # imports every format plugin now, inside the instrumented block

    from llama_index.packs.clip_hybrid.images import decode
    from llama_index.packs.clip_hybrid.images.decode import DEFAULT_MAX_PIXELS, ImageLoadError

    # Changed: images.py is images/decode.py; open_image's checks now live in its helpers.
    for func in (
        decode.open_image,
        decode._opened.__wrapped__,  # type: ignore[attr-defined]
        decode._refuse_slow_rle_bmp,
        decode.to_rgb,
    ):
        atheris.instrument_func(func)  # patches the code object in place
    open_image = decode.open_image

    # PIL warns about corrupt EXIF and the like on most mutants: noise, never a finding
    # (open_image enforces its own max_pixels; it does not rely on PIL's bomb warning).
    warnings.simplefilter("ignore")
    max_pixels = args.max_pixels or DEFAULT_MAX_PIXELS
    scratch = tempfile.TemporaryDirectory(prefix="fuzz-images-")
    target = Path(scratch.name) / "input"

    def test_one_input(data: bytes) -> None:
        target.write_bytes(data)
        try:
            img = open_image(target, max_pixels=max_pixels)
        except ImageLoadError:
            return
        assert img.mode == "RGB", f"open_image returned mode {img.mode!r}"
        width, height = img.size
        assert width * height <= max_pixels, f"{width}x{height} is over max_pixels={max_pixels}"

    atheris.Setup(
        [
            sys.argv[0],
            f"-max_total_time={args.seconds}",
            f"-max_len={MAX_LEN}",
            f"-rss_limit_mb={RSS_LIMIT_MB}",
            f"-timeout={args.timeout}",
            f"-artifact_prefix={args.findings}/",
            "-print_final_stats=1",
            args.corpus,
        ],
        test_one_input,
    )
    atheris.Fuzz()


_STATUS = re.compile(r"^#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+) .*?exec/s: (\d+)")
_ARTIFACT = re.compile(r"Test unit written to (\S+)")
_FINAL = re.compile(r"^stat::(\w+):\s+(\d+)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=120)
    parser.add_argument("--corpus", help="corpus folder, seeded and grown (default: temp)")
    parser.add_argument(
        "--findings",
        default=str(Path(tempfile.gettempdir()) / "fuzz-findings"),
        help="where crashing, hanging or OOM inputs are saved",
    )
    parser.add_argument("--timeout", type=int, default=10, help="seconds per input = a hang")
    parser.add_argument("--max-pixels", type=int, default=0, help="default: open_image's")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        fuzz(args)
        return

    with tempfile.TemporaryDirectory(prefix="fuzz-images-corpus-") as tmp:
        corpus = Path(args.corpus or tmp)
        seeds = write_seeds(corpus)
        Path(args.findings).mkdir(parents=True, exist_ok=True)
        print(f"{len(seeds)} seeds in {corpus}; findings go to {args.findings}", flush=True)
        command = [
            sys.executable,
            __file__,
            "--worker",
            f"--seconds={args.seconds}",
            f"--corpus={corpus}",
            f"--findings={args.findings}",
            f"--timeout={args.timeout}",
            f"--max-pixels={args.max_pixels}",
        ]
        status: tuple[str, ...] = ()
        final: dict[str, int] = {}
        findings: list[str] = []
        with subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
        ) as child:
            assert child.stdout is not None
            for line in child.stdout:
                print(line, end="", flush=True)
                if match := _STATUS.match(line):
                    status = match.groups()
                elif match := _ARTIFACT.search(line):
                    findings.append(match.group(1))
                elif match := _FINAL.match(line):
                    final[match.group(1)] = int(match.group(2))
        corpus_size = len(list(corpus.iterdir()))

    runs = final.get("number_of_executed_units", int(status[0]) if status else 0)
    print(
        f"\nsummary: {runs} executions, {final.get('average_exec_per_sec', '?')} exec/s, "
        + (f"cov {status[1]} ft {status[2]}, " if status else "")
        + f"corpus {corpus_size} files, peak RSS {final.get('peak_rss_mb', '?')} MB, "
        f"{len(findings)} finding(s), exit code {child.returncode}"
    )
    for path in findings:
        print(f"  finding: {path}")
    sys.exit(1 if findings or child.returncode else 0)


if __name__ == "__main__":
    main()
