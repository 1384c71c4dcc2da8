"""A small, safe Markdown renderer for model cards, and the scrubbing of machine paths.

Supports what model cards use: ``#`` headings, paragraphs, ``-``/``*``/``1.`` lists, pipe
tables, fenced code, inline code, ``**bold**``, ``*italic*``, ``[links](https://...)`` and bare
``https://`` URLs. Everything else is escaped text: no raw HTML passes through.
"""

from __future__ import annotations

import html
import re
from pathlib import PurePosixPath

# An absolute POSIX path of two or more parts, not part of a URL or a relative path.
_ABS_PATH = re.compile(r"(?<![\w:/.~-])/(?:[^\s/\"'<>()`|\[\]]+/)+[^\s/\"'<>()`|\[\],;]*")
_URL = re.compile(r"https?://[^\s<>()\"'`]+[^\s<>()\"'`.,;:]")
_LINK = re.compile(r"\[([^\]]+)\]\((https?://[^)\s]+)\)")


def strip_paths(text: str) -> str:
    """Return ``text`` with every absolute machine path replaced by its last part (its file name)."""

    def short(match: re.Match[str]) -> str:
        path = match.group(0)
        return PurePosixPath(path.rstrip("/")).name or path

    out, last = [], 0
    for url in _URL.finditer(text):  # leave URLs whole
        out.append(_ABS_PATH.sub(short, text[last : url.start()]))
        out.append(url.group(0))
        last = url.end()
    out.append(_ABS_PATH.sub(short, text[last:]))
    return "".join(out)


def _inline(text: str) -> str:
    """Return one line of Markdown as escaped HTML with code, bold, italic and links."""
    parts = re.split(r"(`[^`]+`)", text)
    out = []
    links: list[str] = []

    def keep(match: re.Match[str]) -> str:
        label, url = match.group(1), match.group(2)
        links.append(f'<a href="{html.escape(url)}">{html.escape(label)}</a>')
        return f"\x00{len(links) - 1}\x00"

    def bare(match: re.Match[str]) -> str:
        links.append(f'<a href="{html.escape(match.group(0))}">{html.escape(match.group(0))}</a>')
        return f"\x00{len(links) - 1}\x00"

    def restore(match: re.Match[str]) -> str:
        return links[int(match.group(1))]

    for part in parts:
        if part.startswith("`") and part.endswith("`") and len(part) > 1:
            out.append(f"<code>{html.escape(part[1:-1])}</code>")
            continue
        piece = _LINK.sub(keep, part)
        piece = html.escape(_URL.sub(bare, piece), quote=False)
        piece = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", piece)
        piece = re.sub(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])", r"<em>\1</em>", piece)
        piece = re.sub(r"\x00(\d+)\x00", restore, piece)
        out.append(piece)
    return "".join(out)


def _table(lines: list[str]) -> str:
    def cells(line: str) -> list[str]:
        return [c.strip() for c in line.strip().strip("|").split("|")]

    head = "".join(f"<th>{_inline(c)}</th>" for c in cells(lines[0]))
    body = "".join(
        "<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in cells(line)) + "</tr>" for line in lines[2:]
    )
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def render_markdown(text: str, *, heading_offset: int = 2) -> str:
    """Return the HTML of Markdown ``text`` (paths stripped); ``#`` becomes ``h(1 + offset)``."""
    lines = strip_paths(text).splitlines()
    out: list[str] = []
    para: list[str] = []
    i = 0

    def flush() -> None:
        if para:
            out.append(f"<p>{_inline(' '.join(para))}</p>")
            para.clear()

    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if not stripped:
            flush()
            i += 1
        elif stripped.startswith("```"):
            flush()
            j = i + 1
            while j < len(lines) and not lines[j].strip().startswith("```"):
                j += 1
            out.append(f"<pre><code>{html.escape(chr(10).join(lines[i + 1 : j]))}</code></pre>")
            i = j + 1
        elif m := re.match(r"^(#{1,6})\s+(.*)$", stripped):
            flush()
            level = min(len(m.group(1)) + heading_offset, 6)
            out.append(f"<h{level}>{_inline(m.group(2))}</h{level}>")
            i += 1
        elif stripped.startswith("|") and i + 1 < len(lines) and re.match(r"^\|?[\s:|-]+\|?$", lines[i + 1]):
            flush()
            j = i
            while j < len(lines) and lines[j].strip().startswith("|"):
                j += 1
            out.append(_table([ln for ln in lines[i:j]]))
            i = j
        elif re.match(r"^([-*]|\d+\.)\s+", stripped):
            flush()
            ordered = bool(re.match(r"^\d+\.", stripped))
            items: list[str] = []
            while i < len(lines) and lines[i].strip():
                item = lines[i].strip()
                if re.match(r"^([-*]|\d+\.)\s+", item):
                    items.append(re.sub(r"^([-*]|\d+\.)\s+", "", item))
                else:  # continuation of the previous item
                    items[-1] += " " + item
                i += 1
            tag = "ol" if ordered else "ul"
            out.append(f"<{tag}>" + "".join(f"<li>{_inline(it)}</li>" for it in items) + f"</{tag}>")
        else:
            para.append(stripped)
            i += 1
    flush()
    return "".join(out)
