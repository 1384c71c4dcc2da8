"""The HTML renderer and the real-browser check (headless Chromium)."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from onepixel.report.browser import check_in_browser, find_chromium  # noqa: E402
from onepixel.report.html import Figure, KeyValues, Report, Section, Table, Text, render, write  # noqa: E402

needs_browser = pytest.mark.skipif(
    find_chromium() is None and not __import__("os").environ.get("CI"),
    reason="Chromium is not installed (CI installs it and never skips)",
)


def _png() -> bytes:
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [1, 0])
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _report() -> Report:
    return Report(
        "Study <1>",
        "subtitle",
        [
            Section(
                "Counts", [Text("a <script>alert(1)</script> b"), Table("t", ["n", "share"], [[3, 0.25]])]
            ),
            Section("Figures", [Figure("box plot", _png()), KeyValues("settings", {"popsize": 200})]),
        ],
    )


def test_render_escapes_text_and_embeds_figures() -> None:
    page = render(_report())
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;" in page
    assert page.count("data:image/png;base64,") == 1
    assert 'href="#s1"' in page and 'id="s2"' in page


def test_figure_must_be_png(tmp_path: Path) -> None:
    bad = tmp_path / "x.png"
    bad.write_bytes(b"GIF89a")
    with pytest.raises(ValueError, match="not a PNG"):
        render(Report("r", sections=[Section("s", [Figure("f", bad)])]))


@needs_browser
def test_report_loads_in_chromium(tmp_path: Path) -> None:
    out = write(_report(), tmp_path / "report.html")
    check = check_in_browser(out)
    assert check.ok, (check.errors, check.images_ok, check.images_total)
    assert (check.images_ok, check.images_total, check.tables) == (1, 1, 2)
    assert "share" in check.dom


@needs_browser
def test_browser_check_sees_broken_images_and_script_errors(tmp_path: Path) -> None:
    page = render(_report())
    page = page.replace("data:image/png;base64,", "data:image/png;base64,AAAA", 1)
    page = page.replace("</main>", "</main><script>undefinedFunction()</script>")
    out = tmp_path / "broken.html"
    out.write_text(page)
    check = check_in_browser(out)
    assert not check.ok
    assert check.images_ok == 0 and check.images_total == 1
    assert check.errors >= 2  # the broken image and the script error, whichever comes first
