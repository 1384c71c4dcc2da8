"""The HTML renderer, the convergence figure and the real-browser check (headless Chromium)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from onepixel.attack import figures as attack_figures  # noqa: E402
from onepixel.report.browser import PHONE, check_in_browser, console_messages  # noqa: E402
from onepixel.report.html import Figure, KeyValues, Report, Section, Table, Text, render, write  # noqa: E402
from test_store import make_record  # noqa: E402


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


def test_two_sections_of_one_title_get_distinct_titles() -> None:
    page = render(Report("r", sections=[Section("Same", [Text("a")]), Section("Same", [Text("b")])]))
    assert "<h2>Same</h2>" in page and "<h2>Same (2)</h2>" in page


def test_an_empty_table_is_a_sentence() -> None:
    page = render(
        Report("r", sections=[Section("s", [Table("counts", ["", "n"], [["a", None], ["b", ""]])])])
    )
    assert "<table" not in page and "Nothing to show" in page


def test_convergence_plot_has_whole_generations_and_a_legend_that_reads(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    shown: list[Any] = []
    monkeypatch.setattr(attack_figures, "_save", lambda fig, path: shown.append(fig) or path)
    records = [
        make_record("a", 0.2, [1, 2, 3, 4, 5], history=[0.9, 0.6, 0.2]),
        make_record("b", 0.4, [1, 2, 3, 4, 5], history=list(np.linspace(0.9, 0.4, 31))),
    ]
    summary = {"direction": "lower", "positive": "Atypical", "negative": "Normal"}
    for ids in (["a"], ["a", "b"]):
        attack_figures.convergence_plot(records, ids, summary, tmp_path / "c.png")
        ax = shown[-1].axes[0]
        lo, hi = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
        assert len(ticks) >= 2 and all(float(t).is_integer() for t in ticks), ticks
        legend = ax.get_legend()
        assert [t.get_text() for t in legend.get_texts()] == [f"{i} (success)" for i in ids]
        assert min(t.get_fontsize() for t in legend.get_texts()) >= 9
        plt.close(shown[-1])


def test_console_messages_are_read_from_chromiums_log() -> None:
    log = (
        '[1:1:1204/180500.3:INFO:CONSOLE:1] "early err", source: file:///t.html (1)\n'
        "[1:1:1204/180500.4:WARNING:other.cc(12)] not a console line\n"
        '[1:1:1204/180500.5:INFO:CONSOLE:3] "Uncaught ReferenceError: f is not defined", source: x (3)\n'
    )
    assert console_messages(log) == ("early err", "Uncaught ReferenceError: f is not defined")


@pytest.mark.parametrize("window", [(1280, 800), PHONE], ids=["desktop", "phone"])
def test_report_loads_in_chromium(tmp_path: Path, chromium: str, window: tuple[int, int]) -> None:
    out = write(_report(), tmp_path / "report.html")
    check = check_in_browser(out, window=window)
    assert check.width == window[0] and check.titles == 2
    assert "<h2>Counts</h2>" in check.dom and "pagedom" not in check.dom  # the page's own DOM
    assert check.ok, check.problems()
    assert (check.images_ok, check.images_total, check.tables) == (1, 1, 2)
    assert "share" in check.dom


@pytest.mark.parametrize("window", [(1280, 800), PHONE], ids=["desktop", "phone"])
def test_browser_check_sees_broken_images_and_script_errors(
    tmp_path: Path, chromium: str, window: tuple[int, int]
) -> None:
    page = render(_report())
    page = page.replace("data:image/png;base64,", "data:image/png;base64,AAAA", 1)
    page = page.replace("</main>", "</main><script>undefinedFunction()</script>")
    out = tmp_path / "broken.html"
    out.write_text(page)
    check = check_in_browser(out, window=window)
    assert not check.ok
    assert check.images_ok == 0 and check.images_total == 1
    assert check.errors >= 2  # the broken image and the script error, whichever comes first
    assert any("undefinedFunction" in m for m in check.console_messages)
    assert "only 0 of 1 images decoded" in check.problems()


def test_browser_check_sees_console_output_and_a_page_wider_than_the_phone(
    tmp_path: Path, chromium: str
) -> None:
    page = render(_report())
    page = page.replace(
        "</main>", '</main><script>console.log("stray")</script><div style="width:900px">w</div>'
    )
    out = tmp_path / "loud.html"
    out.write_text(page)
    check = check_in_browser(out, window=PHONE)
    assert check.errors == 0 and check.console_messages == ("stray",) and not check.ok
    assert check.width == PHONE[0] and check.overflow > 0


def test_attack_location_counts_have_whole_number_ticks(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from onepixel.analysis import figures as analysis_figures

    shown: list[Any] = []
    monkeypatch.setattr(analysis_figures, "_save", lambda fig, path: shown.append(fig) or path)
    heat = np.zeros((64, 64))
    heat[3, 4], heat[10, 10] = 2, 1
    analysis_figures.location_heatmap_figure(heat, "plain, lower", tmp_path / "h.png")
    bar = shown[0].axes[1]
    lo, hi = bar.get_ylim()
    ticks = [t for t in bar.get_yticks() if lo <= t <= hi]
    assert ticks and all(float(t).is_integer() for t in ticks), ticks
    plt.close(shown[0])


def test_cells_read_as_numbers() -> None:
    from onepixel.report.html import format_cell

    assert [format_cell(v) for v in (2097152, 826, True, None, 0.123456, float("nan"))] == [
        "2,097,152",
        "826",
        "yes",
        "\u2014",
        "0.1235",
        "\u2014",
    ]
