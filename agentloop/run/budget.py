"""The first prompt, filled in order of value under a token cap (models.yaml `first_prompt_tokens`).

A small local model reads a prompt at some 25 tokens a second on a laptop CPU, so the first prompt
is what a run waits on. In order of value: the failing assertion and traceback lines, the code under
test, the failing test function rather than its whole file, outlines, the repository's file list
last. A part that does not fit is shortened rather than dropped (a window around the line the
traceback names, with the definition's signature; an outline to its rows nearest the shown lines),
so the parts of lower value after it give way. Room for a short outline of the code under test is
held back from everything ranked below it; the code under test itself, ranked above it, may take
that room when it fits whole in it or nothing of it fits otherwise (then the outline is left out).
The failing output keeps at least some 120 tokens even when that passes the cap. Without a cap
everything found is shown.

Tokens are estimated (`estimate_tokens`), deliberately high: exact counting needs litellm and, for
local models, a tokenizer download, and this runs before any model call. The provider's own count
of the first prompt is recorded too, once the first reply arrives.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from agentloop.run.context import TEST_FUNCTION, Part
from agentloop.workspace.guard import TEST_PATH

WORD_TOKENS = 1.2  # tokens of a word of up to 6 letters (longer words: in proportion)
NEWLINE_TOKENS = 0.7  # tokens of a line break with the indentation after it
FILE_LIST_MAX = 300
MIN_LINES = 3  # a part shortened to fewer lines than this is left out instead
MIN_OUTLINE_ROWS = 6  # the outline of the code under test keeps at least this many definitions
TEMPLATE_OVERHEAD = 40  # the templates' own headings and fences, kept free under the cap
OUTPUT_FLOOR = 120  # the failing output keeps at least this many tokens, even past the cap
_NOISE = re.compile(r"^(=+ test session starts =+|=+ short test summary info =+|=+ \d+ (failed|passed|error).* in "
                    r"[\d.]+s.*=+|\d+ (failed|passed|error).* in [\d.]+s"
                    r"|platform |cachedir:|rootdir:|configfile:|plugins:|collect(ed|ing) "
                    r"|[\w/.-]+\.py [.sFEx]+\s*(\[\s*\d+%\])?$|\s*\[\s*\d+%\]$)")
_SUMMARY_LINE = re.compile(r"^(FAILED|ERROR) ")
_DETAIL_LINE = re.compile(r"^E(\s{8,}|\s*$)")  # pytest's explanation under an assertion (`E        +  where`)
_KEY_LINE = re.compile(r"^(E\s|>\s|FAILED|ERROR|\S+:\d+:|Traceback|\s*File \"|.*(Error|Exception|assert))")


_PIECE = re.compile(r"[A-Za-z_]+|\d|[^\sA-Za-z_\d]+|\s+")


def estimate_tokens(text: str) -> int:
    """A deliberately high guess at a BPE tokenizer's count: every digit is a token of its own (Qwen's
    and Llama 3's tokenizers split numbers into digits), a word about one token per 5 letters, a run
    of punctuation about the square root of its length, a line break most of a token; non-ASCII
    characters one each. Calibrated against Qwen2.5-Coder's tokenizer (benchmarks/first_prompt.py):
    within some 15% above or below on code, digit-heavy tests included, where characters / 3.5 was
    up to 30% low."""
    count = 0.0
    for match in _PIECE.finditer(text):
        piece = match.group()
        first = piece[0]
        if first.isdigit():
            count += 1
        elif first.isalpha() or first == "_":
            count += WORD_TOKENS * max(1.0, len(piece) / 6)
        elif first.isspace():
            count += NEWLINE_TOKENS if "\n" in piece else 0
        else:
            count += math.sqrt(len(piece))
    return math.ceil(count + len(text) - len(text.encode("ascii", "ignore")))  # + the non-ASCII characters


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
    budget = max_tokens
    out_text = text
    for _ in range(4):  # the `left out` markers and line breaks cost too: cut again by the overshoot
        out_text = _keep_lines(lines, budget)
        over = estimate_tokens(out_text) - max_tokens
        if over <= 0 or budget <= 0:
            break
        budget -= over
    return out_text


def _ranked(lines: list[str]) -> list[int]:
    """Line indexes in the order they are kept, each group from the end: the assertion and traceback
    lines (a repeat of one already ranked, as 40 tests failing alike give, counts as any other line),
    the assertion's explanation lines, pytest's FAILED/ERROR summary lines, then the rest."""
    first: list[int] = []
    details: list[int] = []
    summary: list[int] = []
    rest: list[int] = []
    seen: set[str] = set()
    for i in reversed(range(len(lines))):
        line = lines[i]
        if _SUMMARY_LINE.match(line):
            summary.append(i)
        elif _KEY_LINE.match(line) and line.strip() not in seen:
            seen.add(line.strip())
            (details if _DETAIL_LINE.match(line) else first).append(i)
        else:
            rest.append(i)
    return first + details + summary + rest


def _keep_lines(lines: list[str], budget: int) -> str:
    """The lines ranked by `_KEY_LINE` (from the end) that cost at most `budget`, runs of the others
    each replaced by one `left out` marker."""
    keep: set[int] = set()
    used = 0
    for i in _ranked(lines):
        cost = estimate_tokens(lines[i]) + 1
        if used + cost > budget:
            continue
        keep.add(i)
        used += cost
    return "\n".join(collapse(lines, keep, lambda n: f"[... {n} line{'s' if n > 1 else ''} left out ...]"))


def collapse(lines: Sequence[str], keep: set[int], marker: Callable[[int], str]) -> list[str]:
    """`lines` with each run of the lines not in `keep` replaced by one `marker(count)` line; a blank
    line does not end a run (it would leave two markers where one says it all)."""
    out: list[str] = []
    skipped = 0
    for i, line in enumerate(lines):
        if i in keep and (line.strip() or not skipped):
            if skipped:
                out.append(marker(skipped))
                skipped = 0
            out.append(line)
        else:
            skipped += 1
    if skipped:
        out.append(marker(skipped))
    return out


@dataclass
class Filled:
    """What goes into the first prompt, and what it costs."""

    outputs: list[str]  # the failing checks' outputs, trimmed, in the order given
    parts: list[Part]  # parts of files, grouped by file in order of value
    file_list: str
    tokens: int  # estimated, of everything counted (fixed text included)
    left_out: list[str] = field(default_factory=list)  # labels of parts that did not fit


def fill(parts: Sequence[Part], outputs: Sequence[str], repo_files: Sequence[str], *, fixed: str = "",
         cap: int | None = None, wholes: Mapping[str, Part] | None = None) -> Filled:
    """Choose what the first prompt shows. `fixed`: the text that is there anyway (system prompt, task);
    `wholes`: short files that may be shown whole in place of their parts, when that fits.

    Parts are taken in order of value; one that does not fit whole is shortened to what is left (a
    window around the line the failing output names, or the head of a definition; an outline to the
    rows nearest the shown lines), so the lower-value parts after it give way, not it. Room for a
    short outline of the code under test is held back until its turn; only a piece of the code under
    test that fits whole in it, or would not fit at all otherwise, may take it.
    """
    wholes = wholes or {}
    if cap is not None:
        cap -= TEMPLATE_OVERHEAD
    used = estimate_tokens(fixed)
    remaining = None if cap is None else max(0, cap - used)
    # 1. The failing output: at most 40% of what is left, so the code under test gets room.
    share = None if remaining is None else max(OUTPUT_FLOOR, remaining * 2 // 5) // max(1, len(outputs))
    ordered = sorted(parts, key=lambda p: p.value)
    key = key_definition(ordered)
    if share is not None and remaining is not None and key is not None:
        # The definition the failure points into comes whole when the output can give way for it: the
        # function format asks for whole definitions, and a model shown half of one writes half of one.
        room = (remaining - _cost(key)) // max(1, len(outputs)) - 12
        if OUTPUT_FLOOR <= room < share:  # (when it would not fit even so, the output is not cut for it)
            share = room
    trimmed = [trim_output(o, share) for o in outputs]
    used += sum(estimate_tokens(o) + 12 for o in trimmed)
    # 2-4. Parts by value: code under test, then the failing test functions, then outlines.
    held = _held_outline(ordered)
    # its rows near the shown lines may be longer than its first rows: half as much again
    reserve = 0 if held is None or cap is None else _cost(_shrink_outline(held, [], MIN_OUTLINE_ROWS)) * 3 // 2
    chosen: list[Part] = []
    left_out: list[str] = []
    whole_done: set[str] = set()
    for part in ordered:
        if part.path in whole_done:
            continue
        if part is held:
            reserve = 0
        whole = wholes.get(part.path) if part.kind != "whole" else None
        if whole is not None:
            cost = _cost(whole) - sum(_cost(p) for p in chosen if p.path == part.path)
            if cap is None or used + reserve + cost <= cap:
                chosen = [p for p in chosen if p.path != part.path] + [whole]
                whole_done.add(part.path)
                used += cost
                continue
        if part.kind == "whole":
            whole_done.add(part.path)
        room = None if cap is None else cap - used - reserve
        if room is not None and part.value < TEST_FUNCTION and room < _cost(part) <= room + reserve:
            room += reserve  # the code under test comes before the outline: whole, it may take the held room
        if room is not None and _cost(part) > room:
            shown = [(p.start, p.end) for p in chosen if p.path == part.path and p.kind == "lines"]
            pieces = _shrink(part, room, shown)
            if not pieces and part.value < TEST_FUNCTION:  # nothing of it fits beside the outline: it goes first
                pieces = _shrink(part, room + reserve, shown)
            if not pieces:
                left_out.append(part.label)
                continue
            if part.kind != "outline":
                left_out.append(f"{part.label}, shortened to "
                                + " and ".join(p.label.removeprefix(part.path).strip() for p in pieces))
        else:
            pieces = [part]
        chosen += pieces
        used += sum(_cost(p) for p in pieces)
    # 5. The file list last, as much of it as fits.
    listing: list[str] = []
    for rel in list(repo_files)[:FILE_LIST_MAX]:
        cost = estimate_tokens(rel) + 1
        if cap is not None and used + cost > cap:
            left_out.append(f"{len(repo_files) - len(listing)} of the repository's {len(repo_files)} file names")
            break
        listing.append(rel)
        used += cost
    if len(listing) < len(repo_files) and not (left_out and left_out[-1].endswith(" file names")):
        left_out.append(f"{len(repo_files) - len(listing)} of the repository's {len(repo_files)} file names")
    return Filled(trimmed, _grouped(chosen), "\n".join(listing), used + (TEMPLATE_OVERHEAD if cap is not None else 0),
                  left_out)


def key_definition(ordered: Sequence[Part]) -> Part | None:
    """The whole definition of the code under test the failure points into first (a traceback frame
    in it, or the failing test calling it), if a part holds one."""
    return next((p for p in ordered if p.value < TEST_FUNCTION and p.whole_definition), None)


def _held_outline(ordered: Sequence[Part]) -> Part | None:
    """The outline of the code under test (the best non-test file, if it has one), whose room is held back."""
    for part in ordered:
        if not TEST_PATH.search(part.path):
            return next((p for p in ordered if p.path == part.path and p.kind == "outline"), None)
    return None


def _shrink(part: Part, room: int, shown: Sequence[tuple[int, int]]) -> list[Part]:
    """`part` cut to cost at most `room`: an outline to fewer rows; lines to a window around the line
    the failing output names (growing below it twice as fast as above), with the definition's first
    lines (its signature) kept as a part of their own when the window does not reach them, or to its
    head. Empty when not even a few lines fit."""
    if part.kind == "outline":
        for rows in range(part.text.count("\n") + 1, 0, -1):
            smaller = _shrink_outline(part, shown, rows)
            if _cost(smaller) <= room:
                return [smaller]
        return []
    lines = part.text.split("\n")
    focus = part.focus - part.start if part.focus is not None and part.start <= part.focus <= part.end else 0
    window = _window(part, lines, focus, room)
    if window is None:
        return []
    if window[0] > 0:
        signature = _signature(lines)
        if signature < focus:
            head = _slice(part, lines, 0, signature - 1)
            rest = _window(part, lines, focus, room - _cost(head))
            if rest is not None:
                return [head, _slice(part, lines, *rest)] if rest[0] > signature else \
                    [_slice(part, lines, 0, rest[1])]
    return [_slice(part, lines, *window)]


def _window(part: Part, lines: list[str], focus: int, room: int) -> tuple[int, int] | None:
    """The widest lines lo..hi (0-based, inclusive) around `focus` that cost at most `room`, if at least
    `MIN_LINES`."""
    lo = hi = focus
    best: tuple[int, int] | None = None
    while _cost(_slice(part, lines, lo, hi)) <= room:
        best = (lo, hi)
        if lo == 0 and hi == len(lines) - 1:
            break
        if hi < len(lines) - 1 and (lo == 0 or hi - focus <= 2 * (focus - lo)):
            hi += 1
        else:
            lo -= 1
    if best is None or best[1] - best[0] + 1 < min(MIN_LINES, len(lines)):
        return None
    return best


def _signature(lines: list[str]) -> int:
    """How many first lines a definition's signature takes (up to its `:` or `{`; at most 4)."""
    for n, text in enumerate(lines[:4], 1):
        if text.rstrip().endswith((":", "{")):
            return n
    return 1


def _slice(part: Part, lines: list[str], lo: int, hi: int) -> Part:
    return replace(part, kind="lines", start=part.start + lo, end=part.start + hi, text="\n".join(lines[lo:hi + 1]),
                   why=f"{part.why} (shortened to fit)".strip())


_ROW = re.compile(r"^\s*(\d+): ")
_SKIPPED = re.compile(r"^\s*\[(\d+) more definitions?, lines (\d+)-(\d+)\]$")


def _shrink_outline(part: Part, shown: Sequence[tuple[int, int]], rows: int) -> Part:
    """An outline cut to the `rows` definitions nearest the `shown` line ranges (the file's head when
    none); each run of the others becomes one `[N more definitions, lines A-B]` line."""
    entries: list[tuple[int, int, int, str]] = []  # (first line, last line, definitions, text)
    for row in part.text.split("\n"):
        if (m := _SKIPPED.match(row)):
            entries.append((int(m.group(2)), int(m.group(3)), int(m.group(1)), row))
        elif (m := _ROW.match(row)):
            entries.append((int(m.group(1)), int(m.group(1)), 1, row))
    defs = [i for i, e in enumerate(entries) if e[3] and not _SKIPPED.match(e[3])]

    # the definition each shown range starts in comes first, then the rows nearest the shown lines
    heads = {max((i for i in defs if entries[i][0] <= s), default=-1) for s, _ in shown}

    def distance(i: int) -> int:
        line = entries[i][0]
        if i in heads:
            return -1
        return min((0 if s <= line <= e else min(abs(line - s), abs(line - e)) for s, e in shown), default=line)

    keep = set(sorted(defs, key=distance)[:rows])
    out: list[str] = []
    run: list[tuple[int, int, int, str]] = []

    def flush() -> None:
        if run:
            n = sum(e[2] for e in run)
            out.append(f"      [{n} more definition{'s' if n > 1 else ''}, lines {run[0][0]}-{run[-1][1]}]")
            run.clear()

    for i, entry in enumerate(entries):
        if i in keep:
            flush()
            out.append(entry[3])
        else:
            run.append(entry)
    flush()
    return replace(part, text="\n".join(out))


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
