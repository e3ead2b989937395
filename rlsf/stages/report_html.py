"""The HTML pieces of the run report (:mod:`rlsf.stages.report`): one page that opens offline.

Everything the page shows is in the file: the style sheet inline, every picture a base64 PNG
``data:`` URI, no script and no external address. A Content-Security-Policy in the page itself
forbids loading anything else, so a browser that opens it makes no request at all. Every text
that comes from a run (completions, messages, metric names) goes through :func:`esc`.
"""

from __future__ import annotations

import base64
import html
import math
import re
from collections.abc import Sequence

#: The page's only policy: nothing from anywhere, but data: images and the inline style sheet.
POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1f2328;
       margin: 0; background: #fff; }
header, main, footer, nav { max-width: 1100px; margin: 0 auto; padding: 0 20px; }
header { padding-top: 18px; }
h1 { font-size: 1.6em; margin: 0.2em 0; }
h2 { font-size: 1.25em; border-bottom: 1px solid #d0d7de; padding-bottom: 4px; margin-top: 1.8em; }
h3 { font-size: 1.05em; margin: 1.2em 0 0.4em; }
.meta, .note, footer { color: #59636e; font-size: 0.9em; }
nav { font-size: 0.9em; }
nav a { margin-right: 12px; }
.scroll { overflow-x: auto; }
summary, li { overflow-wrap: anywhere; }
td { overflow-wrap: break-word; }
td:first-child { white-space: nowrap; }
table { border-collapse: collapse; margin: 8px 0 12px; font-size: 0.9em; }
th, td { border: 1px solid #d0d7de; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f6f8fa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.up { color: #1a7f37; font-weight: 600; }
td.down { color: #cf222e; font-weight: 600; }
img { max-width: 100%; height: auto; border: 1px solid #eaeef2; }
figure { margin: 10px 0 18px; }
figcaption { color: #59636e; font-size: 0.85em; }
.example { border: 1px solid #d0d7de; border-radius: 6px; padding: 8px 12px; margin: 12px 0; }
.prompt { white-space: pre-wrap; font-size: 0.85em; color: #59636e; max-height: 12em; overflow: auto; }
.completion { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 0.85em;
              white-space: pre-wrap; word-break: break-word; background: #fbfbfb; border: 1px solid #eaeef2;
              padding: 6px 8px; margin: 4px 0; }
.tok { border-radius: 2px; }
.tok + .tok { box-shadow: inset 1px 0 0 rgba(255,255,255,0.7); }
.eot::after { content: "\\23CE"; font-size: 0.8em; padding: 0 3px; margin-left: 2px; border-radius: 2px;
              border: 1px solid #d0d7de; }
.verdict { font-weight: 600; }
.legend span { padding: 0 6px; margin-right: 4px; border-radius: 2px; }
ul.spans { font-size: 0.85em; margin: 2px 0 6px; padding-left: 20px; }
details > summary { cursor: pointer; color: #59636e; font-size: 0.9em; }
"""

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{policy}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{css}</style>
</head>
<body>
<header>
<h1>{title}</h1>
<p class="meta">{subtitle}</p>
</header>
<nav>{toc}</nav>
<main>
{body}
</main>
<footer>
<p>{footer}</p>
</footer>
</body>
</html>
"""

#: A reward smaller than this is shown as none (a score of 1e-22 is 0 to the eye and to the update).
TINY = 1e-6
#: Token backgrounds: red for a negative reward, green for a positive one (RGB), the strength by size.
NEGATIVE, POSITIVE = "207,34,46", "26,127,55"


def esc(value: object) -> str:
    """Text (or anything shown as text) made safe for HTML content and quoted attributes."""
    return html.escape(str(value), quote=True)


def page(title: str, subtitle: str, sections: Sequence[tuple[str, str, str]], footer: str) -> str:
    """The whole document from ``(anchor, heading, body HTML)`` sections (``title``, ``subtitle``
    and ``footer`` are text: escaped here)."""
    toc = " ".join(f'<a href="#{esc(a)}">{esc(h)}</a>' for a, h, _ in sections)
    body = "\n".join(f'<section id="{esc(a)}">\n<h2>{esc(h)}</h2>\n{b}\n</section>' for a, h, b in sections)
    return PAGE.format(policy=POLICY, title=esc(title), subtitle=esc(subtitle), css=CSS, toc=toc, body=body,
                       footer=esc(footer))


def number(value: object, signed: bool = False) -> str:
    """A figure as the tables print it: 3 decimals (``+`` for changes), ``-`` when missing."""
    if isinstance(value, bool):
        return esc(value)
    if isinstance(value, int) and not signed:
        return str(value)
    if isinstance(value, (int, float)) and math.isfinite(value):
        return f"{value:+.3f}" if signed else f"{value:.3f}"
    return "-" if value is None or isinstance(value, float) else esc(value)


def table(head: Sequence[str] | None, rows: Sequence[Sequence[str]], numeric_from: int = 1) -> str:
    """A table: ``head`` is text (None: no header row), ``rows`` hold ready HTML cells; the columns
    from ``numeric_from`` are right-aligned figures. A cell given as ``(html, class)`` gets that
    class too."""
    out = ['<div class="scroll"><table>']
    if head is not None:
        out.append("<thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr></thead>")
    out.append("<tbody>")
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            content, extra = cell if isinstance(cell, tuple) else (cell, "")
            classes = " ".join(c for c in ("num" if i >= numeric_from else "", extra) if c)
            cells.append(f'<td class="{classes}">{content}</td>' if classes else f"<td>{content}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table></div>")
    return "\n".join(out)


def pairs(rows: Sequence[tuple[str, str]]) -> str:
    """A two-column table of ``(label, HTML value)`` rows (the run summary)."""
    return table(None, [(f"<b>{esc(k)}</b>", v) for k, v in rows], numeric_from=99)


def png(data: bytes, alt: str, caption: str = "") -> str:
    """An embedded PNG (a ``data:`` URI) in a figure with its caption."""
    uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="{uri}" alt="{esc(alt)}">{cap}</figure>'


def paragraph(text: str, cls: str = "") -> str:
    return f'<p class="{cls}">{esc(text)}</p>' if cls else f"<p>{esc(text)}</p>"


def markdown_table(markdown: str) -> str:
    """A markdown text of pipe tables and plain lines (``rlsf experiment``'s table.md) as HTML:
    each table a table, every other non-empty line a paragraph."""
    out: list[str] = []
    block: list[list[str]] = []

    def flush() -> None:
        if block:
            head, *rows = block
            rows = [r for r in rows if not all(set(c) <= set("-: ") for c in r)]  # the |---| rule
            out.append(table(head, [[esc(c) for c in r] for r in rows], numeric_from=1))
            block.clear()

    for line in markdown.splitlines():
        s = line.strip()
        if s.startswith("|") and s.endswith("|"):
            block.append([c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", s[1:-1])])
            continue
        flush()
        if s:
            out.append(paragraph(s))
    flush()
    return "\n".join(out)


def token_style(reward: float, scale: float) -> str:
    """The background of a token with this reward: its colour's strength grows with ``|reward|``
    against ``scale`` (the completion's largest text-token reward), full at and beyond it."""
    if abs(reward) < TINY or scale <= 0:
        return ""
    strength = min(1.0, abs(reward) / scale)
    return f"background:rgba({NEGATIVE if reward < 0 else POSITIVE},{0.12 + 0.55 * strength:.2f})"


def coloured_completion(text: str, tokens: Sequence[tuple[int, int, float, str]]) -> str:
    """The completion with each token (``(start, end, reward, message)``, end-of-turn tokens with
    ``start == end``) in a span coloured by its reward, its reward and the certificate's message in
    the tooltip. The spans' text is the completion, character for character; an end-of-turn token
    is drawn by the style sheet alone (no text of its own)."""
    scale = max((abs(r) for s, e, r, _ in tokens if e > s), default=0.0)
    parts = []
    for s, e, r, message in tokens:
        tip = ("" if e > s else "end of turn: ") + f"{r:+.5g}" + (f" \u2014 {message}" if message else "")
        style = token_style(r, scale if e > s else max(scale, abs(r)))
        attrs = f' title="{esc(tip)}"' + (f' style="{style}"' if style else "")
        kind, shown = ("tok", esc(text[s:e])) if e > s else ("eot", "")
        parts.append(f'<span class="{kind}"{attrs}>{shown}</span>')
    return f'<div class="completion">{"".join(parts)}</div>'


LEGEND = ('<p class="legend note">Token colours: '
          f'<span style="background:rgba({NEGATIVE},0.6)">negative reward</span>'
          f'<span style="background:rgba({POSITIVE},0.6)">positive reward</span>'
          '<span>no reward</span> (strength: the size of the reward against the completion\'s largest; '
          'the \u23CE box is the end-of-turn token, where the certificate\'s score goes). '
          'Hover a token for its reward and the checker\'s message.</p>')
