"""Open a report in a real headless Chromium and read back what the page itself saw.

The report carries a ``#selfcheck`` element that its inline script fills on ``load`` with the
number of script errors, decoded images and tables. ``--dump-dom`` returns the DOM after that
script ran, so the check reflects a real browser's rendering, not our own parsing of the HTML.
"""

from __future__ import annotations

import html
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
    """What the browser reported: script errors, images decoded / total, tables rendered.

    ``console_errors`` counts ``console.error`` calls; ``confmap`` is the readout of the first
    confidence map after a pointer moved onto its centre pixel; ``width`` the page's layout width
    and ``overflow`` how many pixels the document is wider than the window (0: nothing sticks out).
    """

    errors: int
    images_ok: int
    images_total: int
    tables: int
    dom: str
    console_errors: int = 0
    confmap: str = ""
    width: int = 0
    overflow: int = 0

    @property
    def ok(self) -> bool:
        """Return True when the page loaded with no errors and every image decoded."""
        return self.errors == 0 and self.console_errors == 0 and self.images_ok == self.images_total


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


DESKTOP = (1280, 1600)
PHONE = (390, 844)
# Headless Chromium never lays a window out narrower than this; narrower checks use an iframe.
MIN_WINDOW_WIDTH = 500

# Holds the page in an iframe of the phone's size and copies the page's own #selfcheck out.
_FRAME = """<!DOCTYPE html><html><head><meta charset="utf-8"><style>body{{margin:0}}
iframe{{border:0;width:{w}px;height:{h}px;display:block}}</style></head><body>
<div id="selfcheck"></div><iframe id="page" src="{src}"></iframe><script>
(function(){{var f=document.getElementById('page'),out=document.getElementById('selfcheck');
function copy(){{var d;try{{d=f.contentDocument;}}catch(e){{return;}}
var c=d&&d.getElementById('selfcheck');if(!c||c.dataset.done!=='1'){{setTimeout(copy,50);return;}}
for(var k in c.dataset){{out.dataset[k]=c.dataset[k];}}}}
f.addEventListener('load',copy);}})();</script></body></html>"""


def check_in_browser(
    page: str | Path,
    *,
    screenshot: Path | None = None,
    timeout: float = 120,
    window: tuple[int, int] = DESKTOP,
) -> BrowserCheck:
    """Load ``page`` in headless Chromium at ``window`` (width, height) and return its self-check.

    ``screenshot`` also writes a PNG of the first screen at that size. Raises RuntimeError when
    no browser is installed or the page never finished loading.
    """
    exe = find_chromium()
    if exe is None:
        raise RuntimeError("no Chromium found: install Debian's `chromium` package")
    url = Path(page).resolve().as_uri()
    width, height = window
    with tempfile.TemporaryDirectory(prefix="onepixel-chromium-") as profile:
        if width < MIN_WINDOW_WIDTH:
            frame = Path(profile) / "frame.html"
            frame.write_text(_FRAME.format(w=width, h=height, src=html.escape(url)))
            url = frame.as_uri()
        window_width = max(width, MIN_WINDOW_WIDTH)
        flags = [
            *HEADLESS_FLAGS,
            "--allow-file-access-from-files",
            f"--user-data-dir={profile}",
            f"--window-size={window_width},{height}",
        ]
        dom = subprocess.run(
            [exe, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=timeout, check=False
        ).stdout
        if screenshot is not None:
            subprocess.run(
                [exe, *flags, f"--screenshot={Path(screenshot).resolve()}", url],
                capture_output=True,
                timeout=timeout,
                check=False,
            )
            if width < window_width and Path(screenshot).is_file():
                from PIL import Image

                with Image.open(screenshot) as shot:
                    cropped = shot.crop((0, 0, width, min(height, shot.height)))
                cropped.save(screenshot)
    if _selfcheck_value(dom, "done") != "1":
        raise RuntimeError("the page did not finish loading in the browser")
    images_ok, images_total = (int(v) for v in _selfcheck_value(dom, "images").split("/"))
    return BrowserCheck(
        errors=int(_selfcheck_value(dom, "errors")),
        images_ok=images_ok,
        images_total=images_total,
        tables=int(_selfcheck_value(dom, "tables")),
        dom=dom,
        console_errors=int(_optional(dom, "console", "0")),
        confmap=_optional(dom, "confmap", ""),
        width=int(_optional(dom, "width", "0")),
        overflow=int(_optional(dom, "overflow", "0")),
    )


def _optional(dom: str, key: str, default: str) -> str:
    try:
        return html.unescape(_selfcheck_value(dom, key))
    except RuntimeError:
        return default
