"""Find the one place a search block means, on a ladder of increasingly forgiving comparisons.

Rungs, each tried only if the previous found nothing: exact; trailing whitespace ignored;
indentation shifted by a uniform amount; blank lines ignored; `...` elision lines; Unicode
punctuation normalised. Every rung demands a unique match. Several matches are resolved only by a
line-number hint that singles one out; otherwise the edit is refused as ambiguous. There is no
similarity threshold anywhere: a wrong placement is worse than a refusal.

Lines that the search and replace texts share (context) are written back from the file itself, so
forgiven differences in them (spaces, quotes, skipped blank lines) never leak into the result.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

# Punctuation that chat front-ends and weak models substitute for ASCII.
_UNICODE_MAP = {
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u2033": '"',
    "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-", "\u2015": "-",
    "\u2212": "-", "\u00a0": " ", "\u2007": " ", "\u202f": " ", "\u2009": " ", "\u200a": " ",
    "\u2002": " ", "\u2003": " ", "\u2026": "...", "\u200b": "", "\ufeff": "",
}  # fmt: skip
_UNICODE_TABLE = str.maketrans(_UNICODE_MAP)
_QUOTES = set("\u2018\u2019\u201c\u201d")
_SMART = _QUOTES | {"\u00a0"}
_ELISION = re.compile(r"^\s*(?:(?:#|//|/\*|--)\s*)?(?:\.\.\.|\u2026)(?:\s.*)?$")


def normalise_unicode(text: str) -> str:
    return text.translate(_UNICODE_TABLE)


def is_elision(line: str) -> bool:
    """`...`, `# ...`, `// ... existing code ...`: a line standing for lines left out."""
    return bool(_ELISION.match(line))


def _lead(line: str) -> str:
    return line[: len(line) - len(line.lstrip())]


@dataclass
class Rung:
    name: str
    key: Callable[[str], str]
    indent: bool = False  # compare without leading whitespace, then demand a uniform shift
    skip_blank: bool = False
    elision: bool = False


RUNGS = [
    Rung("exact", lambda s: s),
    Rung("trailing whitespace ignored", str.rstrip),
    Rung("indentation shifted", str.strip, indent=True),
    Rung("blank lines ignored", str.strip, indent=True, skip_blank=True),
    Rung("'...' elision", str.strip, indent=True, skip_blank=True, elision=True),
    Rung("Unicode punctuation normalised", lambda s: normalise_unicode(s).strip(), True, True, True),
]


@dataclass
class Found:
    """Where the edit goes: file lines [start, end) become `new_lines`."""

    start: int
    end: int
    new_lines: list[str]
    rung: str
    notes: list[str] = field(default_factory=list)


@dataclass
class Refused:
    reason: Literal["not_found", "ambiguous", "already_applied"]
    message: str
    candidates: list[int] = field(default_factory=list)  # 1-based first lines, when ambiguous


@dataclass
class _Cand:
    """One way the search text can sit in the file."""

    mapping: dict[int, int]  # search line index -> file line index
    start: int
    end: int
    shift: tuple[str, str] = ("", "")  # (add, remove) leading whitespace for new lines


class _FileIndex:
    """The file's lines keyed per rung, computed lazily (the exact rung usually suffices)."""

    def __init__(self, lines: Sequence[str]):
        self.lines = lines
        self._cache: dict[tuple[Callable, bool], tuple[list[int], list[str]]] = {}

    def keyed(self, rung: Rung) -> tuple[list[int], list[str]]:
        ck = (rung.key, rung.skip_blank)
        if ck not in self._cache:
            if rung.skip_blank:
                idx = [i for i, ln in enumerate(self.lines) if ln.strip()]
                keys = [rung.key(self.lines[i]) for i in idx]
            else:
                idx = list(range(len(self.lines)))
                keys = list(self.lines) if rung.name == "exact" else list(map(rung.key, self.lines))
            self._cache[ck] = (idx, keys)
        return self._cache[ck]


def _uniform_shift(pairs: list[tuple[str, str]]) -> tuple[str, str] | None:
    """For (file line, search line) pairs, the single indentation change between them, if any."""
    add: str | None = None
    rem: str | None = None
    ok_add = ok_rem = True
    for fl, sl in pairs:
        if not fl.strip():
            continue
        fw, sw = _lead(fl), _lead(sl)
        if ok_add:
            if fw.endswith(sw) and (add is None or fw[: len(fw) - len(sw)] == add):
                add = fw[: len(fw) - len(sw)]
            else:
                ok_add = False
        if ok_rem:
            if sw.endswith(fw) and (rem is None or sw[: len(sw) - len(fw)] == rem):
                rem = sw[: len(sw) - len(fw)]
            else:
                ok_rem = False
        if not ok_add and not ok_rem:
            return None
    if ok_add:
        return (add or "", "")
    if ok_rem:
        return ("", rem or "")
    return None


def _segment_cands(index: _FileIndex, rung: Rung, seg: list[str], seg_offset: int) -> list[_Cand]:
    """Every place one run of search lines sits in the file at this rung."""
    fidx, fkeys = index.keyed(rung)
    sidx = [i for i, ln in enumerate(seg) if ln.strip()] if rung.skip_blank else list(range(len(seg)))
    skeys = [rung.key(seg[i]) for i in sidx]
    if not skeys:
        return []
    m = len(skeys)
    first = skeys[0]
    out = []
    for p, k in enumerate(fkeys):
        if k != first or p + m > len(fkeys) or fkeys[p : p + m] != skeys:
            continue
        mapping = {seg_offset + sidx[j]: fidx[p + j] for j in range(m)}
        shift: tuple[str, str] | None = ("", "")
        if rung.indent:
            shift = _uniform_shift([(index.lines[f], seg[s - seg_offset]) for s, f in mapping.items()])
            if shift is None:
                continue
        if rung.skip_blank:
            _pair_blank_runs(mapping, seg, seg_offset, index.lines)
        lo = min(mapping.values())
        hi = max(mapping.values()) + 1
        out.append(_Cand(mapping, lo, hi, shift))
    return out


def _pair_blank_runs(mapping: dict[int, int], seg: list[str], off: int, lines: Sequence[str]) -> None:
    """Where the search has as many blank lines between two matched lines as the file, pair them."""
    keys = sorted(mapping)
    # Blank lines the search starts or ends with take the file's blank lines just outside the run.
    first, last = keys[0], keys[-1]
    f = mapping[first] - 1
    for s in range(first - 1, -1, -1):
        if f < 0 or lines[f].strip() or seg[s].strip():
            break
        mapping[s + off] = f
        f -= 1
    f = mapping[last] + 1
    for s in range(last + 1 - off, len(seg)):
        if f >= len(lines) or lines[f].strip() or seg[s].strip():
            break
        mapping[s + off] = f
        f += 1
    for a, b in zip(keys, keys[1:], strict=False):
        fa, fb = mapping[a], mapping[b]
        s_blank = list(range(a + 1, b))
        f_gap = list(range(fa + 1, fb))
        if s_blank and len(s_blank) == len(f_gap) and all(not lines[f].strip() for f in f_gap):
            for s, f in zip(s_blank, f_gap, strict=True):
                mapping[s] = f


def _split_elided(lines: list[str]) -> list[list[str]] | None:
    segs: list[list[str]] = [[]]
    for ln in lines:
        if is_elision(ln):
            if segs[-1]:
                segs.append([])
        else:
            segs[-1].append(ln)
    if not segs[-1]:
        segs.pop()
    return segs


def _hint_pick(starts: list[int], hint: int | None) -> int | None:
    """Index of the candidate a 1-based line hint singles out, or None.

    The nearest candidate must be within 30 lines of the hint and every other one more than
    three times as far (and at least 10 lines farther): stale numbers are forgiven, a coin toss is not.
    """
    if hint is None or not starts:
        return None
    dist = sorted((abs(s + 1 - hint), i) for i, s in enumerate(starts))
    d1, best = dist[0]
    if d1 > 30:
        return None
    if len(dist) > 1:
        d2 = dist[1][0]
        if d2 <= 3 * d1 or d2 < d1 + 10:
            return None
    return best


def _line_excerpt(lines: Sequence[str], start: int, end: int) -> str:
    start = max(0, start)
    end = min(len(lines), end)
    return "\n".join(f"{i + 1:>5} | {lines[i]}" for i in range(start, end))


def closest_lines(lines: Sequence[str], search: list[str], limit: int = 12) -> str:
    """The stretch of the file most like `search`, numbered, for the model's next attempt."""
    if not lines:
        return "(the file is empty)"
    norm = [normalise_unicode(ln).strip() for ln in lines]
    where: dict[str, list[int]] = {}
    for i, k in enumerate(norm):
        if k:
            where.setdefault(k, []).append(i)
    votes: dict[int, int] = {}
    probes = [(j, normalise_unicode(s).strip()) for j, s in enumerate(search) if s.strip()]
    for j, key in probes:
        hits = where.get(key)
        if hits is None:
            close = difflib.get_close_matches(key, list(where)[:5000], n=1, cutoff=0.75) if j < 6 else []
            hits = where[close[0]] if close else []
        for i in hits[:50]:
            votes[i - j] = votes.get(i - j, 0) + 1
    if not votes:
        return "(no line of the file resembles the search text)"
    best = max(votes, key=lambda k: (votes[k], -k))
    span = min(max(len(search), 3), limit)
    return _line_excerpt(lines, best - 1, best + span + 1)


def _ops(search: list[str], replace: list[str]) -> list[tuple[str, int, int, int, int]]:
    return difflib.SequenceMatcher(None, search, replace, autojunk=False).get_opcodes()


class _Unsafe(Exception):
    """Blank lines the search skipped sit next to inserted lines: where they go is a guess."""

    def __init__(self, line: int, why: str = ""):
        self.line = line
        self.why = why


def _gap_is_safe(ops: list[tuple[str, int, int, int, int]], op_of: dict[int, int], p: int, k: int) -> bool:
    """Whether file lines the search skipped, between search lines p and k, have one sure place.

    Sure: both in unchanged context, or only deletions around, or the gap sits right before a
    replaced run (it stays before the new lines) or right after one (it stays after them).
    Unsure: new lines inserted exactly there, or the gap falls inside a replaced run.
    """
    a, b = op_of[p], op_of[k]
    if a == b:
        tag = ops[a][0]
        return tag in ("equal", "delete")
    if any(ops[x][0] in ("insert", "replace") for x in range(a + 1, b)):
        return False
    return True


def _lay_onto_mapping(
    lines: Sequence[str], cand: _Cand, search: list[str], replace: list[str], fix: Callable[[str], str]
) -> list[str] | None:
    """The new text when the search skipped file lines (blank ones): REPLACE laid onto the file's span.

    The span is read as the model's search lines where they matched, and the file's own lines where the
    search skipped them; REPLACE is then diffed against that. A skipped line that REPLACE keeps comes out
    once, from the file. Returns None when REPLACE does not keep every skipped line (then where they go
    relative to the new lines is decided, or refused, by `_build`).
    """
    mapped = sorted(cand.mapping.items())  # (search line, file line), both increasing
    quoted = {f for _, f in mapped}  # file lines the search quotes (its blank lines included)
    span: list[tuple[str, int | None]] = []  # (search-side text, file line or None), in file order
    skipped = False
    s_prev, f_prev = -1, cand.start - 1
    for s, f in [*mapped, (len(search), cand.end)]:
        extra_s = list(range(s_prev + 1, s))  # search lines unmatched here (blank lines)
        gap = list(range(f_prev + 1, f))  # file lines the search did not match (blank lines)
        pairs = min(len(extra_s), len(gap))
        skipped = skipped or bool(extra_s) or bool(gap)
        for k in range(pairs):  # a blank line of the search stands for one of the file's here
            quoted.add(gap[k])
            span.append((search[extra_s[k]], gap[k]))
        span += [(lines[g], g) for g in gap[pairs:]]
        span += [(search[x], None) for x in extra_s[pairs:]]
        if s < len(search):
            span.append((search[s], f))
        s_prev, f_prev = s, f
    if not skipped:
        return None
    # Trailing spaces are noise in forgiven lines, but say which blank line is which when REPLACE
    # repeats one exactly: try that reading first. If REPLACE's blank lines then fall on blank lines
    # the search quoted rather than on those it skipped, try again with only the skipped ones to match.
    for exact, skipped_only in ((True, False), (False, False), (True, True), (False, True)):
        as_written = {t for t, f in span if f is not None and lines[f] == t and t in replace} if exact else set()
        keys = [t if t in as_written else t.rstrip() for t, _ in span]
        if skipped_only:
            keys = [k if k or (f is not None and f not in quoted) else "\0quoted blank"
                    for k, (_, f) in zip(keys, span, strict=True)]  # fmt: skip
        r_keys = [r if r in as_written else r.rstrip() for r in replace]
        ops = difflib.SequenceMatcher(None, keys, r_keys, autojunk=False).get_opcodes()
        parts: list[list[str]] = []
        for tag, i1, i2, j1, j2 in ops:
            if tag == "equal":
                parts.append([lines[f] for _, f in span[i1:i2] if f is not None])
            elif any(f is not None and f not in quoted for _, f in span[i1:i2]):
                break  # REPLACE drops or rewrites a line the search never quoted
            else:
                parts.append([fix(replace[j]) for j in range(j1, j2)])
        else:
            _check_unique_reading(ops, parts, span, quoted, replace, fix)
            _check_no_phantom_move(ops, span, replace, cand.start)
            return [ln for part in parts for ln in part]
    return None


def _check_no_phantom_move(ops, span, replace: list[str], start: int) -> None:
    """Raise _Unsafe if REPLACE drops a blank line of the search that the file does not have while
    adding blank lines elsewhere: it moves a blank line that is not there, e.g. file `a`, SEARCH
    `a, ""`, REPLACE `"", a`. Applying it would add a blank line that neither text adds."""
    changed = [op for op in ops if op[0] != "equal"]
    drops = any(f is None and not t.strip() for _, i1, i2, _, _ in changed for t, f in span[i1:i2])
    adds = any(not replace[j].strip() for _, _, _, j1, j2 in changed for j in range(j1, j2))
    if drops and adds:
        raise _Unsafe(
            start + 1,
            "the replacement moves a blank line of the search text that the file does not have, so "
            "whether to add a blank line is a guess; copy the file's lines exactly",
        )


def _check_unique_reading(ops, parts: list[list[str]], span, quoted: set[int], replace: list[str], fix) -> None:
    """Raise _Unsafe if REPLACE's blank lines can be read two ways that give different files.

    A skipped file line that REPLACE keeps right next to lines it adds could also be the far side of
    those lines, with REPLACE's blank line being new: e.g. file `a, "", b`, SEARCH `a, b`, REPLACE
    `a, x, "", b`. When both readings give the same text there is nothing to choose.
    """
    laid = [ln for part in parts for ln in part]

    def grows(n: int) -> bool:
        tag, i1, i2, j1, j2 = ops[n]
        return tag == "insert" or (tag == "replace" and j2 - j1 > i2 - i1)

    for n, (tag, i1, i2, j1, _) in enumerate(ops):
        if tag != "equal":
            continue
        files = [(k, f) for k, (_, f) in enumerate(span[i1:i2]) if f is not None]
        for side in (0, -1):
            run: list[int] = []  # positions in this op of the skipped lines at this edge
            for k, f in files if side == 0 else files[::-1]:
                if f in quoted:
                    break
                run.append(k)
            near = n - 1 if side == 0 else n + 1
            if not run or not 0 <= near < len(ops) or not grows(near):
                continue
            other = [list(p) for p in parts]
            gap_lines = [parts[n][files.index((k, span[i1 + k][1]))] for k in sorted(run)]
            for k in run:  # REPLACE's lines there are new; the file's lines go past the added ones
                other[n][files.index((k, span[i1 + k][1]))] = fix(replace[j1 + k])
            other[near] = gap_lines + other[near] if side == 0 else other[near] + gap_lines
            if [ln for part in other for ln in part] != laid:
                raise _Unsafe(min(span[i1 + k][1] for k in run) + 1)


def _build(
    lines: Sequence[str], cand: _Cand, search: list[str], replace: list[str], fix: Callable[[str], str]
) -> list[str]:
    """The new text for one matched run: file lines for context, fixed-up model lines for new ones."""
    laid = _lay_onto_mapping(lines, cand, search, replace, fix)
    if laid is not None:
        return laid
    ops = _ops(search, replace)
    op_of = {i: n for n, op in enumerate(ops) for i in range(op[1], op[2])}
    # Gaps: file lines inside the span that no search line matched (blank lines the model skipped).
    # The model's own blank lines there are interchangeable with them: as many as it deletes go.
    gap_before: dict[int, list[int]] = {}
    prev: int | None = None
    for s in sorted(cand.mapping):
        f = cand.mapping[s]
        if prev is not None and f > cand.mapping[prev] + 1:
            gap = list(range(cand.mapping[prev] + 1, f))
            if not _gap_is_safe(ops, op_of, prev, s):
                raise _Unsafe(gap[0] + 1)
            dropped = sum(1 for x in range(prev + 1, s) if ops[op_of[x]][0] != "equal")
            if dropped > len(gap):
                raise _Unsafe(gap[0] + 1)
            gap_before[s] = gap[dropped:]
        prev = s
    out: list[str] = []
    for tag, i1, i2, j1, j2 in ops:
        for i in range(i1, i2):
            out += [lines[g] for g in gap_before.get(i, ())]
            if tag == "equal" and i in cand.mapping:
                out.append(lines[cand.mapping[i]])
        if tag in ("replace", "insert"):
            out += [fix(replace[j]) for j in range(j1, j2)]
    return out


def _fixer(lines: Sequence[str], cands: list[tuple[_Cand, list[str]]], rung: Rung) -> tuple[Callable, list]:
    """How to adapt the model's new lines to the file: indentation, trailing spaces, punctuation."""
    notes: list[str] = []
    add, rem = cands[0][0].shift
    strip_trailing = False
    fancy: set[str] = set()
    for cand, seg in cands:
        for s, f in cand.mapping.items():
            sl = seg[s] if s < len(seg) else ""
            fl = lines[f]
            if sl != sl.rstrip() and fl == fl.rstrip():
                strip_trailing = True
            fancy |= {c for c in sl if c in _UNICODE_MAP and c not in fl}
    if add:
        notes.append(f"re-indented the new lines by {add!r}")
    if rem:
        notes.append(f"removed {rem!r} of indentation from the new lines")
    smartened = rung.name.startswith("Unicode") and bool(fancy)
    tables: list[dict[int, str]] = []

    def table() -> dict[int, str]:
        # Built only when a new line holds such a character (the file scan costs time).
        if not tables:
            used = set().union(*map(set, lines))
            # Text "smartened" by a chat front-end: undo it in the new lines, except for the
            # characters the file itself uses. Without that evidence, only curly quotes and
            # non-breaking spaces the file never uses are undone.
            if smartened:  # all quotes, what was proven smartened, and what the file never uses
                pool = {c for c in _UNICODE_MAP if c in _QUOTES or c in fancy or c not in used}
            else:
                pool = {c for c in _SMART if c not in used}
            tables.append(str.maketrans({c: _UNICODE_MAP[c] for c in pool}))
        return tables[0]

    def fix(line: str) -> str:
        if strip_trailing:
            line = line.rstrip()
        if any(c in _UNICODE_MAP for c in line):
            line = line.translate(table())
        if not line.strip():
            return line
        if add:
            line = add + line
        elif rem:
            w = _lead(line)
            k = 0
            while k < min(len(w), len(rem)) and w[k] == rem[k]:
                k += 1
            line = line[k:]
        return line

    return fix, notes


def _chains(seg_cands: list[list[_Cand]], limit: int = 2) -> list[list[_Cand]]:
    """Ordered, non-overlapping choices of one candidate per elided segment (at most `limit`)."""
    out: list[list[_Cand]] = []

    def walk(k: int, after: int, acc: list[_Cand]) -> None:
        if len(out) >= limit:
            return
        if k == len(seg_cands):
            out.append(list(acc))
            return
        for c in seg_cands[k]:
            if c.start >= after and (not acc or c.shift == acc[0].shift):
                walk(k + 1, c.end, acc + [c])

    walk(0, 0, [])
    return out


def _filter(cands: list, lines: Sequence[str], anchor: str | None, at_eof: bool, start_of) -> list:
    if at_eof:
        last = len(lines)
        while last > 0 and not lines[last - 1].strip():
            last -= 1
        cands = [c for c in cands if start_of(c, end=True) >= last]
    if anchor and anchor.strip():
        key = normalise_unicode(anchor).strip()
        marks = [i for i, ln in enumerate(lines) if normalise_unicode(ln).strip() == key]
        firsts = []
        for a in marks:
            after = [c for c in cands if start_of(c) > a]
            if after:
                firsts.append(min(after, key=start_of))
        cands = [c for c in cands if any(c is f for f in firsts)]
    return cands


def _realise(
    lines: Sequence[str], chain: list[_Cand], s_segs: list[list[str]], r_segs: list[list[str]], rung: Rung
) -> tuple[list[str], list[str]]:
    """The new lines for a chosen match (one candidate per elided segment), and notes on fixes."""
    fix, notes = _fixer(lines, list(zip(chain, s_segs, strict=True)), rung)
    new: list[str] = []
    for k, (cand, s_seg, r_seg) in enumerate(zip(chain, s_segs, r_segs, strict=True)):
        if k:
            new += list(lines[chain[k - 1].end : cand.start])
        new += _build(lines, cand, s_seg, r_seg, fix)
    return new, notes


def _edge_blanks(xs: Sequence[str]) -> int:
    n = 0
    while n < len(xs) and not xs[n].strip():
        n += 1
    return n


def _edge_is_a_guess(
    op: tuple[str, int, int, int, int], search: list[str], replace: list[str], *, at_end: bool
) -> bool:
    """Whether the file's blank lines just outside the match may sit between the kept lines and the
    new ones rather than being the blank lines REPLACE has at that edge.

    E.g. file `a, "", b`, SEARCH `a`, REPLACE `a, x, ""`: the blank line after `a` may be REPLACE's
    last line (giving `a, x, ""`) or one both texts left out (giving `a, "", x, ""`). It is a guess
    when the edge op adds non-blank lines next to the kept ones: an insert whose line nearest the
    kept text is not blank, or a replacement that adds more non-blank lines than it removes.
    """
    tag, i1, i2, j1, j2 = op
    new = replace[j1:j2]
    if tag == "insert":
        near = new[0] if at_end else new[-1]
        return bool(near.strip())
    if tag == "replace":
        return sum(1 for x in new if x.strip()) > sum(1 for x in search[i1:i2] if x.strip())
    return False


def _absorb_edge_blanks(
    lines: Sequence[str], search: list[str], replace: list[str], start: int, end: int, new: list[str]
) -> tuple[int, int, list[str]]:
    """Blank lines REPLACE has at an edge beyond SEARCH's, where the file already has blank lines just
    outside the match: the search dropped them, so they are the file's own, and come out once.

    Not when that would leave the file as it is (then adding the blank line is the whole edit).
    """
    if not any(x.strip() for x in search) or not any(x.strip() for x in replace):
        return start, end, new  # all blank: which edge its blank lines belong to is unknown
    lo, hi, out = start, end, list(new)
    ops = _ops([x.rstrip() for x in search], [x.rstrip() for x in replace])
    extra = _edge_blanks(replace[::-1]) - _edge_blanks(search[::-1])
    tail = max(0, min(extra, _edge_blanks(lines[hi:]), _edge_blanks(out[::-1])))
    if tail and _edge_is_a_guess(ops[-1], search, replace, at_end=True):
        raise _Unsafe(hi + 1)
    if tail:
        out, hi = out[: len(out) - tail] + list(lines[hi : hi + tail]), hi + tail
    extra = _edge_blanks(replace) - _edge_blanks(search)
    head = min(extra, _edge_blanks(lines[:lo][::-1]), _edge_blanks(out[: len(out) - tail]))
    if head > 0 and _edge_is_a_guess(ops[0], search, replace, at_end=False):
        raise _Unsafe(lo - head + 1)
    if head > 0:
        out, lo = list(lines[lo - head : lo]) + out[head:], lo - head
    if out == list(lines[lo:hi]):
        return start, end, new
    return lo, hi, out


def locate(
    lines: Sequence[str],
    search: list[str],
    replace: list[str],
    *,
    hint: int | None = None,
    anchor: str | None = None,
    at_eof: bool = False,
    _check_applied: bool = True,
) -> Found | Refused:
    """Find where `search` sits in `lines` and what it becomes; or say why not."""
    index = _FileIndex(lines)
    has_elision = any(is_elision(s) for s in search)
    for rung in RUNGS:
        if rung.elision and not has_elision and rung.name == "'...' elision":
            continue
        if rung.elision and has_elision:
            s_segs = _split_elided(search)
            r_segs = _split_elided(replace)
            if not s_segs or r_segs is None or len(s_segs) != len(r_segs):
                continue
            # A run of only blank lines between elisions says nothing about where to look.
            keep = [k for k, (a, b) in enumerate(zip(s_segs, r_segs, strict=True))
                    if any(x.strip() for x in a) or any(x.strip() for x in b)]  # fmt: skip
            s_segs, r_segs = [s_segs[k] for k in keep], [r_segs[k] for k in keep]
            if not s_segs:
                continue
        else:
            s_segs, r_segs = [search], [replace]
        per_seg = [_segment_cands(index, rung, seg, 0) for seg in s_segs]
        if any(not c for c in per_seg):
            continue
        if len(per_seg) > 1 and any(len(c) > 200 for c in per_seg):
            continue  # too common to pair up safely
        chains = [[c] for c in per_seg[0]] if len(per_seg) == 1 else _chains(per_seg, limit=51)

        def start_of(ch: list[_Cand], end: bool = False) -> int:
            return ch[-1].end if end else ch[0].start

        chains = _filter(chains, lines, anchor, at_eof, start_of)
        if not chains:
            continue

        def realise(chain: list[_Cand], rung: Rung = rung, s_segs=s_segs, r_segs=r_segs):
            return _realise(lines, chain, s_segs, r_segs, rung)

        try:
            if 1 < len(chains) <= 50 and len(s_segs) > 1:
                # Elided segments may pair up in several ways that all give the same file (the
                # first segment being unchanged context): then there is nothing to choose between.
                outs = {}
                for ch in chains:
                    new, _ = realise(ch)
                    outs[(*lines[: ch[0].start], *new, *lines[ch[-1].end :])] = ch
                if len(outs) == 1:
                    chains = [min(chains, key=lambda ch: ch[-1].end - ch[0].start)]
            if len(chains) > 1:
                pick = _hint_pick([ch[0].start for ch in chains], hint)
                if pick is None:
                    starts = sorted({ch[0].start + 1 for ch in chains})
                    shown = "\n\n".join(_line_excerpt(lines, s - 1, s + 2) for s in starts[:5])
                    return Refused(
                        "ambiguous",
                        f"the search text matches {len(starts)} places ({rung.name}), at lines "
                        f"{', '.join(map(str, starts[:10]))}; add surrounding lines that single out "
                        f"the one you mean:\n{shown}",
                        starts,
                    )
                chains = [chains[pick]]
                hinted = True
            else:
                hinted = False
            chain = chains[0]
            new, notes = realise(chain)
        except _Unsafe as exc:
            why = exc.why or (
                f"the search text leaves out blank line {exc.line} right next to the change, so where "
                f"the new lines go around it is a guess; include the blank lines exactly"
            )
            return Refused(  # noqa: B012
                "ambiguous",
                why + ":\n" + _line_excerpt(lines, chains[0][0].start, chains[0][-1].end),
            )
        if hinted:
            notes.append(
                f"several places matched; the line number {hint} singled out line {chain[0].start + 1}"
            )
        if rung.name != "exact":
            notes.insert(0, f"matched at line {chain[0].start + 1} with {rung.name}")
        try:
            start, end, new = _absorb_edge_blanks(lines, search, replace, chain[0].start, chain[-1].end, new)
        except _Unsafe as exc:
            return Refused(
                "ambiguous",
                f"the search text leaves out blank line {exc.line} at its edge, and the replacement adds "
                f"lines there, so whether that blank line goes before or after them is a guess; include "
                f"the blank lines exactly:\n" + _line_excerpt(lines, chain[0].start, chain[-1].end + 2),
            )
        return Found(start, end, new, rung.name, notes)
    return _not_found(lines, search, replace, _check_applied, hint=hint, anchor=anchor, at_eof=at_eof)


def _not_found(lines: Sequence[str], search: list[str], replace: list[str], check: bool, **kw) -> Refused:
    if not check:
        return Refused("not_found", "")
    new_only = [r for r in replace if r.strip() and r not in search]
    if new_only:
        again = locate(lines, replace, replace, _check_applied=False, **kw)
        if isinstance(again, Found):
            return Refused(
                "already_applied",
                f"the search text is not in the file, but the replacement text already is, at line "
                f"{again.start + 1}:\n" + _line_excerpt(lines, again.start, min(again.end, again.start + 8)),
            )
    return Refused(
        "not_found",
        "the search text is not in the file. The closest lines are:\n"
        + closest_lines(lines, search)
        + _first_difference(lines, search),
    )


def _first_difference(lines: Sequence[str], search: list[str]) -> str:
    """Point at the first search line that exists nowhere in the file, if there is one."""
    have = {normalise_unicode(ln).strip() for ln in lines}
    for j, s in enumerate(search):
        if s.strip() and not is_elision(s) and normalise_unicode(s).strip() not in have:
            return f"\nLine {j + 1} of your search text does not occur in the file: {s.strip()!r}"
    return ""
