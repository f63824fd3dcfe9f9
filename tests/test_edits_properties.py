"""Property: an edit made from a real change, then perturbed the way models perturb edits, either
applies to exactly the intended file or is refused. Never anything else."""

from __future__ import annotations

import difflib
import re
import tempfile
import textwrap as textwrap_module
from pathlib import Path

import hypothesis.strategies as st
from hypothesis import HealthCheck, example, given, settings

from agentloop.edits import apply_reply
from agentloop.edits.match import Found, locate

SOURCE = Path(textwrap_module.__file__).read_text(encoding="utf-8")
LINES = SOURCE.splitlines(keepends=True)
CODE = [i for i, ln in enumerate(LINES) if ln.strip() and 3 < i < len(LINES) - 3]
CURLY = str.maketrans({'"': "\u201c", "'": "\u2019"})
PERTURB = ["indent", "trailing", "curly", "collapse", "elide", "no_context", "stale_hint", "format"]


@st.composite
def change(draw: st.DrawFn) -> tuple[str, str]:
    i = draw(st.sampled_from(CODE))
    kind = draw(st.sampled_from(["modify", "insert", "delete", "replace"]))
    ln = LINES[i]
    ind = ln[: len(ln) - len(ln.lstrip())]
    new = list(LINES)
    if kind == "modify":
        new[i] = ln.rstrip("\n") + "  # edited\n"
    elif kind == "insert":
        new[i + 1 : i + 1] = [f"{ind}x = 'inserted {k}'\n" for k in range(draw(st.integers(1, 3)))]
    elif kind == "delete":
        del new[i : i + draw(st.integers(1, 3))]
    else:
        new[i : i + 2] = [f'{ind}y = "replaced"\n']
    return SOURCE, "".join(new)


def hunks(old: str, new: str, n: int) -> list[tuple[int, list[tuple[str, str]]]]:
    out: list[tuple[int, list[tuple[str, str]]]] = []
    for d in list(difflib.unified_diff(old.splitlines(), new.splitlines(), lineterm="", n=n))[2:]:
        if d.startswith("@@"):
            out.append((int(d.split()[1][1:].split(",")[0]), []))
        else:
            out[-1][1].append((d[:1], d[1:]))
    return out


def perturb(hl: list[tuple[str, str]], how: set[str]) -> list[tuple[str, str]]:
    if "indent" in how:
        hl = [(t, "  " + x if x.strip() else x) for t, x in hl]
    if "trailing" in how:
        hl = [(t, x + " ") for t, x in hl]
    if "curly" in how:
        hl = [(t, x.translate(CURLY)) for t, x in hl]
    if "collapse" in how:
        hl = [(t, x) for t, x in hl if t != " " or x.strip()]
    if "elide" in how:
        lead = next((k for k, (t, _) in enumerate(hl) if t != " "), 0)
        if lead >= 4:
            hl = hl[:1] + [(" ", "...")] + hl[lead - 1 :]
    return hl


def render(old: str, new: str, how: set[str], context: int) -> str:
    n = 0 if "no_context" in how else context
    out = []
    for start, hl in hunks(old, new, n):
        hl = perturb(hl, how)
        if "format" in how:  # unified diff, possibly with stale numbers
            start = start + 9 if "stale_hint" in how else start
            body = "".join(f"{t}{x}\n" for t, x in hl)
            out.append(f"--- a/textwrap.py\n+++ b/textwrap.py\n@@ -{start},1 +{start},1 @@\n{body}")
        else:
            s = "".join(x + "\n" for t, x in hl if t != "+")
            r = "".join(x + "\n" for t, x in hl if t != "-")
            out.append(f"textwrap.py\n<<<<<<< SEARCH\n{s}=======\n{r}>>>>>>> REPLACE\n")
    return "\n".join(out)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(change(), st.sets(st.sampled_from(PERTURB), max_size=4), st.integers(0, 5))
def test_perturbed_edit_is_exact_or_refused(ch: tuple[str, str], how: set[str], context: int) -> None:
    old, new = ch
    reply = render(old, new, how, context)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "textwrap.py").write_text(old, encoding="utf-8")
        res = apply_reply(root, reply)
        got = (root / "textwrap.py").read_text(encoding="utf-8")
    if res.applied:
        assert not res.failures
        assert got == new, f"applied but wrong:\n{reply}"
    else:
        assert got == old, "refused but the file changed"


@settings(max_examples=60, deadline=None)
@given(change())
def test_well_formed_edit_always_applies(ch: tuple[str, str]) -> None:
    old, new = ch
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "textwrap.py").write_text(old, encoding="utf-8")
        reply = "".join(
            difflib.unified_diff(old.splitlines(True), new.splitlines(True), "a/textwrap.py", "b/textwrap.py")
        )
        res = apply_reply(root, reply)
        assert res.applied, res.failures
        assert (root / "textwrap.py").read_text(encoding="utf-8") == new


# -- forgiving matches lay REPLACE onto the file: nothing unmentioned changes, nothing doubles -------
BLANKS = ["", "", "    ", "  "]  # blank lines, some holding only whitespace


@st.composite
def blank_file_change(draw: st.DrawFn) -> tuple[list[str], list[str], list[tuple[str, str]]]:
    """A file of unique lines with runs of blank lines, a change to a stretch of it, and the hunk."""
    n = draw(st.integers(4, 14))
    lines: list[str] = []
    for k in range(n):
        lines.append(draw(st.sampled_from(["", "    ", "        "])) + f"v{k} = {k}")
        lines += [draw(st.sampled_from(BLANKS)) for _ in range(draw(st.integers(0, 2)))]
    new = list(lines)
    content = [i for i, ln in enumerate(lines) if ln.strip()]
    i = draw(st.sampled_from(content))
    kind = draw(st.sampled_from(["modify", "insert", "insert_blank", "delete"]))
    if kind == "modify":
        new[i] = lines[i] + "  # edited"
    elif kind == "insert":
        new[i + 1 : i + 1] = [f"w{k} = 0" for k in range(draw(st.integers(1, 2)))]
    elif kind == "insert_blank":
        new[i + 1 : i + 1] = ["", "w0 = 0"]
    else:
        del new[i]
    context = draw(st.integers(1, 4))
    diff = list(difflib.unified_diff(lines, new, lineterm="", n=context))[2:]
    hl = [(d[:1], d[1:]) for d in diff if not d.startswith("@@")]
    return lines, new, hl


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@example(  # fix17: SEARCH `v12`, REPLACE `v12, w0, ""` at a file ending `v12, ""`: was applied as `v12, w0, ""`
    (["v11 = 11", "v12 = 12", ""], ["v11 = 11", "v12 = 12", "", "w0 = 0", ""],
     [(" ", "v12 = 12"), (" ", ""), ("+", "w0 = 0"), ("+", "")]),
    {"both_drop"},
)  # fmt: skip
@given(blank_file_change(), st.sets(st.sampled_from(["search_drops", "both_drop", "trailing", "bare_blanks"])))
def test_forgiven_blank_lines_give_the_intended_file(
    ch: tuple[list[str], list[str], list[tuple[str, str]]], how: set[str]
) -> None:
    """SEARCH leaves out blank lines (REPLACE keeping them or not), spaces trail, blank lines lose
    their whitespace: applied, the file is exactly the intended one; else it is unchanged."""
    lines, new, hl = ch
    if "bare_blanks" in how:  # the model writes whitespace-only lines as empty ones
        hl = [(t, x if x.strip() else "") for t, x in hl]
    if "search_drops" in how and any(t != "-" and x.strip() for t, x in hl):
        # A blank context line only REPLACE has. (Not when REPLACE would be blank lines only: that
        # reads as "replace these lines by a blank line", and is applied so.)
        hl = [("+", x) if t == " " and not x.strip() else (t, x) for t, x in hl]
    elif "both_drop" in how:
        hl = [(t, x) for t, x in hl if t != " " or x.strip()]
    if "trailing" in how:
        hl = [(t, x + "  ") for t, x in hl]
    search = "".join(x + "\n" for t, x in hl if t != "+")
    replace = "".join(x + "\n" for t, x in hl if t != "-")
    reply = f"f.py\n<<<<<<< SEARCH\n{search}=======\n{replace}>>>>>>> REPLACE\n"
    old_text, new_text = "".join(x + "\n" for x in lines), "".join(x + "\n" for x in new)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "f.py").write_text(old_text)
        res = apply_reply(Path(tmp), reply)
        got = (Path(tmp) / "f.py").read_text()
    if res.applied:
        if how & {"trailing", "bare_blanks"}:
            # The model's blank lines no longer say which whitespace-only line is which.
            got, new_text = (re.sub(r"(?m)^[ \t]+$", "", x) for x in (got, new_text))
        assert got == new_text, f"applied but wrong:\n{reply}\n{res.notes}"
    else:
        assert got == old_text


TOKENS = ["a = 1", "b = 2", "c = 3", "d = 4", "e = 5", "", "    ", "x = 9"]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.sampled_from(TOKENS), min_size=1, max_size=12),
    st.lists(st.sampled_from(TOKENS[:5] + ["", "  a = 1", "b = 2  "]), min_size=1, max_size=6),
    st.lists(st.sampled_from(TOKENS + ["n = 0", "  a = 1"]), max_size=6),
)
@example(["a = 1"], ["a = 1", ""], ["", "a = 1"])  # fix17: moved a blank line the file lacks
def test_any_forgiven_edit_changes_only_what_it_mentions(
    file: list[str], search: list[str], replace: list[str]
) -> None:
    """For any file and any edit a forgiving rung accepts: a line neither SEARCH nor REPLACE mentions
    comes out once, in order; and no line comes out more often than the matched span has it plus the
    copies REPLACE adds beyond SEARCH's (a kept line is never written twice)."""
    res = locate(file, search, replace)
    if not isinstance(res, Found):
        return
    out = file[: res.start] + res.new_lines + file[res.end :]
    mentioned = {x.strip() for x in search + replace}
    assert [x for x in out if x.strip() not in mentioned] == [x for x in file if x.strip() not in mentioned]
    span = file[res.start : res.end]

    def count(xs: list[str], key: str) -> int:
        return sum(x.strip() == key for x in xs)

    for key in {x.strip() for x in res.new_lines}:
        added = max(0, count(replace, key) - count(search, key))
        assert count(res.new_lines, key) <= count(span, key) + added, (
            f"{key!r} duplicated ({res.rung}): {span} -> {res.new_lines}"
        )
