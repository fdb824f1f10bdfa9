"""HTML pieces of ``recrl report``: the page, its tables and episodes drawn as conversations.

Every text that comes from a run (model output, tool results, method and role names, file contents)
goes through ``esc`` before it reaches the page; the only markup is this module's own. The page needs
no JavaScript and loads nothing from elsewhere: styles are inline, images are files beside it.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from envs.types import Trajectory, Turn
from rl.tables import outcome_text

AGENT_COLOURS = ("#7c3aed", "#059669", "#d97706", "#db2777", "#0891b2", "#65a30d", "#9333ea", "#ea580c")
"""Colours of agent roles (``policy``, ``cf_expert``, a planner...), given in order of appearance."""
TOOL_COLOURS = ("#92400e", "#1e40af", "#166534", "#9f1239", "#3f6212", "#155e75", "#5b21b6", "#854d0e")
"""Colours of tools (``item_cf``, ``sequential``...), given in order of appearance."""
ENV_COLOURS = {"system": "#6b7280", "user": "#2563eb", "env": "#78716c", "tool": "#0f766e"}
"""Colours of the turns the environment speaks."""
TAGS = re.compile(r"&lt;(/?)(plan|tool_call|reflection|recommend|answer|act|say|think)&gt;")
"""The action tags of agent turns, as they read once escaped."""
TOOL_RESPONSE = re.compile(r"<tool_response>(.*?)</tool_response>", re.DOTALL)

CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:#1f2937;
 margin:0;background:#f8fafc}
main{max-width:1180px;margin:0 auto;padding:24px 28px 64px}
h1{font-size:26px;margin:0 0 4px}h2{font-size:20px;margin:36px 0 10px;border-bottom:2px solid #e5e7eb;
 padding-bottom:4px}h3{font-size:16px;margin:22px 0 8px}
.sub{color:#6b7280;margin:0}code,pre{font:13px/1.4 ui-monospace,"DejaVu Sans Mono",monospace}
ul.parts{list-style:none;padding:0;display:grid;grid-template-columns:repeat(auto-fill,minmax(340px,1fr));gap:6px}
ul.parts li{padding:6px 10px;border-radius:6px;background:#fff;border:1px solid #e5e7eb}
li.present::before{content:"\\2713  ";color:#059669;font-weight:700}
li.missing::before{content:"\\2717  ";color:#b91c1c;font-weight:700}
p.missing{background:#fef2f2;border:1px solid #fecaca;color:#7f1d1d;padding:8px 12px;border-radius:6px}
table{border-collapse:collapse;background:#fff;margin:6px 0 4px;font-size:14px}
th,td{border:1px solid #e5e7eb;padding:4px 9px;text-align:right;white-space:nowrap}
th{background:#f1f5f9}td:first-child,th:first-child{text-align:left}
tr.student td{background:#f5f3ff}tr.teacher td{background:#ecfdf5}
td.ci .pm{color:#6b7280;font-size:12px}td.sig{color:#047857;font-weight:600}
.bar{position:relative;height:8px;width:120px;background:#f1f5f9;border-radius:4px;margin-top:3px}
.bar .fill{position:absolute;left:0;top:0;bottom:0;background:#93c5fd;border-radius:4px}
.bar .whisker{position:absolute;top:-2px;bottom:-2px;border-left:2px solid #1e3a8a;border-right:2px solid #1e3a8a}
.figures{display:grid;grid-template-columns:repeat(auto-fill,minmax(360px,1fr));gap:14px}
figure{margin:0;background:#fff;border:1px solid #e5e7eb;border-radius:8px;padding:8px}
figure img{width:100%;height:auto;display:block}figcaption{color:#4b5563;font-size:13px;text-align:center}
.legend span{display:inline-block;margin:0 10px 4px 0;padding:1px 8px;border-radius:10px;color:#fff;font-size:13px}
details.episode{background:#fff;border:1px solid #e5e7eb;border-radius:8px;margin:8px 0;padding:6px 12px}
details.episode>summary{cursor:pointer;font-weight:600}
ol.conversation{list-style:none;padding:0;margin:8px 0}
.turn{border-left:4px solid var(--c);background:color-mix(in srgb,var(--c) 7%,#fff);border-radius:6px;
 margin:6px 0;padding:5px 10px}
.turn.agent{margin-left:56px}.turn.env{margin-right:56px}
.who{font-size:12px;font-weight:700;color:var(--c);text-transform:none}
.who .reward{font-weight:400;color:#374151;margin-left:8px}
pre.text{white-space:pre-wrap;word-break:break-word;margin:2px 0}
.tag{color:#9ca3af}.tool-block{border-left:3px solid var(--c);padding-left:8px;margin:4px 0}
ul.errors{color:#b91c1c;margin:2px 0;font-size:13px}
details.file>summary{cursor:pointer}details.file pre{background:#fff;border:1px solid #e5e7eb;padding:8px}
"""


def esc(value: Any) -> str:
    """``value`` as HTML text, quotes included (also safe inside attribute values)."""
    return html.escape(str(value), quote=True)


def number(value: Any) -> str:
    """A metric as table text: floats with 3 decimals, other values as they are, None as a dash."""
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}"
    return esc(value)


@dataclass
class Palette:
    """Gives each agent role and each tool one colour, the same in every episode of the page."""

    roles: dict[str, str] = field(default_factory=dict)
    tools: dict[str, str] = field(default_factory=dict)

    def role(self, name: str) -> str:
        if name in ENV_COLOURS:
            return ENV_COLOURS[name]
        return self.roles.setdefault(name, AGENT_COLOURS[len(self.roles) % len(AGENT_COLOURS)])

    def tool(self, name: str) -> str:
        return self.tools.setdefault(name, TOOL_COLOURS[len(self.tools) % len(TOOL_COLOURS)])

    def legend(self, roles: Iterable[str], tools: Iterable[str]) -> str:
        """Chips of ``roles`` (the agents) and ``tools`` in their colours."""
        chips = [f'<span style="background:{self.role(name)}">{esc(name)}</span>' for name in roles]
        chips += [f'<span style="background:{self.tool(name)}">tool: {esc(name)}</span>' for name in tools]
        return f'<p class="legend">{"".join(chips)}</p>' if chips else ""


def page(title: str, subtitle: str, contents: str, sections: Iterable[str]) -> str:
    """The whole document."""
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{CSS}</style></head>\n<body><main>"
            f'<h1>{esc(title)}</h1><p class="sub">{esc(subtitle)}</p>{contents}{"".join(sections)}'
            "</main></body></html>\n")


def section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{esc(anchor)}"><h2>{esc(title)}</h2>\n{body}</section>\n'


def missing(message: str) -> str:
    return f'<p class="missing">{esc(message)}</p>'


def parts_list(parts: Sequence[tuple[str, str, str | None]]) -> str:
    """The run's parts: ``(anchor, title, why it is missing or None)``; present ones link to their section."""
    items = [f'<li class="present"><a href="#{esc(anchor)}">{esc(title)}</a></li>' if why is None
             else f'<li class="missing">{esc(title)}: {esc(why)}</li>' for anchor, title, why in parts]
    return f'<ul class="parts" id="parts">{"".join(items)}</ul>'


def figures(images: Sequence[tuple[str, str]]) -> str:
    """PNG files beside the page, ``(file name, caption)`` each (an empty caption: none shown)."""
    cells = [f'<figure><img src="{esc(name)}" alt="{esc(caption or name)}">'
             + (f"<figcaption>{esc(caption)}</figcaption>" if caption else "") + "</figure>"
             for name, caption in images]
    return f'<div class="figures">{"".join(cells)}</div>'


def method_kind(method: str) -> str:
    """``student``, ``teacher`` or ``baseline``: how a method's row is shaded."""
    return "student" if method.startswith("student") else "teacher" if method == "teacher" else "baseline"


def eval_table(methods: Mapping[str, Mapping[str, Any]], num_tasks: Any) -> str:
    """Every method's metrics; a metric with a ``<name>_ci95`` half-width shows it and a bar with whiskers."""
    columns = [key for key in dict.fromkeys(k for metrics in methods.values() for k in metrics)
               if not key.endswith("_ci95")]
    head = "".join(f"<th>{esc(column)}</th>" for column in columns)
    rows = []
    for method, metrics in methods.items():
        cells = "".join(_metric_cell(metrics, column) for column in columns)
        kind = method_kind(method)
        rows.append(f'<tr class="{kind}"><td>{esc(method)}</td><td>{kind}</td>{cells}</tr>')
    return (f'<table id="eval-table"><thead><tr><th>method ({esc(num_tasks)} tasks)</th><th>kind</th>{head}</tr>'
            f'</thead><tbody>{"".join(rows)}</tbody></table>')


def _metric_cell(metrics: Mapping[str, Any], key: str) -> str:
    value, half = metrics.get(key), metrics.get(f"{key}_ci95")
    if not isinstance(value, (int, float)) or not isinstance(half, (int, float)):
        return f"<td>{number(value)}</td>"
    low, high = value - half, value + half
    bar = ""
    if 0.0 <= value <= 1.0:  # a rate: drawn on [0, 1], its interval clipped there
        left, right = max(low, 0.0), min(high, 1.0)
        bar = (f'<div class="bar"><div class="fill" style="width:{value * 100:.1f}%"></div><div class="whisker" '
               f'style="left:{left * 100:.1f}%;width:{(right - left) * 100:.1f}%"></div></div>')
    return (f'<td class="ci" title="95% interval [{low:.3f}, {high:.3f}]">{value:.3f} '
            f'<span class="pm">± {half:.3f}</span>{bar}</td>')


def compare_table(result: Mapping[str, Any]) -> str:
    """``recrl compare``'s paired intervals, one row per pair and metric; ``*`` where the interval excludes 0."""
    level = f"{float(result.get('confidence', 0.95)) * 100:g}%"
    rows = []
    for comparison in result["comparisons"]:
        for metric, stats in comparison["metrics"].items():
            sig = stats["low"] > 0 or stats["high"] < 0
            rows.append(f"<tr><td>{esc(comparison['a'])} − {esc(comparison['b'])}</td><td>{esc(metric)}</td>"
                        f"<td>{stats['a']:.3f}</td><td>{stats['b']:.3f}</td><td>{stats['diff']:+.3f}</td>"
                        f'<td class="ci{" sig" if sig else ""}">[{stats["low"]:+.3f}, {stats["high"]:+.3f}]'
                        f'{" *" if sig else ""}</td></tr>')
    return (f'<table id="compare-table"><thead><tr><th>A − B</th><th>metric</th><th>A</th><th>B</th><th>A − B</th>'
            f'<th>{level} CI</th></tr></thead><tbody>{"".join(rows)}</tbody></table>'
            f'<p class="sub">* the {level} interval of the difference excludes 0 (paired bootstrap: '
            f'{esc(result.get("num_resamples", "?"))} resamples of {esc(result.get("num_tasks", "?"))} tasks)</p>')


def grid_table(anchor: str, rows: Sequence[Mapping[str, Any]]) -> str:
    """Rows of values under the union of their keys (best-of-k points, sample-episode table rows)."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    head = "".join(f"<th>{esc(column)}</th>" for column in columns)
    body = "".join("<tr>" + "".join(f"<td>{number(row.get(c))}</td>" for c in columns) + "</tr>" for row in rows)
    return f'<table id="{esc(anchor)}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def conversation(trajectory: Trajectory, palette: Palette, *, open_: bool = False) -> str:
    """One episode: a summary line, then each turn in its speaker's colour (a tool result in its tool's)."""
    items, calls = [], []
    for turn in trajectory.turns:
        if turn.is_agent:
            calls = [call.name for call in turn.action.tool_calls] if turn.action else []
        items.append(_turn(turn, palette, calls))
    facts = [f"task {trajectory.task_id}", trajectory.source, outcome_text(trajectory.outcome)]
    if trajectory.rewards:  # scored episodes (the teacher's dataset is not)
        facts.append(f"reward {trajectory.reward:.3f}")
    facts += [f"{len(trajectory.turns)} turns", "valid format" if trajectory.format_valid else "invalid format"]
    summary = " · ".join(esc(fact) for fact in facts)
    return (f'<details class="episode"{" open" if open_ else ""}><summary>{summary}</summary>'
            f'<ol class="conversation">{"".join(items)}</ol></details>')


def _turn(turn: Turn, palette: Palette, calls: Sequence[str]) -> str:
    colour = palette.role(turn.role)
    side = "agent" if turn.is_agent else "env"
    head = esc(turn.role)
    if turn.is_agent:
        head += f'<span class="reward">reward {turn.reward:g}</span>'
    body = _tool_blocks(turn.text, palette, calls) if turn.role == "tool" else _text(turn.text)
    errors = "".join(f"<li>{esc(error)}</li>" for error in turn.errors)
    body += f'<ul class="errors">{errors}</ul>' if errors else ""
    if turn.role == "system":  # the long instructions: folded
        body = f"<details><summary>{len(turn.text)} characters</summary>{body}</details>"
    return (f'<li class="turn {side}" data-role="{esc(turn.role)}" style="--c:{colour}">'
            f'<div class="who">{head}</div>{body}</li>')


def _text(text: str) -> str:
    return '<pre class="text">' + TAGS.sub(r'<span class="tag">&lt;\1\2&gt;</span>', esc(text)) + "</pre>"


def _tool_blocks(text: str, palette: Palette, calls: Sequence[str]) -> str:
    """A tool turn's ``<tool_response>`` blocks, each under the name of the call it answers when the
    agent's calls and the responses pair up one to one (else as one block of text)."""
    results = TOOL_RESPONSE.findall(text)
    if not results or len(results) != len(calls) or TOOL_RESPONSE.sub("", text).strip():
        return _text(text)
    return "".join(f'<div class="tool-block" data-tool="{esc(name)}" style="--c:{palette.tool(name)}">'
                   f'<div class="who">tool: {esc(name)}</div>{_text(result)}</div>'
                   for name, result in zip(calls, results))
