"""Render a study as one self-contained HTML file: tables, text and embedded PNG figures.

The document model is deliberately small: a :class:`Report` holds :class:`Section` objects, and
a section holds blocks (:class:`Text`, :class:`Table`, :class:`Figure`, :class:`KeyValues`,
:class:`Markdown`, a :class:`Grid` of figures, a folded :class:`Details`, a :class:`Findings`
table and an explorable :class:`ConfmapView`). Figures are embedded as base64 data URIs, so the
file needs nothing beside it; every text cell has absolute machine paths stripped. A table
with nothing in it becomes a sentence. A tiny inline
script, the first thing in ``<head>``, counts script errors and ``console.error`` calls from the
start; on load, another records them, the images decoded, the tables and the section titles
(and repeats among them) into ``#selfcheck`` so that a headless browser can confirm the page
rendered (see :mod:`onepixel.report.browser`).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from onepixel.report.markdown import render_markdown, strip_paths


@dataclass
class Text:
    """A paragraph of plain text (escaped)."""

    text: str


@dataclass
class Table:
    """A table with a caption, header row and body rows (cells formatted by :func:`format_cell`).

    ``empty`` is the sentence shown instead when no row has a value past its first column.
    """

    caption: str
    headers: Sequence[str]
    rows: Sequence[Sequence[Any]]
    empty: str = "Nothing to show: no row has a value."

    def is_empty(self) -> bool:
        """Return True when no row has a value (None, NaN and "" are no value) past its first cell."""
        return not any(_has_value(c) for row in self.rows for c in list(row)[1:])


def _has_value(value: Any) -> bool:
    if value is None or value == "":
        return False
    return not (isinstance(value, float) and math.isnan(value))


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
    wide: bool = False  # spans two grid columns where the page is wide enough (convergence plots)


@dataclass
class Markdown:
    """Markdown text (a model card), rendered safely with machine paths stripped."""

    text: str


@dataclass
class Grid:
    """Figures laid out in a responsive grid (as many columns as the width allows)."""

    figures: list[Figure]


@dataclass
class Findings:
    """The headline table: one row per run, with a lead sentence above it."""

    lead: str
    headers: Sequence[str]
    rows: Sequence[Sequence[Any]]


@dataclass
class Details:
    """Blocks folded under a one-line summary (``<details>``), open when ``open``."""

    summary: str
    blocks: list[Any]
    open: bool = False


@dataclass
class ConfmapView:
    """An explorable confidence map: hover a pixel of the image to see its min/max/mean score.

    ``image`` (H, W, 3) uint8; ``min``/``max``/``mean`` (H, W) scores; ``done`` (H,) rows computed;
    ``argmin``/``argmax`` (H, W, 3) the colour reaching the min / max at each pixel, when known.
    """

    title: str
    image: np.ndarray
    min: np.ndarray
    max: np.ndarray
    mean: np.ndarray
    done: np.ndarray | None = None
    argmin: np.ndarray | None = None
    argmax: np.ndarray | None = None


Block = Text | Table | KeyValues | Figure | Markdown | Grid | Findings | Details | ConfmapView


@dataclass
class Section:
    """A titled part of the report; ``anchor`` is its id for the table of contents, ``nav`` its
    short label there."""

    title: str
    blocks: list[Block] = field(default_factory=list)
    anchor: str = ""
    nav: str = ""  # short label in the table of contents (default: the title)


@dataclass
class Report:
    """A whole study: title, a one-line subtitle, and sections in order."""

    title: str
    subtitle: str = ""
    sections: list[Section] = field(default_factory=list)


def format_cell(value: Any) -> str:
    """Return ``value`` as display text: floats to 4 significant digits, integers from 10,000 up
    with thousands separators, None as an em dash."""
    if value is None:
        return "\u2014"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int) and abs(value) >= 10_000:
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return "\u2014"
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
            return f"{value:.3e}"
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(format_cell(v) for v in value)
    return strip_paths(str(value))


def png_data_uri(png: Path | bytes) -> str:
    """Return a ``data:image/png;base64,...`` URI for PNG bytes or a PNG file."""
    data = png if isinstance(png, bytes) else Path(png).read_bytes()
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        raise ValueError(f"figure {png if not isinstance(png, bytes) else '<bytes>'} is not a PNG")
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _esc(text: Any) -> str:
    return html.escape(strip_paths(str(text)))


def _png_bytes(array: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _heat(values: np.ndarray, lo: float = 0.0, hi: float = 1.0) -> np.ndarray:
    """Return (H, W) scores as an RGB uint8 heat map, ``lo`` darkest and ``hi`` brightest
    (viridis; NaN grey)."""
    from matplotlib import colormaps

    scaled = (values - lo) / (hi - lo) if hi > lo else np.zeros_like(values)
    rgba = colormaps["viridis"](np.nan_to_num(np.clip(scaled, 0.0, 1.0), nan=0.0))
    rgb = (rgba[..., :3] * 255).round().astype(np.uint8)
    rgb[np.isnan(values)] = 128
    return rgb


def _confmap(block: ConfmapView, index: int) -> str:
    h, w = block.min.shape
    done = np.ones(h, dtype=bool) if block.done is None else np.asarray(block.done, dtype=bool)

    def grid(a: np.ndarray) -> list[list[float | None]]:
        a = np.where(done[:, None], np.asarray(a, dtype=np.float64), np.nan)
        return [[None if math.isnan(v) else round(float(v), 5) for v in row] for row in a]

    maps: dict[str, Any] = {"w": w, "h": h, "min": grid(block.min), "max": grid(block.max)}
    maps["mean"] = grid(block.mean)
    for key in ("argmin", "argmax"):
        colours = getattr(block, key)
        if colours is not None:
            maps[key] = np.asarray(colours, dtype=np.int64).tolist()
    data = json.dumps(maps)
    data = data.replace("</", "<\\/")
    low = np.where(done[:, None], np.asarray(block.min, dtype=np.float64), np.nan)
    lo, hi = (float(np.nanmin(low)), float(np.nanmax(low))) if done.any() else (0.0, 1.0)
    rows = f"; grey: rows not computed ({int(done.sum())} of {h} done)" if not done.all() else ""
    vid = f"cm{index}"
    return (
        f'<div class="confmap" data-map="{vid}"><h3>{_esc(block.title)}</h3>'
        '<p class="hint">Hover (or tap) a pixel: the lowest, highest and mean score over every colour '
        "tried at that pixel, and the colour reaching the lowest and the highest.</p>"
        '<div class="cm-pair">'
        f'<figure><img class="px" src="{png_data_uri(_png_bytes(block.image))}" alt="clean image"'
        f' width="{w}" height="{h}"><figcaption>clean image</figcaption></figure>'
        f'<figure><img class="px" src="{png_data_uri(_png_bytes(_heat(low, lo, hi)))}"'
        f' alt="lowest score per pixel" width="{w}" height="{h}"><figcaption>lowest score per pixel: '
        f"dark {lo:.4f}, bright {hi:.4f}{rows}</figcaption></figure>"
        "</div>"
        '<output class="cm-readout">hover a pixel</output>'
        f'<script type="application/json" id="{vid}">{data}</script></div>'
    )


def _table_html(caption: str, headers: Sequence[str], rows: Sequence[Sequence[Any]], cls: str = "") -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in headers)
    labels = [f' data-label="{_esc(h)}"' for h in headers]

    def cell(i: int, value: Any) -> str:
        return f"<td{labels[i] if i < len(labels) else ''}>{_esc(format_cell(value))}</td>"

    body = "".join("<tr>" + "".join(cell(i, c) for i, c in enumerate(row)) + "</tr>" for row in rows)
    klass = f' class="{cls}"' if cls else ""
    cap = f"<caption>{_esc(caption)}</caption>" if caption else ""
    table = f"<table{klass}>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    return f'<div class="scroll">{table}</div>'


def _render_block(block: Block, index: int = 0) -> str:
    if isinstance(block, Text):
        return f"<p>{_esc(block.text)}</p>"
    if isinstance(block, Markdown):
        return f'<div class="md">{render_markdown(block.text)}</div>'
    if isinstance(block, KeyValues):
        if not any(_has_value(v) for v in block.items.values()):
            return f'<p class="empty"><strong>{_esc(block.caption)}</strong>: nothing recorded.</p>'
        rows = "".join(
            f"<tr><th>{_esc(k)}</th><td>{_esc(format_cell(v))}</td></tr>" for k, v in block.items.items()
        )
        return (
            f'<div class="scroll"><table class="kv"><caption>{_esc(block.caption)}</caption>'
            f"<tbody>{rows}</tbody></table></div>"
        )
    if isinstance(block, Table):
        if block.is_empty():
            return f'<p class="empty"><strong>{_esc(block.caption)}</strong>: {_esc(block.empty)}</p>'
        return _table_html(block.caption, block.headers, block.rows)
    if isinstance(block, Findings):
        return f'<p class="lead">{_esc(block.lead)}</p>' + _table_html(
            "", block.headers, block.rows, "findings"
        )
    if isinstance(block, Figure):
        style = f' style="max-width:{block.width}px"' if block.width else ""
        klass = ' class="wide"' if block.wide else ""
        return (
            f'<figure{klass}><img src="{png_data_uri(block.png)}" alt="{_esc(block.caption)}"{style}>'
            f"<figcaption>{_esc(block.caption)}</figcaption></figure>"
        )
    if isinstance(block, Grid):
        return '<div class="grid">' + "".join(_render_block(f) for f in block.figures) + "</div>"
    if isinstance(block, Details):
        inner = "".join(_render_block(b, index * 100 + i) for i, b in enumerate(block.blocks))
        flag = " open" if block.open else ""
        return f"<details{flag}><summary>{_esc(block.summary)}</summary>{inner}</details>"
    if isinstance(block, ConfmapView):
        return _confmap(block, index)
    raise TypeError(f"unknown report block {type(block).__name__}")


_STYLE = """
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d2330;background:#f6f7f9;
line-height:1.45}
header{background:#3b1f4a;color:#fff;padding:20px clamp(12px,4vw,40px)}
header h1{margin:0 0 6px 0;font-size:26px}header p{margin:0;opacity:.85}
nav{padding:10px clamp(12px,4vw,40px);background:#fff;border-bottom:1px solid #e3e5ea;
display:flex;flex-wrap:wrap;gap:4px 16px}nav a{color:#6a2c8c;text-decoration:none;font-size:14px}
main{padding:8px clamp(8px,4vw,40px) 40px;max-width:1280px}section{background:#fff;border:1px solid #e3e5ea;
border-radius:8px;padding:16px clamp(10px,3vw,24px);margin:20px 0}h2{color:#3b1f4a;margin-top:4px}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;margin:12px 0;font-size:14px}caption{text-align:left;font-weight:600;
padding:4px 0;color:#3b1f4a}th,td{border:1px solid #dde0e6;padding:4px 10px;text-align:right}
th{background:#f0edf3}table.kv th{text-align:left}td:first-child{text-align:left}
table.findings{font-size:15px}table.findings td,table.findings th{text-align:left}
p,figcaption,caption{overflow-wrap:anywhere}
p.lead{font-size:17px;margin:6px 0 4px}p.empty{color:#555;font-style:italic}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(100%,340px),1fr));gap:16px;margin:12px 0}
figure{margin:0}figure img{width:100%;height:auto;border:1px solid #e3e5ea;background:#fff}
figcaption{font-size:13px;color:#555}
details{border-top:1px solid #e3e5ea;margin-top:12px;padding-top:8px}
summary{cursor:pointer;font-weight:600;color:#6a2c8c}
.md h3,.md h4,.md h5{color:#3b1f4a;margin:14px 0 6px}
.md code{background:#f0edf3;padding:0 3px;border-radius:3px;overflow-wrap:anywhere}
.md pre{overflow-x:auto;background:#f0edf3;padding:8px}.md a,.md li,.md p{overflow-wrap:anywhere}
.cm-pair{display:grid;grid-template-columns:repeat(2,minmax(0,280px));gap:12px}
img.px{image-rendering:pixelated;cursor:crosshair;touch-action:none}
.cm-readout{display:block;font-family:ui-monospace,monospace;font-size:14px;margin:8px 0;min-height:1.5em}
#selfcheck{display:none}
@media (min-width:820px){.grid figure.wide{grid-column:span 2}}
@media (max-width:600px){
nav{flex-wrap:nowrap;overflow-x:auto;white-space:nowrap;padding-bottom:12px}
header h1{font-size:22px}h2{font-size:20px}p.lead{font-size:16px}
table.findings,table.findings tbody,table.findings tr,table.findings td{display:block;width:100%}
table.findings thead{display:none}table.findings tr{border:1px solid #dde0e6;border-radius:6px;
margin:0 0 10px;padding:4px 0}table.findings td{border:0;padding:2px 10px}
table.findings td:first-child{font-weight:600}
table.findings td:not(:first-child)::before{content:attr(data-label) ": ";color:#555}}
"""

# In <head>, before anything else runs: count script errors and console.error calls from the start.
_SELFCHECK_HEAD = """<script>
(function(){var s=window.__selfcheck={errors:0,console:0};
window.addEventListener('error',function(){s.errors++;},true);
var origError=console.error;console.error=function(){s.console++;return origError.apply(console,arguments);};
})();
</script>"""

# At the end of <body>: on load, write what the page saw into #selfcheck for a headless browser.
_SELFCHECK = """
<div id="selfcheck" data-errors="0" data-images="pending"></div>
<script>
window.addEventListener('load',function(){var c=document.getElementById('selfcheck'),s=window.__selfcheck;
var imgs=document.images,ok=0;
for(var i=0;i<imgs.length;i++){if(imgs[i].complete&&imgs[i].naturalWidth>0){ok++;}}
c.dataset.images=ok+'/'+imgs.length;c.dataset.tables=String(document.querySelectorAll('table').length);
var seen={},dup=[],heads=document.querySelectorAll('h2');
for(var j=0;j<heads.length;j++){var t=heads[j].textContent;if(seen[t]){dup.push(t);}seen[t]=1;}
c.dataset.titles=String(heads.length);c.dataset.duplicates=dup.join(' | ');
var de=document.documentElement;c.dataset.width=String(window.innerWidth);
c.dataset.overflow=String(Math.max(0,de.scrollWidth-de.clientWidth));
var map=document.querySelector('.confmap img.px');
if(map){var r=map.getBoundingClientRect();map.dispatchEvent(new MouseEvent('mousemove',
{clientX:r.left+r.width/2,clientY:r.top+r.height/2,bubbles:true}));
c.dataset.confmap=map.closest('.confmap').querySelector('.cm-readout').textContent;}
c.dataset.errors=String(s.errors);c.dataset.console=String(s.console);c.dataset.done='1';});
</script>
"""

# Confidence maps: the readout shows min / max / mean at the hovered (or tapped) pixel.
_CONFMAP_JS = """
<script>
(function(){function fmt(v){return v===null?'not computed':v.toFixed(4);}
function rgb(c,v,x,y){return (c&&v!==null)?' (RGB '+c[y][x].join(',')+')':'';}
document.querySelectorAll('.confmap').forEach(function(box){
var data=JSON.parse(document.getElementById(box.dataset.map).textContent);
var out=box.querySelector('.cm-readout');
function show(ev,img){var r=img.getBoundingClientRect();var p=ev.touches?ev.touches[0]:ev;
var x=Math.min(data.w-1,Math.max(0,Math.floor((p.clientX-r.left)/r.width*data.w)));
var y=Math.min(data.h-1,Math.max(0,Math.floor((p.clientY-r.top)/r.height*data.h)));
out.textContent='x '+x+', y '+y+': min '+fmt(data.min[y][x])+rgb(data.argmin,data.min[y][x],x,y)+
', max '+fmt(data.max[y][x])+rgb(data.argmax,data.max[y][x],x,y)+', mean '+fmt(data.mean[y][x]);
out.dataset.x=x;out.dataset.y=y;}
box.querySelectorAll('img.px').forEach(function(img){
img.addEventListener('mousemove',function(ev){show(ev,img);});
img.addEventListener('touchstart',function(ev){show(ev,img);},{passive:true});});});})();
</script>
"""


def distinct_titles(titles: Sequence[str]) -> list[str]:
    """Return ``titles`` with every repeat numbered ("T", "T (2)", ...), so that all are distinct."""
    seen: dict[str, int] = {}
    out = []
    for title in titles:
        seen[title] = seen.get(title, 0) + 1
        out.append(title if seen[title] == 1 else f"{title} ({seen[title]})")
    return out


def render(report: Report) -> str:
    """Return the complete HTML document for ``report``."""
    esc = _esc
    for i, section in enumerate(report.sections):
        section.anchor = section.anchor or f"s{i + 1}"
    # every title distinct, even when two sections are given the same one
    titles = distinct_titles([s.title for s in report.sections])
    navs = distinct_titles([s.nav or s.title for s in report.sections])
    nav = "".join(f'<a href="#{s.anchor}">{esc(t)}</a>' for s, t in zip(report.sections, navs, strict=True))
    body = "".join(
        f'<section id="{s.anchor}"><h2>{esc(t)}</h2>'
        + "".join(_render_block(b, i * 1000 + j) for j, b in enumerate(s.blocks))
        + "</section>"
        for i, (s, t) in enumerate(zip(report.sections, titles, strict=True))
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"{_SELFCHECK_HEAD}<title>{esc(report.title)}</title><style>{_STYLE}</style></head><body>"
        f"<header><h1>{esc(report.title)}</h1><p>{esc(report.subtitle)}</p></header>"
        f"<nav>{nav}</nav><main>{body}</main>{_CONFMAP_JS}{_SELFCHECK}</body></html>"
    )


def write(report: Report, out: str | Path) -> Path:
    """Write ``report`` as HTML to ``out`` (atomically) and return the path."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(render(report), encoding="utf-8")
    tmp.replace(out)
    return out
