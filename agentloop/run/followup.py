"""The messages after the first, under the same token cap as the first (models.yaml `first_prompt_tokens`).

After an applied edit the failing output can be long (a broken helper fails every test: 12,028
characters in tabulate, a 4,890-token message that took a CPU server 136 s to read). The cap that
holds for the first prompt holds for each new message too: the failing output is trimmed around its
assertion and traceback lines (`budget.trim_output`), the outline of a changed file cut to the rows
nearest the changed code, then dropped; the changed code itself (the model's own edit, short) is kept.
The failing output keeps at least `budget.OUTPUT_FLOOR` tokens.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from agentloop.run.budget import OUTPUT_FLOOR, collapse, estimate_tokens, trim_output
from agentloop.run.feedback import ShownFile

Render = Callable[[list[dict[str, Any]], list[ShownFile]], str]
ROUNDS = 4  # renders at most, each tighter by the last one's overshoot
_ROW = re.compile(r"^\s*(\d+): ")
_LINES = re.compile(r" lines (\d+)-(\d+) of ")


def fit(render: Render, checks: list[dict[str, Any]], files: Sequence[ShownFile], cap: int | None) -> str:
    """`render(checks, files)`, cut to `cap` estimated tokens when it is over (see the module docstring)."""
    text = render(checks, list(files))
    if cap is None or estimate_tokens(text) <= cap:
        return text
    failing = [i for i, c in enumerate(checks) if not c["passed"] and c["output"]]
    bare = [dict(c, output="") if i in failing else c for i, c in enumerate(checks)]
    code = [f for f in files if not f.outline]
    outlines = [f for f in files if f.outline]
    skeleton = estimate_tokens(render(bare, code))
    room = cap - skeleton  # for the failing outputs and the outlines
    outline_cost = sum(estimate_tokens(f.content) + 8 for f in outlines)
    # the outputs first, down to half the room when the outlines want the rest, then to their floor
    share = max(room - outline_cost, room // 2)
    for _ in range(ROUNDS):
        each = max(OUTPUT_FLOOR, share // max(1, len(failing)))
        trimmed = [dict(c, output=trim_output(c["output"], each)) if i in failing else c for i, c in enumerate(checks)]
        left = cap - estimate_tokens(render(trimmed, code))
        shown = _outlines(outlines, code, left)
        text = render(trimmed, _in_order(files, shown))
        over = estimate_tokens(text) - cap
        if over <= 0 or each <= OUTPUT_FLOOR:
            break
        share -= over
    return text


def _in_order(files: Sequence[ShownFile], outlines: list[ShownFile]) -> list[ShownFile]:
    """The files as given, outlines swapped for their shortened versions (or left out)."""
    short = {f.path: f for f in outlines}
    return [short[f.path] if f.outline else f for f in files if not f.outline or f.path in short]


def _outlines(outlines: list[ShownFile], code: list[ShownFile], room: int) -> list[ShownFile]:
    """Each outline cut to the rows nearest its file's shown code that fit in `room` (shared in
    order); one with fewer than a few rows left is dropped."""
    out: list[ShownFile] = []
    for f in outlines:
        near = [int(m.group(1)) for c in code if c.path == f.path and (m := _LINES.search(c.title))]
        rows = f.content.split("\n")
        numbered = [i for i, r in enumerate(rows) if _ROW.match(r)]
        if estimate_tokens(f.content) + 8 <= room:
            out.append(f)
            room -= estimate_tokens(f.content) + 8
            continue
        order = sorted(numbered, key=lambda i: min((abs(int(_ROW.match(rows[i]).group(1)) - n) for n in near),
                                                   default=i))
        keep: set[int] = set()
        cost = 12
        for i in order:
            step = estimate_tokens(rows[i]) + 1
            if cost + step > room:
                break
            keep.add(i)
            cost += step
        if len(keep) < 3:
            continue
        text = collapse(rows, keep, lambda n: f"      [{n} more rows]")
        shortened = replace(f, content="\n".join(text))
        out.append(shortened)
        room -= estimate_tokens(shortened.content) + 8
    return out
