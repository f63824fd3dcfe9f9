"""The first prompt, filled in order of value under a token cap (models.yaml `first_prompt_tokens`).

A small local model reads a prompt at some 25 tokens a second on a laptop CPU, so the first prompt
is what a run waits on. In order of value: the failing assertion and traceback lines, the code under
test, the failing test function rather than its whole file, outlines, the repository's file list
last; adding stops when the cap is reached. Without a cap everything found is shown.

Tokens are estimated as characters / 3.5 (code and English with a BPE tokenizer run at 3 to 4
characters a token): exact counting needs litellm and, for local models, a tokenizer download,
and this runs before any model call. The provider's own count of the first prompt is recorded
too, once the first reply arrives.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from agentloop.run.context import Part

CHARS_PER_TOKEN = 3.5
FILE_LIST_MAX = 300
TEMPLATE_OVERHEAD = 40  # the templates' own headings and fences, kept free under the cap
_NOISE = re.compile(r"^(=+ test session starts =+|platform |cachedir:|rootdir:|configfile:|plugins:|collect(ed|ing) "
                    r"|[\w/.-]+\.py [.sFEx]+\s*(\[\s*\d+%\])?$|\s*\[\s*\d+%\]$)")
_KEY_LINE = re.compile(r"^(E\s|>\s|FAILED|ERROR|\S+:\d+:|Traceback|\s*File \"|.*(Error|Exception|assert))")


def estimate_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def trim_output(output: str, max_tokens: int | None) -> str:
    """A failing check's output cut to `max_tokens`: pytest's session header and progress lines go
    first; then the assertion (`E` lines), the traceback's frames and the summary are kept, in order,
    before other lines, and the end of the output before its start."""
    if max_tokens is None or estimate_tokens(output) <= max_tokens:
        return output
    lines = [ln for ln in output.splitlines() if not _NOISE.match(ln)]
    text = "\n".join(lines)
    if estimate_tokens(text) <= max_tokens:
        return text
    budget = int(max_tokens * CHARS_PER_TOKEN)
    keep: set[int] = set()
    used = 0
    ranked = [i for i in reversed(range(len(lines))) if _KEY_LINE.match(lines[i])] + \
             [i for i in reversed(range(len(lines))) if not _KEY_LINE.match(lines[i])]
    for i in ranked:
        cost = len(lines[i]) + 1
        if used + cost > budget:
            continue
        keep.add(i)
        used += cost
    out: list[str] = []
    skipped = 0
    for i, line in enumerate(lines):
        if i in keep:
            if skipped:
                out.append(f"[... {skipped} line{'s' if skipped > 1 else ''} left out ...]")
                skipped = 0
            out.append(line)
        else:
            skipped += 1
    if skipped:
        out.append(f"[... {skipped} line{'s' if skipped > 1 else ''} left out ...]")
    return "\n".join(out)


@dataclass
class Filled:
    """What goes into the first prompt, and what it costs."""

    outputs: list[str]  # the failing checks' outputs, trimmed, in the order given
    parts: list[Part]  # parts of files, grouped by file in order of value
    file_list: str
    tokens: int  # estimated, of everything counted (fixed text included)
    left_out: list[str] = field(default_factory=list)  # labels of parts that did not fit

    @property
    def partial_files(self) -> set[str]:
        """Files shown only in part: a whole-file reply to them would have to invent the rest."""
        whole = {p.path for p in self.parts if p.kind == "whole"}
        return {p.path for p in self.parts if p.path not in whole}


def fill(parts: Sequence[Part], outputs: Sequence[str], repo_files: Sequence[str], *, fixed: str = "",
         cap: int | None = None, wholes: Mapping[str, Part] | None = None) -> Filled:
    """Choose what the first prompt shows. `fixed`: the text that is there anyway (system prompt, task);
    `wholes`: short files that may be shown whole in place of their parts, when that fits.

    A part that does not fit is left out and the next one tried, so a long function does not keep
    out a short one.
    """
    wholes = wholes or {}
    if cap is not None:
        cap -= TEMPLATE_OVERHEAD
    used = estimate_tokens(fixed)
    remaining = None if cap is None else max(0, cap - used)
    # 1. The failing output: at most 40% of what is left, so the code under test gets room.
    share = None if remaining is None else max(120, remaining * 2 // 5) // max(1, len(outputs))
    trimmed = [trim_output(o, share) for o in outputs]
    used += sum(estimate_tokens(o) + 12 for o in trimmed)
    # 2-4. Parts by value: code under test, then the failing test functions, then outlines.
    chosen: list[Part] = []
    left_out: list[str] = []
    whole_done: set[str] = set()
    for part in sorted(parts, key=lambda p: p.value):
        if part.path in whole_done:
            continue
        whole = wholes.get(part.path) if part.kind != "whole" else None
        if whole is not None:
            cost = _cost(whole) - sum(_cost(p) for p in chosen if p.path == part.path)
            if cap is None or used + cost <= cap:
                chosen = [p for p in chosen if p.path != part.path] + [whole]
                whole_done.add(part.path)
                used += cost
                continue
        if part.kind == "whole":
            whole_done.add(part.path)
        if cap is not None and used + _cost(part) > cap:
            left_out.append(part.label)
            continue
        chosen.append(part)
        used += _cost(part)
    # 5. The file list last, as much of it as fits.
    listing: list[str] = []
    for rel in list(repo_files)[:FILE_LIST_MAX]:
        cost = estimate_tokens(rel) + 1
        if cap is not None and used + cost > cap:
            left_out.append(f"{len(repo_files) - len(listing)} of the repository's {len(repo_files)} file names")
            break
        listing.append(rel)
        used += cost
    return Filled(trimmed, _grouped(chosen), "\n".join(listing), used + (TEMPLATE_OVERHEAD if cap is not None else 0),
                  left_out)


def _cost(part: Part) -> int:
    return estimate_tokens(part.text) + estimate_tokens(part.label) + 4


def _grouped(parts: list[Part]) -> list[Part]:
    """Parts of the same file together (files in order of their best part), lines in order, outline last."""
    order = list(dict.fromkeys(p.path for p in sorted(parts, key=lambda p: p.value)))
    out: list[Part] = []
    for rel in order:
        mine = [p for p in parts if p.path == rel]
        out += sorted(mine, key=lambda p: (p.kind == "outline", p.start))
    return out
