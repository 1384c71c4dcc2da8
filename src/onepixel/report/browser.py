"""Open a report in a real headless Chromium and read back what the page itself saw.

The report carries a ``#selfcheck`` element that its inline script fills on ``load`` with the
number of script errors, decoded images and tables. ``--dump-dom`` returns the DOM after that
script ran, so the check reflects a real browser's rendering, not our own parsing of the HTML.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "chrome")
# Flags for a closed network: without them Chromium keeps dialling Google's hosts.
HEADLESS_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--virtual-time-budget=5000",
)


@dataclass(frozen=True)
class BrowserCheck:
    """What the browser reported: script errors, images decoded / total, tables rendered."""

    errors: int
    images_ok: int
    images_total: int
    tables: int
    dom: str

    @property
    def ok(self) -> bool:
        """Return True when the page loaded with no errors and every image decoded."""
        return self.errors == 0 and self.images_ok == self.images_total


def find_chromium() -> str | None:
    """Return the path of a Chromium/Chrome executable, or None when none is installed."""
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def _selfcheck_value(dom: str, key: str) -> str:
    tag = re.search(r'<div id="selfcheck"[^>]*>', dom)
    if not tag:
        raise RuntimeError("the page has no #selfcheck element: not a onepixel report?")
    match = re.search(rf'data-{key}="([^"]*)"', tag.group(0))
    if not match:
        raise RuntimeError(f"#selfcheck has no data-{key}: the page's load handler did not run")
    return match.group(1)


def check_in_browser(
    page: str | Path, *, screenshot: Path | None = None, timeout: float = 120
) -> BrowserCheck:
    """Load ``page`` in headless Chromium and return what its self-check recorded.

    ``screenshot`` also writes a PNG of the first screen. Raises RuntimeError when no browser
    is installed or the page never finished loading.
    """
    exe = find_chromium()
    if exe is None:
        raise RuntimeError("no Chromium found: install Debian's `chromium` package")
    url = Path(page).resolve().as_uri()
    with tempfile.TemporaryDirectory(prefix="onepixel-chromium-") as profile:
        flags = [*HEADLESS_FLAGS, f"--user-data-dir={profile}"]
        dom = subprocess.run(
            [exe, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=timeout, check=False
        ).stdout
        if screenshot is not None:
            subprocess.run(
                [exe, *flags, f"--screenshot={Path(screenshot).resolve()}", "--window-size=1280,1600", url],
                capture_output=True,
                timeout=timeout,
                check=False,
            )
    if _selfcheck_value(dom, "done") != "1":
        raise RuntimeError("the page did not finish loading in the browser")
    images_ok, images_total = (int(v) for v in _selfcheck_value(dom, "images").split("/"))
    return BrowserCheck(
        errors=int(_selfcheck_value(dom, "errors")),
        images_ok=images_ok,
        images_total=images_total,
        tables=int(_selfcheck_value(dom, "tables")),
        dom=dom,
    )
