"""Open inspect HTML reports in headless Chromium, take screenshots, and check that the plots show.

Four sources: a batched keras PyDataset with a NaN in one field, an image source, a text source (token id
sequences of varying length) and a labelled classification source. Each screenshot must show the plots' bars; the
first also the NaN warning box, the image source its image grid.

Run with `make report-check` (installs Debian's chromium if it is missing). The pages and screenshots are written
to build/report-NAME.html and build/report-NAME.png (not kept in git) so a reviewer can look at them.
tests/test_report.py runs the same checks when chromium is installed.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np

import tfbridge as tb
from tfbridge.report import Report

ROOT = Path(__file__).resolve().parents[1]
BAR_RGB = (0x1F, 0x77, 0xB4)  # every bar of the report's plots
WARN_RGB = (0xD9, 0x30, 0x25)  # the NaN/Inf warning box's border
FRAME_RGB = (0, 255, 0)  # the green frame of the image source's images


class Batches(keras.utils.PyDataset):  # type: ignore[misc]
    """12 batches of 16: token ids padded per batch (a longer batch each time), scores with one NaN, labels."""

    def __len__(self) -> int:
        return 12

    def __getitem__(self, i: int) -> Any:
        rng = np.random.default_rng(i)
        tokens = rng.integers(1, 1000, (16, 10 + 9 * i)).astype(np.int32)
        score = rng.normal(size=(16, 4)).astype(np.float32)
        if i == 5:
            score[3, 2] = np.nan
        return {"tokens": tokens, "score": score}, rng.integers(0, 3, 16)


class Images:
    """64 RGB images of 32x32 (a green frame around noise), with a digit label."""

    def __len__(self) -> int:
        return 64

    def __getitem__(self, i: int) -> Any:
        image = np.zeros((32, 32, 3), np.uint8)
        image[..., 1] = 255
        image[6:26, 6:26] = np.random.default_rng(i).integers(0, 256, (20, 20, 3))
        return image, i % 10


def text() -> Any:
    """2,000 token id sequences, lengths log-normal around 60, with a binary label."""
    rng = np.random.default_rng(0)
    for n in rng.lognormal(np.log(60), 0.8, 2000).astype(int) + 1:
        yield rng.integers(1, 5000, n).astype(np.int32), int(rng.integers(0, 2))


class Labelled:
    """Tabular rows with an imbalanced string label."""

    def __len__(self) -> int:
        return 400

    def __getitem__(self, i: int) -> Any:
        rng = np.random.default_rng(i)
        label = ["cat", "dog", "bird", "fish"][min(3, int(rng.exponential(1)))]
        return {"age": rng.normal(40, 12), "income": rng.lognormal(10, 1), "label": label}


def _batches() -> Report:
    return tb.inspect(Batches(), full=True, executor="serial", name="Batches (keras PyDataset)")


def _images() -> Report:
    return tb.inspect(Images(), batched=False, full=True, executor="serial")


def _text() -> Report:
    return tb.inspect(text, batched=False, full=True, batch_size=64, buckets=16)


def _labelled() -> Report:
    return tb.inspect(Labelled(), batched=False, full=True, label="label", executor="serial")


# name -> (the report, and the colours that must show in its screenshot with at least that many pixels)
SCENARIOS: dict[str, tuple[Callable[[], Report], dict[tuple[int, int, int], int]]] = {
    "batched-nan": (_batches, {BAR_RGB: 2000, WARN_RGB: 500}),
    "images": (_images, {BAR_RGB: 2000, FRAME_RGB: 2000}),
    "text": (_text, {BAR_RGB: 4000}),
    "labelled": (_labelled, {BAR_RGB: 4000}),
}


def find_browser() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def screenshot(browser: str, page: Path, png: Path, size: tuple[int, int] = (1200, 2000)) -> None:
    """Render ``page`` in headless Chromium (no network, a throwaway profile) into ``png``."""
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}", f"--screenshot={png}",
             page.as_uri()],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip


def pixels_of(png: Path, rgb: tuple[int, int, int], tolerance: float = 0.08) -> int:
    """How many pixels of the screenshot have this colour."""
    import matplotlib.image

    pixels = matplotlib.image.imread(png)[..., :3]
    return int(np.all(np.abs(pixels - np.asarray(rgb) / 255) < tolerance, axis=-1).sum())


def check(name: str, browser: str, out_dir: Path) -> list[str]:
    """Write the scenario's page and screenshot into ``out_dir``; the problems seen (none: it looks right)."""
    make, colours = SCENARIOS[name]
    page = make().to_html(out_dir / f"report-{name}.html")
    png = out_dir / f"report-{name}.png"
    screenshot(browser, page, png)
    problems = []
    for rgb, least in colours.items():
        n = pixels_of(png, rgb)
        print(f"{png}: {n} pixels of #{bytes(rgb).hex()} (at least {least})")
        if n < least:
            problems.append(f"{name}: {n} pixels of #{bytes(rgb).hex()} in the screenshot, fewer than {least}")
    return problems


def main() -> int:
    browser = find_browser()
    if browser is None:
        print("chromium not found: run `make report-check`, which installs it", file=sys.stderr)
        return 2
    out_dir = ROOT / "build"
    out_dir.mkdir(exist_ok=True)
    problems = [p for name in SCENARIOS for p in check(name, browser, out_dir)]
    for p in problems:
        print(f"FAIL: {p}", file=sys.stderr)
    if not problems:
        print(f"OK: {len(SCENARIOS)} reports open in Chromium with their plots, warning box and images visible")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
