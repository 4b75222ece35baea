"""Headless Debian Chromium for the reports' tests: the page as the browser built it, and a
screenshot. Never a downloaded browser: .ci/run installs Debian's chromium when it runs as root."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]
PLOT_BLUE = np.array([31, 119, 180]) / 255  # the reports' (and matplotlib's) first colour


def render(page: Path, work: Path, width: int = 1280, height: int = 2400) -> tuple[str, np.ndarray]:
    """(the DOM after scripts ran, the screenshot's RGB pixels) of ``page`` in headless Chromium."""
    url, profile = page.resolve().as_uri(), [f"--user-data-dir={work / 'chromium-profile'}"]
    dom = subprocess.run(
        [CHROMIUM, *FLAGS, *profile, "--dump-dom", url], capture_output=True, text=True, timeout=120
    )
    shot = work / f"{page.stem}.png"
    subprocess.run(
        [CHROMIUM, *FLAGS, *profile, f"--screenshot={shot}", f"--window-size={width},{height}", url],
        capture_output=True,
        timeout=120,
    )
    assert shot.is_file(), dom.stderr[-2000:]
    return dom.stdout, mpimg.imread(shot)[..., :3]


def painted(pixels: np.ndarray, colour: np.ndarray = PLOT_BLUE, tolerance: float = 0.08) -> int:
    """How many pixels of the screenshot are ``colour``: a plot's lines were drawn."""
    return int((np.abs(pixels - colour).sum(axis=-1) < tolerance).sum())
