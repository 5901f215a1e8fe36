"""Open an inspect HTML report in headless Chromium, take a screenshot, and check the histogram shows.

Run with `make report-check` (installs Debian's chromium if it is missing). The screenshot is written to
build/report-screenshot.png (not kept in git) so a reviewer can look at it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

import tfbridge as tb

ROOT = Path(__file__).resolve().parents[1]
BAR_RGB = np.array([0x1F, 0x77, 0xB4]) / 255  # the histogram's bar colour


def examples() -> object:
    rng = np.random.default_rng(0)
    for n in (rng.lognormal(np.log(60), 0.8, 5000)).astype(int) + 1:
        yield np.ones(n, np.int32), int(rng.integers(0, 2))


def main() -> int:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        print("chromium not found: run `make report-check`, which installs it", file=sys.stderr)
        return 2
    out_dir = ROOT / "build"
    out_dir.mkdir(exist_ok=True)
    html = tb.inspect(examples, batched=False, full=True, batch_size=64, buckets=16).to_html(out_dir / "report.html")
    shot = out_dir / "report-screenshot.png"
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--window-size=1100,1400", f"--screenshot={shot}", html.as_uri()],
            check=True, capture_output=True, timeout=120,
        )
    import matplotlib.image

    pixels = matplotlib.image.imread(shot)[..., :3]
    bar = np.all(np.abs(pixels - BAR_RGB) < 0.08, axis=-1)
    rows = np.flatnonzero(bar.any(axis=1))
    print(f"screenshot: {shot} ({pixels.shape[1]}x{pixels.shape[0]}); histogram-bar pixels: {int(bar.sum())}")
    if bar.sum() < 500 or rows.size == 0 or rows.max() - rows.min() < 40:
        print("FAIL: the histogram is not visible in the screenshot", file=sys.stderr)
        return 1
    print("OK: the report opens in Chromium and its length histogram is visible")
    return 0


if __name__ == "__main__":
    sys.exit(main())
