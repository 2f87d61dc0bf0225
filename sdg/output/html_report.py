"""`quality_report.html`: the run's `quality_report.json` as one self-contained page, readable offline.

One file, nothing fetched: no script, no external stylesheet, font or image (a Content-Security-Policy
of `default-src 'none'` makes the browser refuse any request that would slip in); charts are inline SVG
drawn by the small functions below. Every piece of text is HTML-escaped (sample rows are model output).

The page is made to be checked by a machine as well as read:

- each section is a `<section data-section="NAME">` (NAME in `SECTIONS`) holding at least one `<svg>`;
- each per-leaf block carries `data-leaf="LEAF ID"`;
- each number shown from the JSON sits alone in an element with `data-key="PATH"`, PATH being the dotted
  path into the (normalised) report, e.g. `run.kept`, `leaves.<id>.funnel.3.1`; its text is the JSON
  value as JSON writes it (`lookup(report, PATH)` finds the value, also when a leaf id holds dots).
  Numbers computed here (ratios, tokens per kept sample of a leaf) have no data-key.

Input: format 2 (`{"format": 2, "run": {...}, "leaves": {id: {...}}}`, see sdg.output.reports and
sdg.output.quality_stats); a format-1 report (a bare {leaf id: counts} mapping) renders as
`{"run": {}, "leaves": <it>}`.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from sdg.errors import OutputError
from sdg.output.atomic import write_text

QUALITY_REPORT_JSON = "quality_report.json"
QUALITY_REPORT_HTML = "quality_report.html"
SECTIONS = ("summary", "funnel", "judge_scores", "lengths", "distinct", "tokens", "throughput", "samples")
_TITLES = {"summary": "Run summary", "funnel": "Per-leaf funnel (worst leaves first)",
           "judge_scores": "Judge scores", "lengths": "Question and answer lengths (words)",
           "distinct": "Diversity: distinct-n of kept responses", "tokens": "Token spend",
           "throughput": "Throughput over time", "samples": "Sample rows: kept and dropped"}
FUNNEL_STAGES = ("generated", "judged", "deduplicated", "kept")

_BLUE, _ORANGE, _GREEN, _RED, _GREY, _PURPLE = "#4477aa", "#ee7733", "#228833", "#cc3311", "#888888", "#aa3377"
_FUNNEL_COLORS = (_GREY, _BLUE, _PURPLE, _GREEN)
_CHART_W = 560

_CSS = """
:root { color-scheme: light; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; margin: 0 auto;
       max-width: 1200px; padding: 1rem 1.5rem 4rem; color: #222; background: #fff; line-height: 1.4; }
h1 { font-size: 1.5rem; margin-bottom: .2rem; } h2 { border-bottom: 2px solid #ddd; padding-bottom: .2rem; }
h3 { margin: 1.2rem 0 .4rem; font-size: 1.05rem; } h4 { margin: .6rem 0 .3rem; font-size: .95rem; }
nav a { margin-right: .8rem; } .muted { color: #666; font-size: .9em; }
section { margin-top: 2rem; }
.cards { display: flex; flex-wrap: wrap; gap: .6rem; margin: .8rem 0; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: .5rem .8rem; min-width: 9rem; }
.card .label { color: #666; font-size: .8rem; } .card .value { font-size: 1.2rem; font-weight: 600; }
.leaf { border-top: 1px solid #eee; padding-top: .4rem; }
.row { display: flex; flex-wrap: wrap; gap: 1.5rem; align-items: flex-start; }
table { border-collapse: collapse; font-size: .88rem; margin: .4rem 0; }
th, td { border: 1px solid #ddd; padding: .2rem .5rem; text-align: left; vertical-align: top; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
svg { max-width: 100%; height: auto; display: block; }
svg text { font-family: inherit; font-size: 11px; fill: #333; }
.sample { border: 1px solid #ddd; border-left: 4px solid #228833; border-radius: 4px; padding: .3rem .6rem;
          margin: .4rem 0; font-size: .85rem; }
.sample.dropped { border-left-color: #cc3311; }
.sample dt { font-weight: 600; color: #555; } .sample dd { margin: 0 0 .3rem 0; }
.text { white-space: pre-wrap; overflow-wrap: anywhere; font-family: ui-monospace, "DejaVu Sans Mono", monospace; }
.reason { font-weight: 600; color: #cc3311; }
.na { color: #999; }
"""


# ---- reading ---------------------------------------------------------------------------------------

def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _is_num(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def plain(value: Any) -> str:
    """A JSON number as a data-key element shows it: as JSON writes it."""
    return json.dumps(value)


def normalize(report: Mapping[str, Any]) -> dict[str, Any]:
    """Format 2 as is; a format-1 report ({leaf id: counts}) as {"format": 1, "run": {}, "leaves": it}."""
    if not isinstance(report, Mapping):
        raise OutputError(f"a quality report is a JSON object, not {type(report).__name__}")
    if isinstance(report.get("leaves"), Mapping) or "format" in report:
        out = dict(report)
        out["run"] = dict(report.get("run") or {})
        out["leaves"] = dict(report.get("leaves") or {})
        return out
    return {"format": 1, "run": {}, "leaves": {k: v for k, v in report.items() if isinstance(v, Mapping)}}


def lookup(report: Mapping[str, Any], key: str) -> Any:
    """The value at a data-key path. Segments are split on '.', and at each mapping the longest run of
    segments that is a key wins, so leaf ids holding dots resolve. KeyError when there is none."""
    parts = key.split(".")
    node: Any = report
    i = 0
    while i < len(parts):
        if isinstance(node, list):
            try:
                node = node[int(parts[i])]
            except (ValueError, IndexError):
                raise KeyError(key) from None
            i += 1
            continue
        if not isinstance(node, Mapping):
            raise KeyError(key)
        for j in range(len(parts), i, -1):
            candidate = ".".join(parts[i:j])
            if candidate in node:
                node, i = node[candidate], j
                break
        else:
            raise KeyError(key)
    return node


def _get(data: Any, *path: Any) -> Any:
    for p in path:
        if isinstance(data, Mapping):
            data = data.get(p)
        elif isinstance(data, list) and isinstance(p, int) and -len(data) <= p < len(data):
            data = data[p]
        else:
            return None
    return data


def _num(report: Mapping[str, Any], *path: Any, suffix: str = "") -> str:
    """The number at `path` in an element tagged with its data-key, or a dash when it is missing."""
    value = _get(report, *path)
    if not _is_num(value):
        return '<span class="na">—</span>'
    key = ".".join(str(p) for p in path)
    return f'<span class="num" data-key="{_esc(key)}">{_esc(plain(value))}</span>{_esc(suffix)}'


def _human(value: float) -> str:
    if not _is_num(value):
        return "—"
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.3g}" if abs(value) < 10 else f"{value:,.1f}"


def _short(text: str, n: int = 30) -> str:
    return text if len(text) <= n else "…" + text[-(n - 1):]


# ---- SVG charts ------------------------------------------------------------------------------------

def _svg(width: int, height: int, body: str, label: str) -> str:
    return (f'<svg class="chart" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="{_esc(label)}"><title>{_esc(label)}</title>'
            f'{body}</svg>')


def empty_chart(label: str, message: str = "no data") -> str:
    body = (f'<rect x="0.5" y="0.5" width="{_CHART_W - 1}" height="39" fill="#fafafa" stroke="#ddd"/>'
            f'<text x="{_CHART_W // 2}" y="24" text-anchor="middle" fill="#999">{_esc(message)}</text>')
    return _svg(_CHART_W, 40, body, label)


def bar_chart(rows: Sequence[tuple[str, Sequence[float]]], label: str, *, series: Sequence[str] = ("",),
              colors: Sequence[str] = (_BLUE,), max_value: float | None = None, width: int = _CHART_W,
              value_format=_human) -> str:
    """Horizontal bars: one row per (label, values), one bar per series in the row (grouped)."""
    rows = [(name, list(values)) for name, values in rows]
    if not rows:
        return empty_chart(label)
    top = max_value if max_value else max((v for _, vs in rows for v in vs if _is_num(v)), default=0) or 1
    label_w, value_w, bar_h, gap = 190, 70, 14, 6
    legend_h = 18 if len(series) > 1 else 0
    group_h = bar_h * len(series) + gap
    height = legend_h + group_h * len(rows) + gap
    plot_w = width - label_w - value_w
    parts = []
    if legend_h:
        x = label_w
        for s, c in zip(series, colors):
            parts.append(f'<rect x="{x}" y="3" width="10" height="10" fill="{c}"/>'
                         f'<text x="{x + 14}" y="12">{_esc(s)}</text>')
            x += 20 + 7 * len(s)
    for r, (name, values) in enumerate(rows):
        y0 = legend_h + gap + r * group_h
        parts.append(f'<text x="{label_w - 6}" y="{y0 + bar_h * len(series) / 2 + 4:.1f}" text-anchor="end">'
                     f'<title>{_esc(name)}</title>{_esc(_short(name))}</text>')
        for i, v in enumerate(values):
            shown = value_format(v) if _is_num(v) else "—"
            w = max(0.0, min(1.0, v / top)) * plot_w if _is_num(v) else 0.0
            y = y0 + i * bar_h
            name_s = f"{name} {series[i]}".strip()
            parts.append(f'<rect x="{label_w}" y="{y}" width="{max(w, 0.5):.1f}" height="{bar_h - 2}" '
                         f'fill="{colors[i % len(colors)]}"><title>{_esc(name_s)}: {_esc(shown)}</title></rect>'
                         f'<text x="{label_w + w + 4:.1f}" y="{y + bar_h - 4}">{_esc(shown)}</text>')
    return _svg(width, int(height), "".join(parts), label)


def histogram_chart(labels: Sequence[str], counts: Sequence[int], label: str, *, color: str = _BLUE,
                    width: int = 360, height: int = 150) -> str:
    """Vertical bars over bins (or scores), with a count on top of each non-empty bar."""
    if not counts or not any(counts):
        return empty_chart(label)
    pad_l, pad_b, pad_t = 8, 30, 14
    n = len(counts)
    slot = (width - 2 * pad_l) / n
    top = max(counts) or 1
    plot_h = height - pad_b - pad_t
    every = max(1, math.ceil(7 * max(len(str(x)) for x in labels) / slot)) if labels else 1  # labels apart
    parts = [f'<line x1="{pad_l}" y1="{height - pad_b}" x2="{width - pad_l}" y2="{height - pad_b}" stroke="#999"/>']
    for i, (name, c) in enumerate(zip(labels, counts)):
        h = c / top * plot_h
        x = pad_l + i * slot
        parts.append(f'<rect x="{x + 1:.1f}" y="{height - pad_b - h:.1f}" width="{max(slot - 2, 1):.1f}" '
                     f'height="{h:.1f}" fill="{color}"><title>{_esc(name)}: {c}</title></rect>')
        if c:
            parts.append(f'<text x="{x + slot / 2:.1f}" y="{height - pad_b - h - 3:.1f}" text-anchor="middle" '
                         f'font-size="9">{c}</text>')
        if i % every == 0:
            parts.append(f'<text x="{x + slot / 2:.1f}" y="{height - pad_b + 13}" text-anchor="middle" '
                         f'font-size="9">{_esc(name)}</text>')
    return _svg(width, height, "".join(parts), label)


def line_chart(series: Sequence[tuple[str, str, Sequence[tuple[float, float]]]], label: str, *,
               x_label: str = "seconds since the first unit", width: int = _CHART_W, height: int = 210) -> str:
    """Lines (name, color, [(x, y), ...]) on shared axes starting at 0."""
    pts = [(x, y) for _, _, ps in series for x, y in ps if _is_num(x) and _is_num(y)]
    if not pts:
        return empty_chart(label)
    pad_l, pad_r, pad_t, pad_b = 62, 14, 22, 34
    xmax = max(x for x, _ in pts) or 1
    ymax = max(y for _, y in pts) or 1
    plot_w, plot_h = width - pad_l - pad_r, height - pad_t - pad_b

    def sx(x: float) -> float:
        return pad_l + x / xmax * plot_w

    def sy(y: float) -> float:
        return pad_t + (1 - y / ymax) * plot_h

    parts = [f'<line x1="{pad_l}" y1="{pad_t}" x2="{pad_l}" y2="{height - pad_b}" stroke="#999"/>',
             f'<line x1="{pad_l}" y1="{height - pad_b}" x2="{width - pad_r}" y2="{height - pad_b}" stroke="#999"/>']
    for f in (0, 0.5, 1):
        parts.append(f'<text x="{pad_l - 4}" y="{sy(f * ymax) + 4:.1f}" text-anchor="end">{_esc(_human(f * ymax))}</text>'
                     f'<text x="{sx(f * xmax):.1f}" y="{height - pad_b + 14}" text-anchor="middle">'
                     f'{_esc(_human(f * xmax))}</text>')
        if f:
            parts.append(f'<line x1="{pad_l}" y1="{sy(f * ymax):.1f}" x2="{width - pad_r}" y2="{sy(f * ymax):.1f}" '
                         f'stroke="#eee"/>')
    parts.append(f'<text x="{pad_l + plot_w / 2:.1f}" y="{height - 4}" text-anchor="middle" fill="#666">'
                 f'{_esc(x_label)}</text>')
    lx = pad_l + 6
    for name, color, ps in series:
        ps = [(x, y) for x, y in ps if _is_num(x) and _is_num(y)]
        coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in ps)
        if len(ps) > 1:
            parts.append(f'<polyline points="{coords}" fill="none" stroke="{color}" stroke-width="2">'
                         f'<title>{_esc(name)}</title></polyline>')
        for x, y in ps[-1:] if len(ps) > 1 else ps:
            parts.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{color}">'
                         f'<title>{_esc(name)}: {_esc(_human(y))} at {_esc(_human(x))} s</title></circle>')
        parts.append(f'<rect x="{lx}" y="5" width="10" height="10" fill="{color}"/>'
                     f'<text x="{lx + 14}" y="14">{_esc(name)}</text>')
        lx += 24 + 7 * len(name)
    return _svg(width, height, "".join(parts), label)


# ---- page pieces -----------------------------------------------------------------------------------

def _leaf_order(leaves: Mapping[str, Any]) -> list[str]:
    """Worst leaves first: lowest kept/target (a leaf without a target goes last), then id."""
    def ratio(lid: str) -> float:
        kept, target = _get(leaves, lid, "kept"), _get(leaves, lid, "target")
        if not _is_num(target) or target <= 0:
            return math.inf
        return (kept if _is_num(kept) else 0) / target
    return sorted(leaves, key=lambda lid: (ratio(lid), lid))


def _funnel(leaf: Mapping[str, Any]) -> list[tuple[str, Any]]:
    rows = leaf.get("funnel")
    if isinstance(rows, list):
        return [(str(r[0]), r[1]) for r in rows if isinstance(r, (list, tuple)) and len(r) == 2]
    return [(stage, leaf.get(stage)) for stage in ("generated", "kept")]


def _leaf_head(leaves: Mapping[str, Any], lid: str, tag: str = "h3") -> str:
    leaf = leaves[lid] if isinstance(leaves[lid], Mapping) else {}
    extra = " · ".join(_esc(leaf[k]) for k in ("kind", "name") if isinstance(leaf.get(k), str))
    return f'<{tag}>{_esc(lid)} <span class="muted">{extra}</span></{tag}>'


def _card(label: str, value_html: str) -> str:
    return f'<div class="card"><div class="label">{_esc(label)}</div><div class="value">{value_html}</div></div>'


def _table(head: Sequence[str], rows: Iterable[Sequence[str]], numeric_from: int = 1) -> str:
    th = "".join(f'<th class="{"n" if i >= numeric_from else ""}">{_esc(h)}</th>' for i, h in enumerate(head))
    body = "".join("<tr>" + "".join(f'<td class="{"n" if i >= numeric_from else ""}">{c}</td>'
                                    for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _counts_table(report: Mapping[str, Any], base: Sequence[Any], counts: Any, head: tuple[str, str]) -> str:
    if not isinstance(counts, Mapping) or not counts:
        return ""
    return _table(head, [(_esc(k), _num(report, *base, k)) for k in counts])


def _section_summary(report: Mapping[str, Any]) -> str:
    run = report["run"]
    elapsed = run.get("elapsed_s")
    when = f' <span class="muted">({_esc(_duration(elapsed))})</span>' if _is_num(elapsed) else ""
    cards = '<div class="cards">' + "".join([
        _card("kept / target", f'{_num(report, "run", "kept")} / {_num(report, "run", "target")}'),
        _card("generated", _num(report, "run", "generated")),
        _card("tokens per kept sample", _num(report, "run", "tokens_per_kept")),
        _card("kept per 1k tokens", _num(report, "run", "kept_per_1k_tokens")),
        _card("elapsed (s)", _num(report, "run", "elapsed_s") + when),
        _card("requests", _num(report, "run", "requests")),
        _card("prompt tokens", _num(report, "run", "prompt_tokens")),
        _card("completion tokens", _num(report, "run", "completion_tokens")),
    ]) + "</div>"
    progress = bar_chart([("target", [run.get("target")]), ("generated", [run.get("generated")]),
                          ("kept", [run.get("kept")])], "samples: target, generated, kept",
                         colors=(_GREY,))
    drops = run.get("quality_dropped") if isinstance(run.get("quality_dropped"), Mapping) else {}
    contamination = run.get("contamination")
    parts = [cards, '<div class="row"><div><h3>Samples</h3>', progress, "</div>",
             "<div><h3>Dropped by the quality stage</h3>",
             bar_chart([(k, [v]) for k, v in drops.items()], "rows dropped by the run-wide quality stage",
                       colors=(_RED,)) if drops else empty_chart("quality stage drops", "nothing dropped"),
             _counts_table(report, ("run", "quality_dropped"), drops, ("reason", "rows")), "</div>",
             "<div><h3>Contamination per eval set</h3>"]
    if isinstance(contamination, Mapping) and contamination:
        parts += [bar_chart([(k, [v]) for k, v in contamination.items()], "rows matching an eval set",
                            colors=(_ORANGE,)),
                  _counts_table(report, ("run", "contamination"), contamination, ("eval set", "rows"))]
    else:
        msg = "no eval set matched" if isinstance(contamination, Mapping) else "not checked"
        parts.append(empty_chart("contamination per eval set", msg))
    parts.append("</div></div>")
    return "".join(parts)


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h {m:02d}m {s:02d}s" if h else (f"{m}m {s:02d}s" if m else f"{seconds:.1f}s")


def _section_funnel(report: Mapping[str, Any], order: list[str]) -> str:
    leaves = report["leaves"]
    overview_rows = []
    for lid in order:
        kept, target = _get(leaves, lid, "kept"), _get(leaves, lid, "target")
        pct = (kept / target * 100) if _is_num(kept) and _is_num(target) and target > 0 else 0
        overview_rows.append((lid, [pct]))
    parts = ["<h3>Kept / target per leaf (%)</h3>",
             bar_chart(overview_rows, "kept / target per leaf, percent", colors=(_GREEN,),
                       max_value=max([100.0] + [v[0] for _, v in overview_rows]),
                       value_format=lambda v: f"{v:.0f}%"),
             _table(("leaf", "kept", "target", "kept / target", "units", "failed units"),
                    [(_esc(lid), _num(report, "leaves", lid, "kept"), _num(report, "leaves", lid, "target"),
                      f'<span class="derived">{pct:.0f}%</span>', _num(report, "leaves", lid, "units"),
                      _num(report, "leaves", lid, "failed_units"))
                     for lid, [pct] in overview_rows])]
    for lid in order:
        leaf = leaves[lid] if isinstance(leaves[lid], Mapping) else {}
        stages = _funnel(leaf)
        has_funnel = isinstance(leaf.get("funnel"), list)
        rows = [(name, [v]) for name, v in stages]
        chart = bar_chart(rows, f"funnel of {lid}", colors=(_BLUE,))
        keys = [(_esc(name), _num(report, "leaves", lid, "funnel", i, 1) if has_funnel
                 else _num(report, "leaves", lid, name)) for i, (name, _) in enumerate(stages)]
        parts.append(f'<div class="leaf" data-leaf="{_esc(lid)}">{_leaf_head(leaves, lid)}'
                     f'<div class="row">{chart}{_table(("stage", "rows"), keys)}</div></div>')
    return "".join(parts)


def _section_judges(report: Mapping[str, Any], order: list[str]) -> str:
    leaves = report["leaves"]
    parts = []
    for lid in order:
        scores = _get(leaves, lid, "judge_scores")
        scores = scores if isinstance(scores, Mapping) else {}
        body = []
        for col, counts in scores.items():
            if not isinstance(counts, Mapping):
                continue
            keys = sorted(counts, key=lambda s: (float(s) if _is_float(s) else math.inf, str(s)))
            bins = _score_bins(keys)
            chart = histogram_chart(bins, [counts[k] if _is_num(counts.get(k)) else 0 for k in bins],
                                    f"{col} scores of {lid}", color=_PURPLE, width=260, height=130)
            table = _table(("score", "rows"), [(_esc(k), _num(report, "leaves", lid, "judge_scores", col, k))
                                               for k in keys])
            body.append(f'<div><h4>{_esc(col)}</h4><div class="row">{chart}{table}</div></div>')
        if not body:
            body.append(empty_chart(f"judge scores of {lid}", "no judge scores (no judge_* columns)"))
        parts.append(f'<div class="leaf" data-leaf="{_esc(lid)}">{_leaf_head(leaves, lid)}'
                     f'<div class="row">{"".join(body)}</div></div>')
    return "".join(parts) or empty_chart("judge scores", "no leaves")


def _score_bins(keys: Sequence[str]) -> list[str]:
    """Integer scores from the lowest to the highest seen, the ones never given included (at 0)."""
    try:
        ints = [int(k) for k in keys]
    except ValueError:
        return list(keys)
    if ints and max(ints) - min(ints) <= 20 and all(str(i) == k for i, k in zip(ints, keys)):
        return [str(i) for i in range(min(ints), max(ints) + 1)]
    return list(keys)


def _is_float(s: Any) -> bool:
    try:
        float(s)
        return True
    except (TypeError, ValueError):
        return False


def _bin_labels(edges: Sequence[Any]) -> list[str]:
    out = []
    for i, lo in enumerate(edges):
        if i + 1 < len(edges):
            hi = edges[i + 1]
            out.append(f"{lo}" if _is_num(hi) and _is_num(lo) and hi - lo == 1 else f"{lo}-{hi - 1 if _is_num(hi) else hi}")
        else:
            out.append(f"{lo}+")
    return out


def _section_lengths(report: Mapping[str, Any], order: list[str]) -> str:
    leaves = report["leaves"]
    parts = []
    stats = ("count", "mean", "p50", "p90", "max")
    for lid in order:
        lengths = _get(leaves, lid, "lengths")
        lengths = lengths if isinstance(lengths, Mapping) else {}
        charts = []
        for col, color in (("question", _BLUE), ("response", _ORANGE)):
            hist = _get(lengths, col, "histogram") or {}
            edges, counts = hist.get("edges") or [], hist.get("counts") or []
            charts.append(f"<div><h4>{_esc(col)}</h4>" + histogram_chart(
                _bin_labels(edges), counts, f"{col} length in words, {lid}", color=color) + "</div>")
        table = _table(("column",) + stats, [(_esc(col), *(_num(report, "leaves", lid, "lengths", col, s)
                                                          for s in stats)) for col in ("question", "response")])
        parts.append(f'<div class="leaf" data-leaf="{_esc(lid)}">{_leaf_head(leaves, lid)}'
                     f'<div class="row">{"".join(charts)}{table}</div></div>')
    return "".join(parts) or empty_chart("lengths", "no leaves")


def _section_distinct(report: Mapping[str, Any], order: list[str]) -> str:
    leaves = report["leaves"]
    rows = [(lid, [_get(leaves, lid, "distinct", "distinct_1"), _get(leaves, lid, "distinct", "distinct_2")])
            for lid in order]
    chart = bar_chart(rows, "distinct-1 and distinct-2 of kept responses per leaf",
                      series=("distinct-1", "distinct-2"), colors=(_BLUE, _ORANGE), max_value=1.0,
                      value_format=lambda v: f"{v:.2f}")
    blocks = "".join(
        f'<tr data-leaf="{_esc(lid)}"><td>{_esc(lid)}</td>'
        + "".join(f'<td class="n">{_num(report, "leaves", lid, "distinct", k)}</td>'
                  for k in ("distinct_1", "distinct_2", "responses", "words")) + "</tr>"
        for lid in order)
    table = ('<table><thead><tr><th>leaf</th><th class="n">distinct-1</th><th class="n">distinct-2</th>'
             f'<th class="n">responses</th><th class="n">words</th></tr></thead><tbody>{blocks}</tbody></table>')
    note = ('<p class="muted">Unique word unigrams (bigrams) over all unigrams (bigrams) of a leaf\'s kept '
            'responses, lowercased: near 0 means the teacher repeats itself.</p>')
    return note + chart + table


def _section_tokens(report: Mapping[str, Any], order: list[str]) -> str:
    leaves = report["leaves"]
    spend = [(lid, [_get(leaves, lid, "prompt_tokens"), _get(leaves, lid, "completion_tokens")]) for lid in order]
    per_kept = []
    rows = []
    for lid in order:
        p, c, k = (_get(leaves, lid, key) for key in ("prompt_tokens", "completion_tokens", "kept"))
        total = (p if _is_num(p) else 0) + (c if _is_num(c) else 0)
        tpk = total / k if _is_num(k) and k > 0 else None
        per_kept.append((lid, [tpk]))
        rows.append((_esc(lid), _num(report, "leaves", lid, "requests"), _num(report, "leaves", lid, "prompt_tokens"),
                     _num(report, "leaves", lid, "completion_tokens"), _num(report, "leaves", lid, "kept"),
                     f'<span class="derived">{_esc(_human(round(tpk, 1)) if tpk is not None else "—")}</span>'))
    return ('<div class="row"><div><h3>Tokens per leaf</h3>'
            + bar_chart(spend, "prompt and completion tokens per leaf", series=("prompt", "completion"),
                        colors=(_BLUE, _ORANGE))
            + '</div><div><h3>Tokens per kept sample</h3>'
            + bar_chart(per_kept, "prompt + completion tokens per kept sample, per leaf", colors=(_PURPLE,))
            + "</div></div>"
            + _table(("leaf", "requests", "prompt tokens", "completion tokens", "kept", "tokens per kept"), rows))


def _section_throughput(report: Mapping[str, Any]) -> str:
    timeline = report["run"].get("timeline")
    timeline = [p for p in timeline if isinstance(p, Mapping)] if isinstance(timeline, list) else []

    def pts(key: str) -> list[tuple[float, float]]:
        return [(p.get("t_s"), p.get(key)) for p in timeline]

    charts = ('<div class="row"><div><h3>Units and kept samples (cumulative)</h3>'
              + line_chart([("units", _BLUE, pts("units")), ("kept", _GREEN, pts("kept"))],
                           "cumulative units and kept samples over time")
              + '</div><div><h3>Completion tokens (cumulative)</h3>'
              + line_chart([("completion tokens", _ORANGE, pts("completion_tokens"))],
                           "cumulative completion tokens over time") + "</div></div>")
    if not timeline:
        return charts + '<p class="muted">No timeline in this report.</p>'
    last = len(timeline) - 1
    end = timeline[-1]
    t = end.get("t_s")
    rates = ""
    if _is_num(t) and t > 0:
        rates = (f'<p class="muted">Average: {_esc(_human(round((end.get("kept") or 0) / t * 60, 2)))} kept samples '
                 f'per minute, {_esc(_human(round((end.get("completion_tokens") or 0) / t, 1)))} completion tokens '
                 f'per second.</p>')
    return charts + _table(("", "seconds", "units", "kept", "completion tokens"), [(
        "last point", *(_num(report, "run", "timeline", last, k) for k in ("t_s", "units", "kept", "completion_tokens")))]
    ) + rates


def _row_html(row: Any) -> str:
    if not isinstance(row, Mapping):
        return f'<div class="text">{_esc(row)}</div>'
    return "<dl>" + "".join(f'<dt>{_esc(k)}</dt><dd class="text">{_esc(v)}</dd>' for k, v in row.items()) + "</dl>"


def _section_samples(report: Mapping[str, Any], order: list[str]) -> str:
    leaves = report["leaves"]
    parts = []
    for lid in order:
        leaf = leaves[lid] if isinstance(leaves[lid], Mapping) else {}
        pipeline = leaf.get("dropped") if isinstance(leaf.get("dropped"), Mapping) else {}
        quality = leaf.get("quality_dropped") if isinstance(leaf.get("quality_dropped"), Mapping) else {}
        reasons = [(f"pipeline: {k}", [v]) for k, v in pipeline.items()] + \
                  [(f"quality: {k}", [v]) for k, v in quality.items()]
        chart = (bar_chart(reasons, f"rows dropped per reason, {lid}", colors=(_RED,)) if reasons
                 else empty_chart(f"rows dropped per reason, {lid}", "nothing dropped"))
        table = _table(("where", "reason", "rows"),
                       [("pipeline", _esc(k), _num(report, "leaves", lid, "dropped", k)) for k in pipeline]
                       + [("quality", _esc(k), _num(report, "leaves", lid, "quality_dropped", k)) for k in quality],
                       numeric_from=2) if reasons else ""
        samples = leaf.get("samples") if isinstance(leaf.get("samples"), Mapping) else {}
        kept = [r for r in samples.get("kept") or []]
        dropped = [d for d in samples.get("dropped") or [] if isinstance(d, Mapping)]
        kept_html = "".join(f'<div class="sample kept">{_row_html(r)}</div>' for r in kept) or \
            '<p class="muted">no kept rows sampled</p>'
        dropped_html = "".join(f'<div class="sample dropped"><div>reason: <span class="reason">{_esc(d.get("reason"))}'
                               f'</span></div>{_row_html(d.get("row"))}</div>' for d in dropped) or \
            '<p class="muted">no dropped rows sampled</p>'
        parts.append(f'<div class="leaf" data-leaf="{_esc(lid)}">{_leaf_head(leaves, lid)}'
                     f'<div class="row">{chart}{table}</div>'
                     f'<h4>Kept</h4>{kept_html}<h4>Dropped</h4>{dropped_html}</div>')
    return "".join(parts) or empty_chart("samples", "no leaves")


def render_html(report: Mapping[str, Any]) -> str:
    """The whole page, one string; the same report gives the same bytes."""
    report = normalize(report)
    order = _leaf_order(report["leaves"])
    run_dir = report["run"].get("run_dir")
    title = f"Quality report: {run_dir}" if isinstance(run_dir, str) else "Quality report"
    bodies = {
        "summary": _section_summary(report),
        "funnel": _section_funnel(report, order),
        "judge_scores": _section_judges(report, order),
        "lengths": _section_lengths(report, order),
        "distinct": _section_distinct(report, order),
        "tokens": _section_tokens(report, order),
        "throughput": _section_throughput(report),
        "samples": _section_samples(report, order),
    }
    nav = "".join(f'<a href="#sec-{s}">{_esc(_TITLES[s].split(" (")[0].split(":")[0])}</a>' for s in SECTIONS)
    sections = "".join(f'<section id="sec-{s}" data-section="{s}"><h2>{_esc(_TITLES[s])}</h2>{bodies[s]}</section>'
                       for s in SECTIONS)
    leaves = len(report["leaves"])
    return ("<!DOCTYPE html>\n"
            '<html lang="en"><head><meta charset="utf-8">'
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; "
            "img-src data:\">"
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            '<link rel="icon" href="data:,">'
            f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>"
            f"<h1>{_esc(title)}</h1>"
            f'<p class="muted">{leaves} leaves · report format {_esc(report.get("format", "?"))} · '
            "written by sdg from quality_report.json</p>"
            f"<nav>{nav}</nav>{sections}</body></html>\n")


def read_report(run_dir: Path) -> dict[str, Any]:
    """run_dir/quality_report.json, or an OutputError that says what is wrong and what to do."""
    path = Path(run_dir) / QUALITY_REPORT_JSON
    how = ("`sdg data generate` writes it at the end of a run; pass a generate run folder "
           "(`sdg data list` lists them)")
    if not path.is_file():
        raise OutputError(f"{path}: no quality report there: {how}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise OutputError(f"{path}: cannot be read ({reason}): {how}") from exc
    if not isinstance(data, dict):
        raise OutputError(f"{path}: not a quality report (a JSON object is expected): {how}")
    return data


def write_html_report(run_dir: Path) -> Path:
    """Render run_dir/quality_report.json into run_dir/quality_report.html (atomically); its path."""
    report = read_report(run_dir)
    path = Path(run_dir) / QUALITY_REPORT_HTML
    write_text(path, render_html(report))
    return path
