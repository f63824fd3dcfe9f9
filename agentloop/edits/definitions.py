"""Replace a Python definition by name: the `function` edit format.

The model writes the whole changed function, class or method under a `path::name` header; the
definition of that name is found with `ast` (a top-level function or class, `Class.method`, or a
method named alone when only one class has it) and its lines are replaced, re-indented to where the
definition stands. Decorators the new text leaves out are kept; decorators it writes replace the
old ones. A reply of some 60 tokens instead of a whole file, and nothing the model was not shown is
rewritten. An unknown or ambiguous name, a block that does not parse or defines another name, and
files that are not Python are refused with the reason.
"""

from __future__ import annotations

import ast
import difflib
import re
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath

from agentloop.files import read_regular_file, real_inside

PYTHON_SUFFIXES = (".py", ".pyi")
_Def = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef
# What `ast.parse` raises on text it cannot take: bad syntax, NUL bytes (3.11), nesting too deep for its
# recursion or its memory.
UNPARSABLE = (SyntaxError, ValueError, RecursionError, MemoryError)


class DefinitionRefused(Exception):
    """Why a definition cannot be replaced; `reason` is an `EditFailure` reason."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason, self.message = reason, message


@dataclass
class Replacement:
    start: int  # 0-based first line replaced
    end: int  # 0-based line after the last one replaced
    lines: list[str]
    name: str  # the qualified name replaced


def _top_level(body: list[ast.stmt]) -> list[ast.stmt]:
    """A module's statements, with those of its top-level `if`/`else` and `try` blocks (six defines
    `iteritems` under `if PY3:`)."""
    out: list[ast.stmt] = []
    for node in body:
        out.append(node)
        if isinstance(node, ast.If):
            out += _top_level(node.body) + _top_level(node.orelse)
        elif isinstance(node, ast.Try):
            out += _top_level(node.body) + _top_level(node.orelse) + _top_level(node.finalbody)
            for handler in node.handlers:
                out += _top_level(handler.body)
    return out


def _qualified(tree: ast.Module) -> dict[str, list[_Def]]:
    """Every definition the format can name: top level (under a top-level `if` or `try` too), and
    methods (`Class.method`), by name."""
    found: dict[str, list[_Def]] = {}
    for node in _top_level(tree.body):
        if isinstance(node, _Def):
            found.setdefault(node.name, []).append(node)
            if isinstance(node, ast.ClassDef):
                for item in node.body:
                    if isinstance(item, _Def):
                        found.setdefault(f"{node.name}.{item.name}", []).append(item)
    return found


def _start(node: _Def) -> int:
    return min([node.lineno] + [d.lineno for d in node.decorator_list])


def _narrowed(hits: list[_Def], lines: list[str], shown: Sequence[tuple[int, int]], code: str) -> list[_Def]:
    """Of several definitions carrying one name, those the reply can only mean: the ones that overlap the
    lines the model was shown (`shown`, of a file shown in part; six defines `iteritems` once per Python
    version), then those whose `def`/`class` line is the one `code` writes (`__getitem__` of the class
    whose signature it copied). A filter that would leave none is skipped."""
    if len(hits) > 1 and shown:
        seen = [n for n in hits if any(a <= (n.end_lineno or n.lineno) and b >= _start(n) for a, b in shown)]
        hits = seen or hits
    heads = [" ".join(ln.split()) for ln in code.split("\n") if re.match(r"\s*(async\s+)?(def|class)\s", ln)]
    if len(hits) > 1 and heads:
        same = [n for n in hits if " ".join(lines[n.lineno - 1].split()) == heads[0]]
        hits = same or hits
    return hits


def locate(path: str, lines: list[str], name: str, *, shown: Sequence[tuple[int, int]] = (),
           code: str = "") -> _Def:
    """The one definition `name` names in a Python file's lines; when the name has several, the one the
    reply means (see `_narrowed`: the lines it was shown, the signature `code` copies) or a refusal."""
    if not path.endswith(PYTHON_SUFFIXES):
        raise DefinitionRefused("malformed", f"{path} is not a Python file: a definition can only be replaced by "
                                "name in Python; for this file use a SEARCH/REPLACE block (quote the lines to "
                                "change)")
    try:
        tree = ast.parse("\n".join(lines))
    except UNPARSABLE as exc:
        why = exc.msg if isinstance(exc, SyntaxError) else str(exc) or "nested too deeply"
        raise DefinitionRefused("malformed", f"{path} does not parse as Python ({why}), so its definitions cannot "
                                "be found; use a SEARCH/REPLACE block") from None
    table = _qualified(tree)
    name = name.strip().removesuffix("()")
    hits = _narrowed(table.get(name, []), lines, shown, code)
    if not hits and "." not in name:  # a method named alone: fine when only one class has it (or is meant)
        hits = _narrowed([n for qual, nodes in table.items() if qual.endswith("." + name) for n in nodes],
                         lines, shown, code)
        if len(hits) > 1:
            where = ", ".join(q for q in table if q.endswith("." + name))
            raise DefinitionRefused("ambiguous", f"{path} has more than one method {name!r} ({where}); write the "
                                    "header as path::Class.method")
    if not hits:
        close = difflib.get_close_matches(name, list(table), n=5, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else \
            f"; its definitions are: {', '.join(list(table)[:15])}" if table else ""
        raise DefinitionRefused("not_found", f"{path} has no function, class or method {name!r}{hint}")
    if len(hits) > 1:
        lines_at = ", ".join(str(n.lineno) for n in hits)
        raise DefinitionRefused("ambiguous", f"{path} defines {name!r} more than once (lines {lines_at}), so which "
                                "one to replace is a guess; use a SEARCH/REPLACE block")
    return hits[0]


def unseen_ranges(seen: Sequence[tuple[int, int]], first: int, last: int) -> list[tuple[int, int]]:
    """The runs of lines first..last that no (start, end) range of `seen` covers."""
    missing: list[tuple[int, int]] = []
    at = first
    for start, end in sorted(seen):
        if end < at:
            continue
        if start > at:
            missing.append((at, min(start - 1, last)))
        at = max(at, end + 1)
        if at > last:
            break
    if at <= last:
        missing.append((at, last))
    return [(a, b) for a, b in missing if a <= b]


_RANGE = re.compile(r"(\d+)-(\d+)")


def shown_ranges(partial: str) -> list[tuple[int, int]]:
    """The line ranges of a file shown in part, from how the prompt described them ("lines 3-9, 40-61
    of 900"; "only an outline of its 900 lines": none)."""
    if not partial.startswith("lines "):
        return []
    return [(int(a), int(b)) for a, b in _RANGE.findall(partial.split(" of ", 1)[0])]


def unseen_lines(path: str, lines: list[str], name: str, partial: str, code: str) -> str:
    """When definition `name` was shown only in part (`partial`) and `code` lacks most of the lines
    that were not shown, why a whole-definition reply for it is refused; "" otherwise."""
    node = locate(path, lines, name, shown=shown_ranges(partial), code=code)
    first, last = _start(node), node.end_lineno or node.lineno
    missing = unseen_ranges(shown_ranges(partial), first, last)
    hidden = [lines[n - 1].strip() for a, b in missing for n in range(a, b + 1) if lines[n - 1].strip()]
    if not hidden:
        return ""
    sent = {x.strip() for x in code.split("\n")}
    if sum(x in sent for x in hidden) * 2 >= len(hidden):
        return ""  # it has them (read with a tool, or recalled): a whole definition, not a cut one
    if missing == [(first, last)]:
        return (f"you were not shown {name} (lines {first}-{last} of {path}), so the block for {path}::{name} "
                "would replace code you have not seen; change lines you were shown with a SEARCH/REPLACE block")
    where = ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in missing)
    return (f"you were shown only part of {name} (it runs from line {first} to line {last}; lines {where} were "
            f"not shown), so the block for {path}::{name} would drop or invent them; change the lines you were "
            "shown with a SEARCH/REPLACE block instead")


MAX_SEARCHED_FILES = 3000  # a look for where a name is defined reads at most this many files
MAX_SEARCHED_BYTES = 1_000_000  # nor a file larger than this


def defining_files(root: Path, files: Sequence[str], name: str, besides: str) -> list[str]:
    """The Python files among `files` (other than `besides`) that define `name` at their top level
    (`def name`, `class name`); type stubs only when no module does. For a refusal to say where a
    name the model put in the wrong file is defined (a package's __init__ re-exports it)."""
    if not re.fullmatch(r"[A-Za-z_]\w*", name):
        return []
    pattern = re.compile(rf"^(?:async\s+)?(?:def|class)\s+{name}\b", re.M)
    found: list[str] = []
    for rel in [f for f in files if f.endswith(PYTHON_SUFFIXES) and f != besides][:MAX_SEARCHED_FILES]:
        if real_inside(root, root / rel) != PurePath(rel):
            continue  # a symlink to elsewhere: never read
        data = read_regular_file(root / rel, MAX_SEARCHED_BYTES)
        if data is not None and pattern.search(data.decode("utf-8", "replace")):
            found.append(rel)
    modules = [f for f in found if f.endswith(".py")]
    return modules or found


def replacement(path: str, lines: list[str], name: str, code: str, partial: str = "") -> Replacement:
    """The lines that replace definition `name` of a file with `code` (see the module docstring);
    `partial`: which part of the file the model was shown, when only a part."""
    node = locate(path, lines, name, shown=shown_ranges(partial), code=code)
    new = textwrap.dedent(code.replace("\t", "    ") if "\t" in code and not any("\t" in ln for ln in lines)
                          else code).strip("\n").split("\n")
    try:
        tree = ast.parse("\n".join(new))
    except UNPARSABLE as exc:
        why = f"line {exc.lineno}: {exc.msg}" if isinstance(exc, SyntaxError) else str(exc) or "nested too deeply"
        raise DefinitionRefused("malformed", f"the new code for {name} does not parse as Python ({why}); send the "
                                "complete definition") from None
    defined = [n for n in tree.body if isinstance(n, _Def)]
    if not defined:
        raise DefinitionRefused("malformed", f"the block for {path}::{name} defines no function or class; send "
                                "the whole changed definition, from its `def` or `class` line")
    if node.name not in {n.name for n in defined}:
        raise DefinitionRefused("malformed", f"the block for {path}::{name} defines {defined[0].name!r}, not "
                                f"{node.name!r}; the header must name the definition the block replaces")
    own = next(n for n in defined if n.name == node.name)
    # A helper the file lacks may come along; a second copy of existing code may not.
    if len(defined) > 1 and (copies := _copies(lines, name, [n.name for n in defined if n is not own])):
        raise DefinitionRefused("malformed", f"the block for {path}::{name} also holds {', '.join(copies)}, which "
                                f"{path} already defines: it would define them twice. Send only the definition of "
                                f"{node.name}, and each other changed definition under its own header")
    start = _start(node) if own.decorator_list else node.lineno  # decorators left out are kept
    first = lines[node.lineno - 1]
    indent = first[: len(first) - len(first.lstrip())]
    body = [indent + ln if ln.strip() else "" for ln in new]
    return Replacement(start - 1, node.end_lineno or node.lineno, body, name)


def _copies(lines: list[str], name: str, others: list[str]) -> list[str]:
    """Which of `others` (the other definitions of a block for `name`) the file already defines in the
    same scope: a method's siblings, or the top level. (The file is parsed again only for a block that
    holds more than the one definition.)"""
    scope = name.rsplit(".", 1)[0] + "." if "." in name else ""
    known = {q[len(scope):] for q in _qualified(ast.parse("\n".join(lines))) if q.startswith(scope)
             and "." not in q[len(scope):]}
    return list(dict.fromkeys(n for n in others if n in known))


def single_definitions(path: str, lines: list[str], code: str) -> list[str] | None:
    """The names, when a whole-file block for an existing Python file holds nothing but definitions
    the file already has (and the file has more): then it is meant as their replacement, not as the
    new file. None otherwise."""
    if not path.endswith(PYTHON_SUFFIXES):
        return None
    try:
        new = ast.parse(textwrap.dedent(code))
        old = ast.parse("\n".join(lines))
    except UNPARSABLE:
        return None
    if not new.body or not all(isinstance(n, _Def) for n in new.body):
        return None
    table = _qualified(old)
    names = [n.name for n in new.body]
    if not all(len(table.get(name, [])) == 1 for name in names) or len(set(names)) != len(names):
        return None
    if len([n for n in old.body if not isinstance(n, ast.Expr)]) <= len(names):
        return None  # the file is just these definitions: a whole-file block is a whole file
    return names


def split_definitions(code: str) -> dict[str, str]:
    """A block of top-level definitions as name -> its source (decorators included)."""
    text = textwrap.dedent(code)
    lines = text.split("\n")
    tree = ast.parse(text)
    return {n.name: "\n".join(lines[_start(n) - 1: n.end_lineno]) for n in tree.body if isinstance(n, _Def)}
