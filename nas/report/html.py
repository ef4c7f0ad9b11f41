"""``index.html``: one static page that shows every plot of the report with the summary
table (`index_html`). No script, no server, no file outside the plots folder: every link is
relative (each PNG links to its SVG), so the folder can be copied or opened from disk.
"""

from __future__ import annotations

import html
from typing import Sequence

from ..search.results import format_summary
from .data import ReportData
from .tables import FRONT_CSV, SUMMARY_MD, TRIALS_CSV, top_table

__all__ = ["INDEX_HTML", "index_html"]

INDEX_HTML = "index.html"

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1400px; padding: 0 1em; color: #222; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
table { border-collapse: collapse; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.5em; text-align: right; }
td.arch { text-align: left; font-family: monospace; font-size: 0.9em; }
figure { margin: 1.5em 0; }
figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 0.9em; color: #444; max-width: 70em; }
.notes li { color: #8a4b00; }
"""


def index_html(data: ReportData, plots: Sequence[tuple[str, str, str]], notes: Sequence[str]) -> str:
    """The page; ``plots``: (file stem, title, caption) of each plot drawn, in order."""
    s = data.summary
    e = html.escape
    title, head, body = top_table(data)
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
           f"<title>nas report: {e(s.study)}</title>", f"<style>{_STYLE}</style>", "</head>", "<body>",
           f"<h1>Search report: {e(s.study)}</h1>",
           f"<p>Tables: <a href=\"{TRIALS_CSV}\">{TRIALS_CSV}</a> (every trial), "
           f"<a href=\"{FRONT_CSV}\">{FRONT_CSV}</a>, <a href=\"{SUMMARY_MD}\">{SUMMARY_MD}</a>. "
           "Click a plot for its SVG.</p>",
           "<h2>Summary</h2>", f"<pre>{e(format_summary(s))}</pre>",
           f"<h2>{e(title)}</h2>"]
    if body:
        out.append("<table>")
        out.append("<tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr>")
        for row in body:
            cells = "".join(f"<td>{e(c)}</td>" for c in row[:-1])
            out.append(f'<tr>{cells}<td class="arch">{e(row[-1])}</td></tr>')
        out.append("</table>")
    else:
        out.append("<p>Nothing evaluated yet.</p>")
    if notes:
        out.append("<h2>Not drawn</h2>")
        out.append('<ul class="notes">' + "".join(f"<li>{e(n)}</li>" for n in notes) + "</ul>")
    out.append("<h2>Plots</h2>")
    for stem, what, caption in plots:
        out += [f'<figure id="{e(stem)}">', f"<h3>{e(what)}</h3>",
                f'<a href="{e(stem)}.svg"><img src="{e(stem)}.png" alt="{e(what)}"></a>',
                f"<figcaption>{e(caption)}</figcaption>", "</figure>"]
    out += ["</body>", "</html>", ""]
    return "\n".join(out)
