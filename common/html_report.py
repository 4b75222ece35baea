"""Self-contained HTML pages for the site operator's and the planner's reports.

One file per report: plots embedded as PNG data URIs, the small table-sorting script inlined (no
library fetched at view time), a layout that fits a laptop screen and prints on A4 without the
navigation bar. The pages know nothing of where their numbers come from.
"""

from __future__ import annotations

import base64
import html
import io
import math
import numbers
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1f2933;background:#f7f8fa}
main{max-width:1180px;margin:0 auto;padding:1em 1.5em 3em}
header{background:#1f3a5f;color:#fff;padding:1em 1.5em}
header h1{margin:0;font-size:1.5em}header p{margin:.3em 0 0;opacity:.85}
nav{position:sticky;top:0;background:#fff;border-bottom:1px solid #d9dee5;padding:.5em 1.5em;z-index:2}
nav a{margin-right:1.2em;color:#1f3a5f;text-decoration:none;font-weight:600}
section{background:#fff;border:1px solid #e1e5eb;border-radius:6px;padding:.6em 1.2em 1em;margin:1em 0}
h2{font-size:1.2em;margin:.4em 0 .6em;color:#1f3a5f}h3{font-size:1em;margin:1em 0 .3em}
p.note{color:#52606d;font-size:.9em;margin:.3em 0}
table{border-collapse:collapse;width:100%;font-size:.86em;margin:.4em 0}
th,td{border-bottom:1px solid #e4e7eb;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#eef1f5}
th.sortable{cursor:pointer}.scroll{overflow-x:auto}th.sortable:after{content:" \\2195";color:#9aa5b1}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
td:first-child{white-space:nowrap}td.reason{font-size:.8em;color:#3e4c59;min-width:18em}
tr:nth-child(even) td{background:#fafbfc}
.badge{display:inline-block;padding:1px 7px;border-radius:9px;font-size:.85em;font-weight:600}
.REPLENISH_NOW,.OUT_OF_STOCK,.SUPPRESS,.FALLBACK,.bad{background:#fde2e1;color:#9b1c1c}
.WARNING,.LOW_STOCK,.warn{background:#fff3cd;color:#8a5a00}
.OBSERVE,.IN_STOCK,.NEUTRAL,.MODEL,.good{background:#e3f4e8;color:#1b5e20}
.PROMOTE{background:#e0ecff;color:#1d4ed8}
.kpis{display:flex;flex-wrap:wrap;gap:.8em;margin:.5em 0}
.kpi{border:1px solid #e1e5eb;border-radius:6px;padding:.5em .9em;min-width:9em;background:#fbfcfd}
.kpi b{display:block;font-size:1.4em}.kpi span{color:#52606d;font-size:.85em}
img{max-width:100%;height:auto}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(540px,1fr));gap:.8em}
@media print{nav{display:none}body{background:#fff}section{break-inside:avoid;border:none}
th{position:static}header{background:#fff;color:#000;border-bottom:2px solid #000}}
"""

SORT_SCRIPT = """
document.querySelectorAll('table.sortable').forEach(function(t){
  t.querySelectorAll('th').forEach(function(th,i){
    th.classList.add('sortable');
    th.addEventListener('click',function(){
      var body=t.tBodies[0],rows=Array.from(body.rows),up=th.dataset.dir!=='asc';
      t.querySelectorAll('th').forEach(function(h){delete h.dataset.dir});
      th.dataset.dir=up?'asc':'desc';
      function key(r){var c=r.cells[i],v=c.dataset.sort!==undefined?c.dataset.sort:c.textContent;
        var n=parseFloat(v);return isNaN(n)||!/^-?[0-9.]/.test(v)?v.toLowerCase():n}
      rows.sort(function(a,b){var x=key(a),y=key(b);
        if(typeof x!==typeof y){x=String(x);y=String(y)}
        return (x<y?-1:x>y?1:0)*(up?1:-1)});
      rows.forEach(function(r){body.appendChild(r)});
    });
  });
});
"""


def figure(fig, alt: str) -> str:
    """An <img> holding the figure as a PNG data URI; the figure is closed."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=96, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def badge(value: object) -> str:
    text = html.escape(str(value))
    return f'<span class="badge {text}">{text}</span>'


def _cell(value: object, badges: bool, digits: int) -> str:
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        if not math.isfinite(value):
            return '<td class="num" data-sort="">-</td>'
        shown = f"{value:,.0f}" if abs(value) >= 1000 or value % 1 == 0 else f"{value:,.{digits}f}"
        return f'<td class="num" data-sort="{value}">{shown}</td>'
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "<td></td>"
    return f"<td>{badge(value) if badges else html.escape(str(value))}</td>"


def table(
    frame: pd.DataFrame, badge_columns: Sequence[str] = (), sortable: bool = True, digits: int = 1
) -> str:
    """An HTML table of ``frame`` (cells escaped; numbers right-aligned with ``digits`` decimals,
    sorted as numbers; a ``reason`` column in small print)."""
    heads = "".join(
        f'<th class="{"num" if pd.api.types.is_numeric_dtype(frame[c]) else ""}">{html.escape(str(c))}</th>'
        for c in frame.columns
    )
    rows = []
    for record in frame.itertuples(index=False):
        cells = "".join(
            _cell(v, c in badge_columns, digits).replace("<td>", "<td class='reason'>", int(c == "reason"))
            for c, v in zip(frame.columns, record, strict=True)
        )
        rows.append(f"<tr>{cells}</tr>")
    cls = ' class="sortable"' if sortable else ""
    body = f"<table{cls}><thead><tr>{heads}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    return f"<div class='scroll'>{body}</div>"


def kpis(items: Sequence[tuple[str, str]]) -> str:
    """Headline figures: (value, what it is)."""
    boxes = "".join(
        f"<div class='kpi'><b>{html.escape(v)}</b><span>{html.escape(w)}</span></div>" for v, w in items
    )
    return f"<div class='kpis'>{boxes}</div>"


def note(text: str) -> str:
    return f"<p class='note'>{html.escape(text)}</p>"


def section(anchor: str, title: str, body: str) -> str:
    return f"<section id='{anchor}'><h2>{html.escape(title)}</h2>{body}</section>"


def page(title: str, subtitle: str, sections: Sequence[tuple[str, str, str]]) -> str:
    """The whole document from (anchor, title, body HTML) sections, in order."""
    nav = "".join(f"<a href='#{a}'>{html.escape(t)}</a>" for a, t, _ in sections)
    body = "".join(section(a, t, b) for a, t, b in sections)
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>"
        f"<header><h1>{html.escape(title)}</h1><p>{html.escape(subtitle)}</p></header>"
        f"<nav>{nav}</nav><main>{body}</main><script>{SORT_SCRIPT}</script></body></html>"
    )
