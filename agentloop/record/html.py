"""One self-contained HTML page of a run: inline CSS, no script, nothing fetched from anywhere.

Long outputs sit in <details> elements, so they fold without JavaScript.
"""

from __future__ import annotations

from html import escape

from agentloop.outcome import Outcome
from agentloop.record.runlog import Run
from agentloop.record.transcript import Block, blocks
from agentloop.words import plural

FOLD_LINES = 30

CSS = """
:root { --ok: #1a7f37; --fail: #cf222e; --info: #0969da; --bg: #f6f8fa; --line: #d0d7de; }
* { box-sizing: border-box; }
body { font: 15px/1.5 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 0; color: #1f2328;
       background: #fff; }
main { max-width: 1100px; margin: 0 auto; padding: 24px; }
h1 { font-size: 22px; margin: 0 0 8px; }
.meta { color: #57606a; font-size: 13px; }
.meta span { display: inline-block; margin-right: 14px; }
.card { border: 1px solid var(--line); border-left: 5px solid var(--info); border-radius: 6px; margin: 12px 0;
        background: #fff; }
.card.ok { border-left-color: var(--ok); } .card.fail { border-left-color: var(--fail); }
.card > .title { padding: 8px 12px; background: var(--bg); border-bottom: 1px solid var(--line);
                 font-weight: 600; display: flex; justify-content: space-between; gap: 12px; flex-wrap: wrap; }
.card.assistant > .title { background: #eef6ff; } .card.feedback > .title { background: #fff8e5; }
.kind { text-transform: uppercase; font-size: 11px; letter-spacing: .06em; color: #57606a; margin-right: 8px; }
pre { margin: 0; padding: 10px 12px; overflow-x: auto; white-space: pre-wrap; word-break: break-word;
      font: 12.5px/1.45 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
details > summary { cursor: pointer; padding: 6px 12px; color: var(--info); font-size: 13px; }
.add { background: #dafbe1; color: #116329; display: block; }
.del { background: #ffebe9; color: #82071e; display: block; }
.hunk { color: #8250df; display: block; } .file { font-weight: 700; display: block; }
.turn-heading { margin: 28px 0 4px; padding-top: 10px; border-top: 2px solid var(--line); font-size: 17px; }
.badge { padding: 2px 10px; border-radius: 12px; color: #fff; font-size: 13px; background: var(--info); }
.badge.ok { background: var(--ok); } .badge.fail { background: var(--fail); }
"""


def render_html(run: Run) -> str:
    items = blocks(run)
    header, rest = items[0], items[1:]
    footer = run.footer
    badge_class = "ok" if run.outcome == Outcome.ACCEPTED else "fail"
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>agentloop run {escape(run.run_id)}</title><style>{CSS}</style></head><body><main>",
        f'<h1>{escape(_one_line(header.title, 140))} '
        f'<span class="badge {badge_class}">{escape(run.outcome)}</span></h1>',
        '<div class="meta">' + "".join(f"<span>{escape(m)}</span>" for m in header.meta) + "</div>",
    ]
    if footer:
        totals = footer.get("totals") or {}
        summary = [f"reward {footer.get('reward')}", plural(totals.get('turns', 0), 'turn'),
                   f"{totals.get('model_calls', 0)} model calls",
                   f"{totals.get('prompt_tokens', 0) + totals.get('completion_tokens', 0)} tokens",
                   f"${totals.get('cost_usd', 0):.4f}", f"{footer.get('duration_s', 0):.1f}s"]
        parts.append('<div class="meta">' + "".join(f"<span>{escape(s)}</span>" for s in summary) + "</div>")
    if header.body:
        parts.append(f"<pre>{escape(header.body)}</pre>")
    turn = 0
    for block in rest:
        if block.turn and block.turn != turn:
            turn = block.turn
            parts.append(f'<h2 class="turn-heading">Turn {turn}</h2>')
        parts.append(_card(block))
    parts.append("</main></body></html>")
    return "\n".join(parts) + "\n"


def _card(block: Block) -> str:
    title = (f'<div class="title"><span><span class="kind">{escape(block.kind)}</span>{escape(block.title)}</span>'
             f'<span class="meta">{" · ".join(escape(m) for m in block.meta)}</span></div>')
    body = ""
    if block.body:
        inner = _diff_html(block.body) if block.is_diff else escape(block.body)
        lines = block.body.count("\n") + 1
        if block.foldable and lines > FOLD_LINES or block.kind == "system":
            body = f"<details><summary>show {lines} lines</summary><pre>{inner}</pre></details>"
        else:
            body = f"<pre>{inner}</pre>"
    return f'<section class="card {escape(block.kind)} {escape(block.status)}">{title}{body}</section>'


def _diff_html(text: str) -> str:
    out = []
    for line in text.splitlines():
        cls = ("file" if line.startswith(("+++", "---", "diff --git")) else "add" if line.startswith("+")
               else "del" if line.startswith("-") else "hunk" if line.startswith("@@") else "")
        out.append(f'<span class="{cls}">{escape(line)}</span>' if cls else escape(line) + "\n")
    return "".join(out)


def _one_line(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
