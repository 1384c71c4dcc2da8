"""Render a study as one self-contained HTML file: tables, text and embedded PNG figures.

The document model is deliberately small: a :class:`Report` holds :class:`Section` objects, and
a section holds blocks (:class:`Text`, :class:`Table`, :class:`Figure`, :class:`KeyValues`).
Figures are embedded as base64 data URIs, so the file needs nothing beside it. A tiny inline
script records load errors and undecodable images into ``#selfcheck`` so that a headless
browser can confirm the page rendered (see :mod:`onepixel.report.browser`).
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Text:
    """A paragraph of plain text (escaped)."""

    text: str


@dataclass
class Table:
    """A table with a caption, header row and body rows (cells formatted by :func:`format_cell`)."""

    caption: str
    headers: Sequence[str]
    rows: Sequence[Sequence[Any]]


@dataclass
class KeyValues:
    """A two-column table of names and values."""

    caption: str
    items: dict[str, Any]


@dataclass
class Figure:
    """A PNG figure, given as a file path or raw bytes, with a caption."""

    caption: str
    png: Path | bytes
    width: int | None = None


Block = Text | Table | KeyValues | Figure


@dataclass
class Section:
    """A titled part of the report; ``anchor`` is its id for the table of contents."""

    title: str
    blocks: list[Block] = field(default_factory=list)
    anchor: str = ""


@dataclass
class Report:
    """A whole study: title, a one-line subtitle, and sections in order."""

    title: str
    subtitle: str = ""
    sections: list[Section] = field(default_factory=list)


def format_cell(value: Any) -> str:
    """Return ``value`` as display text: floats to 4 significant digits, None as an em dash."""
    if value is None:
        return "\u2014"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "\u2014"
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
            return f"{value:.3e}"
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(format_cell(v) for v in value)
    return str(value)


def png_data_uri(png: Path | bytes) -> str:
    """Return a ``data:image/png;base64,...`` URI for PNG bytes or a PNG file."""
    data = png if isinstance(png, bytes) else Path(png).read_bytes()
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        raise ValueError(f"figure {png if not isinstance(png, bytes) else '<bytes>'} is not a PNG")
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _render_block(block: Block) -> str:
    esc = html.escape
    if isinstance(block, Text):
        return f"<p>{esc(block.text)}</p>"
    if isinstance(block, KeyValues):
        rows = "".join(
            f"<tr><th>{esc(str(k))}</th><td>{esc(format_cell(v))}</td></tr>" for k, v in block.items.items()
        )
        return f'<table class="kv"><caption>{esc(block.caption)}</caption><tbody>{rows}</tbody></table>'
    if isinstance(block, Table):
        head = "".join(f"<th>{esc(str(h))}</th>" for h in block.headers)
        body = "".join(
            "<tr>" + "".join(f"<td>{esc(format_cell(c))}</td>" for c in row) + "</tr>" for row in block.rows
        )
        return (
            f"<table><caption>{esc(block.caption)}</caption><thead><tr>{head}</tr></thead>"
            f"<tbody>{body}</tbody></table>"
        )
    if isinstance(block, Figure):
        style = f' style="max-width:{block.width}px"' if block.width else ""
        return (
            f'<figure><img src="{png_data_uri(block.png)}" alt="{esc(block.caption)}"{style}>'
            f"<figcaption>{esc(block.caption)}</figcaption></figure>"
        )
    raise TypeError(f"unknown report block {type(block).__name__}")


_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{background:#3b1f4a;color:#fff;padding:24px 40px}header h1{margin:0 0 6px 0;font-size:26px}
header p{margin:0;opacity:.85}nav{padding:12px 40px;background:#fff;border-bottom:1px solid #e3e5ea}
nav a{margin-right:16px;color:#6a2c8c;text-decoration:none;font-size:14px}
main{padding:8px 40px 40px 40px;max-width:1200px}section{background:#fff;border:1px solid #e3e5ea;
border-radius:8px;padding:16px 24px;margin:20px 0}h2{color:#3b1f4a;margin-top:4px}
table{border-collapse:collapse;margin:12px 0;font-size:14px}caption{text-align:left;font-weight:600;
padding:4px 0;color:#3b1f4a}th,td{border:1px solid #dde0e6;padding:4px 10px;text-align:right}
th{background:#f0edf3}table.kv th{text-align:left}td:first-child{text-align:left}
figure{display:inline-block;margin:10px 16px 10px 0;vertical-align:top}
figure img{max-width:560px;border:1px solid #e3e5ea}figcaption{font-size:13px;color:#555;max-width:560px}
#selfcheck{display:none}
"""

_SELFCHECK = """
<div id="selfcheck" data-errors="0" data-images="pending"></div>
<script>
(function(){var c=document.getElementById('selfcheck');var errors=0;
window.addEventListener('error',function(){errors++;c.dataset.errors=String(errors);},true);
window.addEventListener('load',function(){var imgs=document.images,ok=0;
for(var i=0;i<imgs.length;i++){if(imgs[i].complete&&imgs[i].naturalWidth>0){ok++;}}
c.dataset.images=ok+'/'+imgs.length;c.dataset.tables=String(document.querySelectorAll('table').length);
c.dataset.errors=String(errors);c.dataset.done='1';});})();
</script>
"""


def render(report: Report) -> str:
    """Return the complete HTML document for ``report``."""
    esc = html.escape
    for i, section in enumerate(report.sections):
        section.anchor = section.anchor or f"s{i + 1}"
    nav = "".join(f'<a href="#{s.anchor}">{esc(s.title)}</a>' for s in report.sections)
    body = "".join(
        f'<section id="{s.anchor}"><h2>{esc(s.title)}</h2>'
        + "".join(_render_block(b) for b in s.blocks)
        + "</section>"
        for s in report.sections
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{esc(report.title)}</title><style>{_STYLE}</style></head><body>"
        f"<header><h1>{esc(report.title)}</h1><p>{esc(report.subtitle)}</p></header>"
        f"<nav>{nav}</nav><main>{body}</main>{_SELFCHECK}</body></html>"
    )


def write(report: Report, out: str | Path) -> Path:
    """Write ``report`` as HTML to ``out`` (atomically) and return the path."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(render(report), encoding="utf-8")
    tmp.replace(out)
    return out
