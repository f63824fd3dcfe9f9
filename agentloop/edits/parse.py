"""Turn a model reply into edits, whatever format it chose: one scanner, one parser per format.

Formats: SEARCH/REPLACE blocks, unified diffs (git or plain, numbers optional and distrusted),
OpenAI's apply_patch envelope, and whole files in a fence headed by their path. Prose between
edits is ignored. A block cut short is kept as an edit with `error` set, so the reply is refused
as malformed rather than half-applied.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from agentloop.edits.paths import (
    PathRefused,
    clean_rel,
    file_test,
    is_placeholder,
    looks_like_path,
    may_stand_in,
    resolve_by_content,
    resolve_path,
    safe_path,
)
from agentloop.edits.types import Edit

_SR_START = re.compile(r"^\s*<{5,9}\s*(?:SEARCH|ORIGINAL|FIND)\b.*$")
_SR_DIVIDER = re.compile(r"^\s*={5,9}\s*$")
_SR_END = re.compile(r"^\s*>{5,9}\s*(?:REPLACE|UPDATED)\b.*$")
_HUNK = re.compile(r"^@@+\s*(?:-(\d+)(?:,(\d+))?\s+\+(\d+)(?:,(\d+))?)?[^@]*(?:@@+(.*))?$")
_FENCE = re.compile(r"^\s*(`{3,}|~{3,})\s*(.*?)\s*$")
_BEGIN_PATCH = re.compile(r"^\s*\*\*\*\s*Begin Patch\s*$", re.I)
_END_PATCH = re.compile(r"^\s*\*\*\*\s*End Patch\s*$", re.I)
_PATCH_OP = re.compile(
    r"^\s*\*\*\*\s*(Add File|Delete File|Update File|Move to|End of File)\s*:?\s*(.*?)\s*$", re.I
)
_GIT_HEADER = re.compile(r"^diff --git (\S+) (\S+)\s*$")
_NO_EOL = "\\ No newline"
_IsFile = Callable[[str], bool] | None

# Fence info words that say "this is a shell session or output", never a file's content.
_NOT_FILE_LANGS = {
    "bash",
    "sh",
    "shell",
    "console",
    "terminal",
    "text",
    "txt",
    "output",
    "log",
    "diff",
    "patch",
}
_LANG_EXTS = {
    "python": {".py", ".pyi"}, "py": {".py", ".pyi"}, "javascript": {".js", ".mjs", ".cjs", ".jsx"},
    "js": {".js", ".mjs", ".cjs", ".jsx"}, "typescript": {".ts", ".tsx"}, "ts": {".ts", ".tsx"},
    "rust": {".rs"}, "go": {".go"}, "c": {".c", ".h"}, "cpp": {".cc", ".cpp", ".hpp", ".h", ".cxx"},
    "java": {".java"}, "ruby": {".rb"}, "yaml": {".yml", ".yaml"}, "json": {".json"},
    "toml": {".toml"}, "markdown": {".md"}, "md": {".md"}, "html": {".html", ".htm"}, "css": {".css"},
}  # fmt: skip


@dataclass
class _Fence:
    open: int
    close: int | None  # None: never closed (reply cut short)
    info: str


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _closes(opener: str, line: str) -> bool:
    """Whether fence line `line` closes the fence `opener` opened: no info string, the same character,
    at least as long, and (as in CommonMark) indented at most 3 columns more than the opener."""
    m, o = _FENCE.match(line), _FENCE.match(opener)
    return (m is not None and o is not None and not m.group(2) and m.group(1)[0] == o.group(1)[0]
            and len(m.group(1)) >= len(o.group(1)) and _indent(line) <= _indent(opener) + 3)


def _fences(lines: list[str]) -> dict[int, _Fence]:
    """Pair fence openers with closers; SEARCH/REPLACE bodies are skipped, they may hold fences.

    As in CommonMark, a closer is indented at most 3 columns more than its opener: a fence inside the
    code (a docstring's indented ``` example) does not end the block."""
    out: dict[int, _Fence] = {}
    cur: _Fence | None = None
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if cur is None and _SR_START.match(lines[i]):
            j = i + 1
            while j < len(lines) and not _SR_END.match(lines[j]):
                j += 1
            i = j + 1
            continue
        if m:
            if cur is None:
                cur = _Fence(i, None, m.group(2))
                out[i] = cur
            elif _closes(lines[cur.open], lines[i]):
                cur.close = i
                cur = None
        i += 1
    return out


def _unwrap_definition_headers(lines: list[str]) -> list[str]:
    """Put the fences where the function format has them when a small model misplaces them.

    Qwen2.5-Coder-1.5B wrote `path::name` inside a ```python fence of its own, then opened the
    definition's fence (so both fences ran to the reply's last closer, a whole-file block), and ran one
    definition into the next header without closing it. A `path::name` line directly followed by a
    fence opener with a language always starts a definition: the opener just before it is dropped,
    and a fence left open is closed before it. (Python files only: the format is for them; and never
    inside a SEARCH/REPLACE block, whose lines may quote this very format in a document.)"""
    out: list[str] = []
    opener: str | None = None  # the open fence's opening line (closed as in _fences)
    searching = False  # inside a SEARCH/REPLACE block: its lines are the file's, left as they are
    for k, line in enumerate(lines):
        if _SR_START.match(line) or _SR_END.match(line):
            searching = bool(_SR_START.match(line))
        after = _FENCE.match(lines[k + 1]) if k + 1 < len(lines) else None
        header = None if searching or not after or not after.group(2) else _DEFINITION_HEADER.match(line.strip())
        if header and header.group(1).endswith((".py", ".pyi")):
            if opener is not None:
                if out and out[-1] == opener:
                    out.pop()  # the header's own fence
                else:
                    out.append(after.group(1))  # the last definition ran on into this header
                opener = None
            out.append(line)
            continue
        fence = _FENCE.match(line)
        if fence and opener is None:
            opener = line
        elif fence and opener is not None and _closes(opener, line):
            opener = None
        out.append(line)
    return out


def _header_path(text: str, is_file: _IsFile = None) -> str | None:
    """A line that names a file and nothing else: `calc.py`, `**src/x.py**`, `# File: x.py:`."""
    t = text.strip()
    t = re.sub(r"^(?:#+|\*+|>|-|\d+\.)\s*", "", t)
    t = re.sub(r"^(?:file(?:name)?|path)\s*[:=]\s*", "", t, flags=re.I)
    t = t.strip("*` ").rstrip(":").strip("*` ")
    return clean_rel(t) if looks_like_path(t, is_file) else None


def _info_path(info: str, is_file: _IsFile = None) -> str | None:
    """A path given in a fence's info string: ```python calc.py, ```calc.py, ```py:calc.py."""
    for tok in re.split(r"[\s:]+", info):
        tok = tok.strip("\"'`")
        tok = re.sub(r"^(?:title|file|path)=", "", tok).strip("\"'")
        if tok.lower() in _LANG_EXTS or tok.lower() in _NOT_FILE_LANGS:
            continue
        if (looks_like_path(tok) and "." in tok) or (tok and is_file is not None and is_file(clean_rel(tok))):
            return clean_rel(tok)
    return None


_DEFINITION_HEADER = re.compile(r"^(?:#+|\*+|>|-|\d+\.)?\s*(?:(?:file|path|definition|replace)\s*[:=]?\s*)?[*`'\"]*"
                                r"([\w./\\-]+\.\w+)::([A-Za-z_][\w.]*)(?:\(\))?[*`'\":]*\s*$", re.I)


def _definition_header(lines: list[str], i: int, info: str) -> tuple[str, str] | None:
    """(path, name) of a `path::name` header on the line before fence i (or in its info string)."""
    for tok in info.split():
        m = _DEFINITION_HEADER.match(tok)
        if m:
            return clean_rel(m.group(1)), m.group(2)
    j = i - 1
    while j >= 0 and i - j <= 2 and not lines[j].strip():
        j -= 1
    m = _DEFINITION_HEADER.match(lines[j].strip()) if j >= 0 else None
    return (clean_rel(m.group(1)), m.group(2)) if m else None


def _look_back_path(lines: list[str], i: int, fences: dict[int, _Fence], is_file: _IsFile = None) -> str | None:
    """The path named just before line i (skipping a fence opener and blank lines)."""
    j = i - 1
    steps = 0
    while j >= 0 and steps < 3:
        ln = lines[j]
        m = _FENCE.match(ln)
        if m and j in fences:
            p = _info_path(m.group(2), is_file)
            if p:
                return p
        elif ln.strip():
            return _header_path(ln, is_file)
        j -= 1
        steps += 1
    return None


class _Scanner:
    def __init__(self, reply: str, is_file: _IsFile = None):
        self.is_file = is_file
        self.lines = _unwrap_definition_headers(reply.replace("\r\n", "\n").replace("\r", "\n").split("\n"))
        self.fences = _fences(self.lines)
        self.inside = [False] * len(self.lines)
        for f in self.fences.values():
            for k in range(f.open + 1, f.close if f.close is not None else len(self.lines)):
                self.inside[k] = True
        self.edits: list[Edit] = []
        self.last_path: str | None = None

    def add(self, edit: Edit) -> None:
        edit.index = len(self.edits) + 1
        self.edits.append(edit)

    def malformed(self, path: str, line: int, msg: str, fmt: str) -> None:
        self.add(Edit(kind="replace", path=path, format=fmt, error=msg, reply_line=line + 1))  # type: ignore[arg-type]

    # -- the scanner ---------------------------------------------------------------------------
    def run(self) -> list[Edit]:
        lines = self.lines
        i = 0
        pathless_fences: list[int] = []
        whole: list[Edit] = []
        while i < len(lines):
            ln = lines[i]
            if _BEGIN_PATCH.match(ln):
                i = self.apply_patch(i)
            elif _SR_START.match(ln):
                i = self.search_replace(i)
            elif _GIT_HEADER.match(ln) or (
                ln.startswith("--- ") and i + 1 < len(lines) and lines[i + 1].startswith("+++ ")
            ):
                i = self.diff_file(i)
            elif _HUNK.match(ln) and ln.startswith("@@") and self._hunk_follows(i):
                path = self.last_path or _look_back_path(lines, i, self.fences, self.is_file) or ""
                i = self.hunks(i, path, path, given=bool(path))
            elif i in self.fences:
                f = self.fences[i]
                end = f.close if f.close is not None else len(lines)
                body = lines[i + 1 : end]
                if any(self._is_marker(b) for b in body):
                    i += 1  # an edit format inside the fence: scan into it
                    continue
                path = _info_path(f.info, self.is_file) or _look_back_path(lines, i, self.fences, self.is_file)
                lang = f.info.split()[0].lower() if f.info.split() else ""
                named = _definition_header(lines, i, f.info)
                if named is None and body and body[0].lstrip().startswith("#"):  # `# path::name` inside the block
                    m = _DEFINITION_HEADER.match(body[0].strip())
                    if m:
                        named, body = (clean_rel(m.group(1)), m.group(2)), body[1:]
                if named and lang not in _NOT_FILE_LANGS:  # `path::name`: the function format
                    if f.close is None:
                        self.malformed(named[0], i, "the code block for this definition is never closed (reply "
                                       "cut short?); nothing was applied", "function")
                    else:
                        self.add(Edit(kind="function", path=named[0], search=named[1], replace=_join(body),
                                      format="function", reply_line=i + 1))
                    i = end + 1
                    continue
                if path and lang not in _NOT_FILE_LANGS:
                    if f.close is None:
                        self.malformed(
                            path,
                            i,
                            "the code block for this file is never closed (reply cut "
                            "short?); nothing was applied",
                            "whole",
                        )
                    else:
                        e = Edit(
                            kind="write", path=path, replace=_join(body), format="whole", reply_line=i + 1
                        )
                        whole.append(e)
                        self.add(e)
                elif lang not in _NOT_FILE_LANGS and f.close is not None:
                    pathless_fences.append(i)
                i = end + 1
            else:
                i += 1
        if not self.edits and len(pathless_fences) == 1:
            f = self.fences[pathless_fences[0]]
            body = self.lines[f.open + 1 : f.close]
            lang = f.info.split()[0].lower() if f.info.split() else ""
            self.add(
                Edit(
                    kind="write",
                    path="",
                    replace=_join(body),
                    format="whole",
                    path_given=False,
                    lang=lang or None,
                    reply_line=f.open + 1,
                )
            )
        return self.edits

    def _is_marker(self, ln: str) -> bool:
        return bool(
            _SR_START.match(ln)
            or _BEGIN_PATCH.match(ln)
            or _GIT_HEADER.match(ln)
            or ln.startswith("+++ ")
            or (ln.startswith("@@") and _HUNK.match(ln))
        )

    def _hunk_follows(self, i: int) -> bool:
        nxt = self.lines[i + 1] if i + 1 < len(self.lines) else ""
        return nxt[:1] in (" ", "-", "+") or nxt == ""

    # -- SEARCH/REPLACE ------------------------------------------------------------------------
    def search_replace(self, i: int) -> int:
        lines = self.lines
        path = _look_back_path(lines, i, self.fences, self.is_file)
        given = path is not None
        if path is None:
            path = self.last_path or ""
            given = bool(path)
        self.last_path = path or None
        search, j = _collect_until(lines, i + 1, _SR_DIVIDER, (_SR_START, _SR_END))
        if j >= len(lines) or not _SR_DIVIDER.match(lines[j]):
            self.malformed(path, i, "SEARCH/REPLACE block has no ======= line (reply cut short?); "
                           "nothing was applied", "search_replace")
            return j
        replace, j = _collect_until(lines, j + 1, _SR_END, (_SR_START, _SR_DIVIDER))
        if j >= len(lines) or not _SR_END.match(lines[j]):
            self.malformed(path, i, "SEARCH/REPLACE block has no >>>>>>> REPLACE line (reply cut short?); "
                           "nothing was applied", "search_replace")
            return j
        kind = "create" if not any(s.strip() for s in search) else "replace"
        self.add(
            Edit(
                kind=kind,
                path=path,
                search=_join(search),
                replace=_join(replace),
                format="search_replace",
                path_given=given,
                reply_line=i + 1,
            )
        )
        return j + 1

    # -- unified diffs -------------------------------------------------------------------------
    def diff_file(self, i: int) -> int:
        lines = self.lines
        old = new = None
        rename_from = rename_to = None
        new_mode: str | None = None
        git = False
        m = _GIT_HEADER.match(lines[i])
        if m:
            git = True
            old, new = m.group(1), m.group(2)
            i += 1
            while i < len(lines) and not lines[i].startswith(("--- ", "@@", "diff --git")):
                ln = lines[i]
                if ln.startswith("rename from "):
                    rename_from = ln[len("rename from ") :].strip()
                elif ln.startswith("rename to "):
                    rename_to = ln[len("rename to ") :].strip()
                elif ln.startswith("new file mode"):
                    old = "/dev/null"
                    new_mode = ln.split()[-1]
                elif ln.startswith("deleted file mode"):
                    new = "/dev/null"
                elif not ln.strip() or not re.match(
                    r"^(index|old mode|new mode|similarity|dissimilarity|"
                    r"copy|Binary)",
                    ln,
                ):
                    break
                i += 1
        if i + 1 < len(lines) and lines[i].startswith("--- ") and lines[i + 1].startswith("+++ "):
            old = lines[i][4:].split("\t")[0].strip()
            new = lines[i + 1][4:].split("\t")[0].strip()
            i += 2
        old = old or ""
        new = new or ""
        prefixed = (old.startswith("a/") or old == "/dev/null") and (
            new.startswith("b/") or new == "/dev/null"
        )
        if git or prefixed:
            old = old[2:] if old.startswith("a/") else old
            new = new[2:] if new.startswith("b/") else new
        if rename_from and rename_to:
            old, new = rename_from, rename_to
        start = len(self.edits)
        if old == "/dev/null":
            self.last_path = new
            i = self.hunks(i, new, new, create=True)
            if len(self.edits) > start and self.edits[-1].kind == "create":
                self.edits[-1].mode = new_mode
            return i
        if new == "/dev/null":
            self.last_path = old
            return self.hunks(i, old, old, delete=True)
        is_rename = bool(rename_from and rename_to and old != new)
        target = old if is_rename else new
        self.last_path = target
        i = self.hunks(i, target, target)
        if is_rename:
            self.add(Edit(kind="rename", path=old, new_path=new, format="udiff", reply_line=i))
        elif len(self.edits) == start and git:
            pass  # mode-only change: nothing to do
        return i

    def hunks(
        self, i: int, path: str, _new: str, *, create: bool = False, delete: bool = False, given: bool = True
    ) -> int:
        """Parse the hunks of one file starting at line i; returns the line after them."""
        lines = self.lines
        created: list[str] = []
        deleted: list[str] = []
        while i < len(lines):
            m = _HUNK.match(lines[i])
            if not (m and lines[i].startswith("@@")):
                break
            header_line = i
            old_start = int(m.group(1)) if m.group(1) else None
            old_n = int(m.group(2)) if m.group(2) is not None else (1 if m.group(1) else None)
            new_n = int(m.group(4)) if m.group(4) is not None else (1 if m.group(3) else None)
            i += 1
            body: list[str] = []
            rem_old, rem_new = old_n, new_n
            counted = rem_old is not None and rem_new is not None
            while i < len(lines):
                ln = lines[i]
                if ln.startswith("@@") or _GIT_HEADER.match(ln) or (i in self.fences) or _FENCE.match(ln):
                    break
                if ln.startswith("--- ") and i + 1 < len(lines) and lines[i + 1].startswith("+++ "):
                    break
                if ln.startswith("\\"):
                    i += 1
                    continue
                in_count = counted and ((rem_old or 0) > 0 or (rem_new or 0) > 0)
                if ln[:1] in (" ", "-", "+") or (ln == "" and (in_count or self.inside[i])):
                    body.append(ln)
                    if counted:
                        if ln[:1] in (" ", ""):
                            rem_old, rem_new = (rem_old or 0) - 1, (rem_new or 0) - 1
                        elif ln[:1] == "-":
                            rem_old = (rem_old or 0) - 1
                        else:
                            rem_new = (rem_new or 0) - 1
                    i += 1
                    continue
                break
            while body and body[-1] == "":
                body.pop()
            truncated = (
                i >= len(lines)
                and counted
                and ((rem_old or 0) > 0 or (rem_new or 0) > 0)
                and (self.inside[len(lines) - 1] or not body)
            )
            if truncated:
                self.malformed(
                    path,
                    header_line,
                    "the diff hunk ends before its @@ line counts say "
                    "(reply cut short?); nothing was applied",
                    "udiff",
                )
                continue
            search = [b[1:] for b in body if b[:1] in (" ", "-", "")]
            replace = [b[1:] for b in body if b[:1] in (" ", "+", "")]
            if create:
                created += replace
            elif delete:
                deleted += search
            else:
                self.add(
                    Edit(
                        kind="replace",
                        path=path,
                        search=_join(search),
                        replace=_join(replace),
                        line_hint=old_start or None,
                        format="udiff",
                        path_given=given,
                        reply_line=header_line + 1,
                    )
                )
        if create:
            self.add(Edit(kind="create", path=path, replace=_join(created), format="udiff", reply_line=i))
        elif delete:
            self.add(Edit(kind="delete", path=path, search=_join(deleted), format="udiff", reply_line=i))
        return i

    # -- apply_patch ---------------------------------------------------------------------------
    def apply_patch(self, i: int) -> int:
        lines = self.lines
        start = i
        i += 1
        cur_path: str | None = None
        chunk: list[str] | None = None
        anchor: str | None = None
        mode = ""
        chunk_line = i

        def flush(at_eof: bool = False) -> None:
            nonlocal chunk, anchor
            if chunk is not None and cur_path is not None and mode == "update":
                if any(c[:1] in ("-", "+") for c in chunk) or anchor:
                    search = [c[1:] for c in chunk if c[:1] in (" ", "-", "")]
                    replace = [c[1:] for c in chunk if c[:1] in (" ", "+", "")]
                    while search and replace and search[-1] == "" and replace[-1] == "" and not at_eof:
                        search.pop()
                        replace.pop()
                    self.add(
                        Edit(
                            kind="replace",
                            path=cur_path,
                            search=_join(search),
                            replace=_join(replace),
                            anchor=anchor,
                            at_eof=at_eof,
                            format="apply_patch",
                            reply_line=chunk_line + 1,
                        )
                    )
            chunk = None
            anchor = None

        pending_move: tuple[str, str] | None = None
        while i < len(lines):
            ln = lines[i]
            if _END_PATCH.match(ln) or (_FENCE.match(ln) and self.inside[i - 1] and i not in self.fences):
                flush()
                if pending_move:
                    self.add(
                        Edit(
                            kind="rename",
                            path=pending_move[0],
                            new_path=pending_move[1],
                            format="apply_patch",
                            reply_line=i,
                        )
                    )
                return i + 1
            op = _PATCH_OP.match(ln)
            if op:
                name, arg = op.group(1).lower(), clean_rel(op.group(2))
                if name == "end of file":
                    flush(at_eof=True)
                    i += 1
                    continue
                if name == "move to":
                    if cur_path:
                        pending_move = (cur_path, arg)
                    i += 1
                    continue
                flush()
                if pending_move:
                    self.add(
                        Edit(
                            kind="rename",
                            path=pending_move[0],
                            new_path=pending_move[1],
                            format="apply_patch",
                            reply_line=i,
                        )
                    )
                    pending_move = None
                cur_path = arg
                if name == "add file":
                    i, body = self._add_body(i + 1)
                    self.add(
                        Edit(kind="create", path=arg, replace=_join(body), format="apply_patch", reply_line=i)
                    )
                    mode = "add"
                    continue
                if name == "delete file":
                    self.add(Edit(kind="delete", path=arg, format="apply_patch", reply_line=i + 1))
                    mode = "delete"
                    i += 1
                    continue
                mode = "update"
                chunk = None
                i += 1
                continue
            if mode == "update":
                if ln.startswith("@@"):
                    flush()
                    chunk = []
                    chunk_line = i
                    anchor = ln[2:].strip().removesuffix("@@").strip() or None
                elif ln[:1] in (" ", "-", "+") or ln == "":
                    if chunk is None:
                        chunk = []
                        chunk_line = i
                    chunk.append(ln)
                i += 1
                continue
            i += 1
        self.edits = [e for e in self.edits if e.reply_line <= start]
        self.malformed(
            cur_path or "",
            start,
            "the *** Begin Patch envelope has no *** End Patch line (reply cut short?); nothing was applied",
            "apply_patch",
        )
        return i

    def _add_body(self, i: int) -> tuple[int, list[str]]:
        body: list[str] = []
        while i < len(self.lines):
            ln = self.lines[i]
            if _PATCH_OP.match(ln) or _END_PATCH.match(ln):
                break
            if _FENCE.match(ln) and i not in self.fences:
                break
            body.append(ln[1:] if ln.startswith("+") else ln)
            i += 1
        return i, body


def _collect_until(lines: list[str], j: int, end: re.Pattern, stops: tuple[re.Pattern, ...]) -> tuple[list[str], int]:
    """Lines from `j` up to the one matching `end` (or a stray marker in `stops`); returns them and where it stopped."""
    part: list[str] = []
    while j < len(lines) and not end.match(lines[j]):
        if any(stop.match(lines[j]) for stop in stops):
            break
        part.append(lines[j])
        j += 1
    return part, j


def _join(lines: list[str]) -> str:
    return "".join(ln + "\n" for ln in lines)


def parse_raw(reply: str, *, is_file: _IsFile = None) -> list[Edit]:
    """Edits with paths as the model wrote them (cleaned, not yet resolved).

    `is_file` (see paths.file_test) lets a line naming any repository file head a block, `Makefile`
    or `LICENSE` included; without it only names that look like paths do.
    """
    return _Scanner(reply, is_file).run()


def lang_fits(lang: str | None, path: str) -> bool:
    """Whether a fence language could be the content of `path` (no language: can't tell, so yes)."""
    if not lang:
        return True
    exts = _LANG_EXTS.get(lang.lower())
    return exts is None or any(path.endswith(x) for x in exts)


def resolve_paths(edits: list[Edit], known_files: Sequence[str], root=None) -> list[str]:
    """Resolve each edit's path in place (see paths.resolve_path); returns notes on forgiveness used."""
    notes: list[str] = []
    for e in list(edits):
        if e.error:
            continue
        creating = e.kind == "create"
        if e.kind == "write" and not e.path_given:
            if len(set(known_files)) == 1 and lang_fits(e.lang, known_files[0]):
                e.path = clean_rel(known_files[0])
                notes.append(f"edit {e.index}: a code block with no path taken as the whole of {e.path!r}")
                continue
            found = resolve_by_content(e.replace, whole=True, known_files=known_files, root=root)
            if found and lang_fits(e.lang, found[0]) and not _same_text(root, found[0], e.replace):
                e.path = found[0]
                notes.append(f"edit {e.index}: a code block with no path taken as the whole of {e.path!r}, "
                             f"{found[1]}")
            else:
                edits.remove(e)  # just code in prose: not an edit unless one file can be meant
            continue
        new, note = resolve_path(e.path, known_files=known_files, root=root, creating=creating)
        if creating and is_placeholder(e.path) and note is None:
            new = e.path
        if note is None and e.kind in ("replace", "write") and may_stand_in(root, new):
            # A placeholder or a wrong path: the edit's own text may say which file it is for.
            if e.kind == "replace" or not new or is_placeholder(new):
                text = e.search if e.kind == "replace" else e.replace
                found = resolve_by_content(text, whole=e.kind == "write", known_files=known_files, root=root)
                if found:
                    new, note = found[0], f"path {e.path!r} taken to mean {found[0]!r}, {found[1]}"
        if note:
            notes.append(f"edit {e.index}: {note}")
        e.path = new
        if e.new_path:
            e.new_path = clean_rel(e.new_path)
    return notes


def _same_text(root, rel: str, text: str) -> bool:
    """Whether a code block only quotes the file as it is (then it is not an edit)."""
    try:
        old = safe_path(root, rel).read_text(encoding="utf-8", errors="replace")
    except (PathRefused, OSError):
        return False
    return [ln.rstrip() for ln in old.strip().splitlines()] == [ln.rstrip() for ln in text.strip().splitlines()]


def parse_edits(reply: str, *, known_files: Sequence[str] = ()) -> list[Edit]:
    """Every edit in a model reply, in order, whatever its format."""
    edits = parse_raw(reply, is_file=file_test(None, known_files))
    resolve_paths(edits, known_files)
    return edits
