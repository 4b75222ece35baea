"""Screenshots of the two reports for the README (docs/report_*.png), from a demo's folder.

    .venv/bin/fedstock-planner demo --out runs/demo-shots
    .venv/bin/python scripts/report_screenshots.py runs/demo-shots

Headless Debian Chromium draws each page at a laptop's width; the top of the page is kept.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import click
import matplotlib.image as mpimg

ROOT = Path(__file__).resolve().parents[1]
WIDTH, HEIGHTS = 1280, {"report_planner.png": 2300, "report_site.png": 2500}
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars"]


@click.command()
@click.argument("demo", type=click.Path(exists=True, file_okay=False))
@click.option("--site", default="warehouse-00", show_default=True, help="Whose morning report is shown.")
def main(demo: str, site: str) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("Debian's chromium is needed (apt-get install chromium)")
    pages = {
        "report_planner.png": Path(demo) / "report.html",
        "report_site.png": Path(demo) / "nodes" / site / "out" / "report.html",
    }
    with tempfile.TemporaryDirectory() as profile:
        for name, page in pages.items():
            if not page.is_file():
                sys.exit(f"{page} not found: run the demo first (it writes both reports)")
            shot = ROOT / "docs" / name
            args = [
                f"--user-data-dir={profile}",
                f"--screenshot={shot}",
                f"--window-size={WIDTH},{HEIGHTS[name]}",
            ]
            subprocess.run(
                [chromium, *FLAGS, *args, page.resolve().as_uri()], capture_output=True, timeout=120
            )
            pixels = mpimg.imread(shot)
            mpimg.imsave(shot, pixels[..., :3])  # no alpha: a smaller file
            print(f"wrote {shot.relative_to(ROOT)} ({shot.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
