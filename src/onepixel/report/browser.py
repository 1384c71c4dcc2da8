"""Open a report in a real headless Chromium and read back what the page itself saw.

The report carries a ``#selfcheck`` element that its inline script fills on ``load`` with the
number of script errors, decoded images, tables and section titles. ``--dump-dom`` prints the DOM
once the page has loaded (after its load handlers ran), so the check reflects a real browser's
rendering, not our own parsing of the HTML; nothing here waits a fixed time. Chromium's own
console log (``--enable-logging=stderr``) is read too, so a message logged before the page's
script could count it is still seen.
"""

from __future__ import annotations

import html
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
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
    "--disable-extensions",
    "--hide-scrollbars",
    "--enable-logging=stderr",
    "--v=0",
)
# Chromium logs a console message as: [pid:tid:time:INFO:CONSOLE:1] "text", source: URL (line)
_CONSOLE_LINE = re.compile(r':CONSOLE[^\]]*\] "(.*)", source: ')


@dataclass(frozen=True)
class BrowserCheck:
    """What the browser reported: script errors, images decoded / total, tables rendered.

    ``console_errors`` counts ``console.error`` calls and ``console_messages`` is every console
    message Chromium logged (a report logs none); ``titles`` is the number of section titles and
    ``duplicate_titles`` those that appear twice; ``confmap`` is the readout of the first
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
    titles: int = 0
    duplicate_titles: tuple[str, ...] = ()
    console_messages: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        """Return True when the page loaded with no errors and every image decoded."""
        return (
            self.errors == 0
            and self.console_errors == 0
            and not self.console_messages
            and self.images_ok == self.images_total
        )

    def problems(self) -> list[str]:
        """Return what is wrong with the page, one sentence each (empty when nothing is)."""
        out = []
        if self.errors:
            out.append(f"{self.errors} script error(s)")
        if self.console_errors or self.console_messages:
            out.append(f"console: {self.console_errors} error(s); messages {list(self.console_messages)}")
        if self.images_ok != self.images_total:
            out.append(f"only {self.images_ok} of {self.images_total} images decoded")
        if self.duplicate_titles:
            out.append(f"section titles repeated: {list(self.duplicate_titles)}")
        if self.overflow:
            out.append(f"the page is {self.overflow} px wider than the {self.width} px window")
        return out


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


def console_messages(log: str) -> tuple[str, ...]:
    """Return the console messages of the page found in Chromium's stderr log ``log``."""
    return tuple(m.group(1) for m in _CONSOLE_LINE.finditer(log))


DESKTOP = (1280, 1600)
PHONE = (390, 844)
# Headless Chromium never lays a window out narrower than this; narrower checks use an iframe.
MIN_WINDOW_WIDTH = 500

# Holds the page in an iframe of the phone's size and copies the page's own #selfcheck out when
# the iframe's load event fires (after the page's own load handlers, before this page's load).
_FRAME = """<!DOCTYPE html><html><head><meta charset="utf-8"><style>body{{margin:0}}
iframe{{border:0;width:{w}px;height:{h}px;display:block}}textarea{{display:none}}</style></head><body>
<div id="selfcheck"></div><iframe id="page" src="{src}"></iframe><textarea id="pagedom"></textarea>
<script>
(function(){{var f=document.getElementById('page'),out=document.getElementById('selfcheck');
f.addEventListener('load',function(){{var d=f.contentDocument,c=d&&d.getElementById('selfcheck');
if(!c){{return;}}for(var k in c.dataset){{out.dataset[k]=c.dataset[k];}}
document.getElementById('pagedom').textContent=d.documentElement.outerHTML;}});}})();
</script></body></html>"""


def _run(
    exe: str, flags: list[str], action: str, url: str, timeout: float
) -> subprocess.CompletedProcess[str]:
    """Return the finished Chromium run of ``action`` on ``url``; RuntimeError past ``timeout``."""
    try:
        return subprocess.run(
            [exe, *flags, action, url], capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"Chromium did not finish loading {url} within {timeout:.0f} s") from None


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
        run = _run(exe, flags, "--dump-dom", url, timeout)
        dom = run.stdout
        if "<html" not in dom:
            tail = run.stderr.strip().splitlines()[-3:]
            raise RuntimeError(f"Chromium printed no page (exit {run.returncode}): {' / '.join(tail)}")
        if screenshot is not None:
            _run(exe, flags, f"--screenshot={Path(screenshot).resolve()}", url, timeout)
            if not Path(screenshot).is_file():
                raise RuntimeError(f"Chromium wrote no screenshot to {screenshot}")
            if width < window_width:
                from PIL import Image

                with Image.open(screenshot) as shot:
                    cropped = shot.crop((0, 0, width, min(height, shot.height)))
                cropped.save(screenshot)
    framed = re.search(r'<textarea id="pagedom">(.*?)</textarea>', dom, re.S)
    if framed:  # the page's own DOM, not the frame's around it
        dom = html.unescape(framed.group(1))
    if _optional(dom, "done", "") != "1":
        raise RuntimeError("the page did not finish loading in the browser (its load handler never ran)")
    images_ok, images_total = (int(v) for v in _selfcheck_value(dom, "images").split("/"))
    duplicates = _optional(dom, "duplicates", "")
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
        titles=int(_optional(dom, "titles", "0")),
        duplicate_titles=tuple(duplicates.split(" | ")) if duplicates else (),
        console_messages=console_messages(run.stderr),
    )


def _optional(dom: str, key: str, default: str) -> str:
    try:
        return html.unescape(_selfcheck_value(dom, key))
    except RuntimeError:
        return default
