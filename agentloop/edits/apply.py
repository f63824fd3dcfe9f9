"""Validate every edit of a reply against an in-memory copy of the files, then write all or none.

Writes are atomic per file (temp file in the same directory + os.replace); if one fails midway,
the files already written are restored, so a reply is never half-applied.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from agentloop.edits.definitions import (
    DefinitionRefused,
    defining_files,
    replacement,
    single_definitions,
    split_definitions,
    unseen_lines,
)
from agentloop.edits.match import Found, locate
from agentloop.edits.parse import parse_raw, resolve_paths
from agentloop.edits.paths import PathRefused, file_test, is_placeholder, is_protected, safe_path
from agentloop.edits.textfile import BinaryFile, TextFile, split_lines
from agentloop.edits.types import ApplyResult, Edit, EditFailure, FailureReason
from agentloop.files import atomic_write

_LAZY = re.compile(
    r"^\s*(?:#|//|/\*|<!--|--|;)\s*(?:\.\.\.|\u2026|.*\b(?:rest of|existing code|remains? (?:the )?same|"
    r"unchanged|same as before)\b)",
    re.I,
)


# What the prompt's format example adds to the line it quotes (agentloop.run.feedback.example_values).
EXAMPLE_MARKERS = ("  # changed", " (changed)")
_MARKER = re.compile(r"\s*(?:# changed|\(changed\))\s*$")


def _only_marks(old: Sequence[str], new: Sequence[str]) -> bool:
    """Whether `new` is `old` with nothing but the format example's `# changed` marker added: the example
    copied onto real lines (toolz: it applied, and the model went on from there)."""
    if [x.rstrip() for x in old] == [x.rstrip() for x in new]:
        return False
    return [x.rstrip() for x in old] == [_MARKER.sub("", x).rstrip() for x in new]


def _copied_example(what: str) -> _Refuse:
    return _Refuse("malformed", f"{what} only adds the format example's `# changed` marker to lines that stay as "
                   "they are: that copies the example and changes nothing. Make the real fix: change the lines "
                   "that cause the failure")


class _Refuse(Exception):
    def __init__(self, reason: FailureReason, message: str):
        super().__init__(message)
        self.reason: FailureReason = reason
        self.message = message


@dataclass
class _Slot:
    """One path's state while a reply is validated: what it was, what it is becoming."""

    original: bytes | None  # None: did not exist
    file: TextFile | None  # None: does not exist (now)
    mode: int | None = None  # of the existing file; None: a new file gets git's mode for new files
    executable: bool = False  # a new file a diff made executable (`new file mode 100755`)
    shifts: list[tuple[int, int]] = field(default_factory=list)  # (line, delta) of applied edits
    data: bytes | None = None  # the encoded new content, once validation is over


class _Plan:
    """The repository as the reply would leave it, built edit by edit without touching disk."""

    def __init__(self, root: Path, protect: Sequence[str], partial: Mapping[str, str] | None = None,
                 repo_files: Callable[[], Sequence[str]] | None = None):
        self.root = root
        self.repo_files = repo_files  # the repository's files the model may know of, listed when needed
        self.protect = protect
        self.partial = partial or {}  # files the model was shown only in part -> which part
        self.slots: dict[str, _Slot] = {}
        self.order: list[str] = []

    def check(self, rel: str) -> Path:
        if is_placeholder(rel) and not (self.root / rel).exists():
            raise _Refuse(
                "path_refused",
                f"{rel!r} is a placeholder, not a file of this repository; write the real path",
            )
        try:
            path = safe_path(self.root, rel)
        except PathRefused as exc:
            raise _Refuse("path_refused", str(exc)) from None
        pat = is_protected(rel, self.protect)
        if not pat and self.protect and path.is_symlink():  # a link to a protected file is protected too
            real = Path(os.path.realpath(path)).relative_to(Path(os.path.realpath(self.root))).as_posix()
            pat = is_protected(real, self.protect)
        if pat:
            raise _Refuse(
                "protected", f"{rel} is protected ({pat!r}) and may not be edited; change other files instead"
            )
        return path

    def slot(self, rel: str) -> _Slot:
        if rel not in self.slots:
            path = self.check(rel)
            if path.is_dir():
                raise _Refuse("path_refused", f"{rel} is a directory, not a file")
            if path.is_file():
                data = path.read_bytes()
                try:
                    tf = TextFile.decode(data)
                except BinaryFile as exc:
                    raise _Refuse("binary", f"{rel} is a {exc}; edits only change text files") from None
                self.slots[rel] = _Slot(data, tf, path.stat().st_mode)
            else:
                self.slots[rel] = _Slot(None, None)
        return self.slots[rel]

    def touch(self, rel: str) -> None:
        if rel not in self.order:
            self.order.append(rel)

    # -- the edit kinds ------------------------------------------------------------------------
    def do(self, e: Edit) -> list[str]:
        if e.error:
            raise _Refuse("malformed", e.error)
        if not e.path:
            raise _Refuse("path_refused", "the edit names no file; put the file's path on the line before it")
        handler = {
            "replace": self.replace,
            "write": self.write,
            "create": self.create,
            "delete": self.delete,
            "rename": self.rename,
            "function": self.function,
        }[e.kind]
        return handler(e)

    def _missing(self, e: Edit) -> _Refuse:
        return _Refuse(
            "not_found",
            f"{e.path} does not exist; to create it, use an empty SEARCH section (or a diff from /dev/null)",
        )

    def replace(self, e: Edit) -> list[str]:
        s = self.slot(e.path)
        if s.file is None:
            raise self._missing(e)
        tf = s.file
        search, replace = split_lines(e.search), split_lines(e.replace)
        if not search:
            if (e.at_eof and not e.anchor) or not any(ln.strip() for ln in tf.lines):
                start = len(tf.lines) if any(ln.strip() for ln in tf.lines) else 0
                tf.splice(start, len(tf.lines), replace if start == 0 else tf.lines[start:] + replace)
                self.touch(e.path)
                return [f"appended to {e.path}"] if start else []
            raise _Refuse(
                "malformed",
                "the edit has no lines to find (empty SEARCH, or a diff hunk with no "
                "context or removed lines), so where it goes is a guess; quote the lines to "
                "change, or a few unchanged lines around an insertion",
            )
        hint = e.line_hint
        if hint is not None:
            hint += sum(d for line, d in s.shifts if line < hint)
        res = locate(tf.lines, search, replace, hint=hint, anchor=e.anchor, at_eof=e.at_eof)
        if not isinstance(res, Found):
            raise _Refuse(res.reason, res.message)
        if _only_marks(tf.lines[res.start:res.end], res.new_lines):
            raise _copied_example(f"the edit for {e.path}")
        s.shifts.append((res.start + 1, len(res.new_lines) - (res.end - res.start)))
        tf.splice(res.start, res.end, res.new_lines)
        self.touch(e.path)
        return res.notes

    def create(self, e: Edit) -> list[str]:
        s = self.slot(e.path)
        new = split_lines(e.replace)
        if s.file is not None:
            if s.file.lines == new or [x.rstrip() for x in s.file.lines] == [x.rstrip() for x in new]:
                raise _Refuse("already_applied", f"{e.path} already exists with exactly this content")
            if any(ln.strip() for ln in s.file.lines):
                raise _Refuse(
                    "malformed",
                    f"{e.path} already exists, so it cannot be created (an empty SEARCH "
                    "section or /dev/null means a new file); quote the lines to change instead",
                )
            s.file.splice(0, len(s.file.lines), new)
        else:
            parent = (self.root / e.path).parent
            while parent != self.root and not parent.exists():
                parent = parent.parent
            if parent.exists() and not parent.is_dir():
                raise _Refuse(
                    "path_refused", f"cannot create {e.path}: {parent.relative_to(self.root)} is a file"
                )
            s.file = TextFile.from_text("".join(ln + "\n" for ln in new))
            s.executable = e.mode == "100755"
        self.touch(e.path)
        return []

    def write(self, e: Edit) -> list[str]:
        s = self.slot(e.path)
        new = split_lines(e.replace)
        if s.file is None:
            return self.create(e)
        old = s.file.lines
        names = single_definitions(e.path, old, e.replace)
        if names:  # only definitions the file has, and the file has more: they are meant, not the whole file
            notes: list[str] = []
            for name, code in split_definitions(e.replace).items():
                notes += self.function(Edit(kind="function", path=e.path, search=name, replace=code,
                                            format="function", index=e.index))
            return [f"a block holding only {', '.join(names)} taken as the replacement of "
                    f"{'that definition' if len(names) == 1 else 'those definitions'} in {e.path}", *notes]
        if e.path in self.partial:
            raise _Refuse("malformed", f"you were shown only part of {e.path} ({self.partial[e.path]}), so a "
                          "whole-file block would have to invent the rest; change only the lines you were shown "
                          "(replace the function, or use a SEARCH/REPLACE block)")
        if [x.rstrip() for x in old] == [x.rstrip() for x in new]:
            raise _Refuse("already_applied", f"the content sent for {e.path} is the file exactly as it is now, "
                          "so it changes nothing; change the lines that cause the failure")
        _check_whole(e, old, new)
        s.file.splice(0, len(old), new)
        self.touch(e.path)
        return []

    def function(self, e: Edit) -> list[str]:
        s = self.slot(e.path)
        if s.file is None:
            raise self._missing(e)
        try:
            if e.path in self.partial and (cut := unseen_lines(e.path, s.file.lines, e.search, self.partial[e.path],
                                                              e.replace)):
                raise DefinitionRefused("malformed", cut)
            found = replacement(e.path, s.file.lines, e.search, e.replace, self.partial.get(e.path, ""))
        except DefinitionRefused as exc:
            message = exc.message
            name = e.search.strip().removesuffix("()")
            if exc.reason == "not_found" and self.repo_files is not None:
                # the path the model names is honoured, but say where the name is (a re-export misleads it)
                elsewhere = defining_files(self.root, self.repo_files(), name, e.path)
                if len(elsewhere) == 1:
                    message = (f"{e.path} has no function, class or method {name!r}; `{name}` is defined in "
                               f"{elsewhere[0]}: write {elsewhere[0]}::{name}")
            raise _Refuse(exc.reason, message) from None  # type: ignore[arg-type]
        old = {x.strip() for x in s.file.lines[found.start:found.end]}
        lazy = [x for x in found.lines if _LAZY.match(x) and x.strip() not in old]
        if lazy:
            raise _Refuse("malformed", f"the block for {e.path}::{e.search} leaves code out ({lazy[0].strip()!r}); "
                          "it replaces the whole definition, so send every line of it")
        if _only_marks(s.file.lines[found.start:found.end], found.lines):
            raise _copied_example(f"the block for {e.path}::{e.search}")
        if [x.rstrip() for x in s.file.lines[found.start:found.end]] == [x.rstrip() for x in found.lines]:
            raise _Refuse("already_applied", f"the code sent for {e.path}::{e.search} is the definition exactly "
                          "as it is now, so it changes nothing; change the lines that cause the failure")
        s.shifts.append((found.start + 1, len(found.lines) - (found.end - found.start)))
        s.file.splice(found.start, found.end, found.lines)
        self.touch(e.path)
        return []

    def delete(self, e: Edit) -> list[str]:
        s = self.slot(e.path)
        if s.file is None:
            raise _Refuse("already_applied", f"{e.path} does not exist (already deleted?)")
        want = [x.strip() for x in split_lines(e.search) if x.strip()]
        have = [x.strip() for x in s.file.lines if x.strip()]
        if want and want != have:
            raise _Refuse(
                "not_found",
                f"the diff deletes {e.path}, but the lines it lists differ from the "
                "file's; nothing was deleted",
            )
        s.file = None
        self.touch(e.path)
        return []

    def rename(self, e: Edit) -> list[str]:
        if not e.new_path:
            raise _Refuse("malformed", "a rename needs a new path")
        src, dst = self.slot(e.path), self.slot(e.new_path)
        if src.file is None:
            if dst.file is not None:
                raise _Refuse(
                    "already_applied", f"{e.path} does not exist and {e.new_path} does (already moved?)"
                )
            raise self._missing(e)
        if dst.file is not None:
            raise _Refuse("path_refused", f"cannot move {e.path} to {e.new_path}: that file already exists")
        dst.file, dst.mode, dst.executable, src.file = src.file, src.mode, src.executable, None
        self.touch(e.path)
        self.touch(e.new_path)
        return [f"moved {e.path} to {e.new_path}"]


def _check_whole(e: Edit, old: list[str], new: list[str]) -> None:
    """Refuse a whole-file block that looks like a fragment: it would delete the rest of the file."""
    old_set = {x.strip() for x in old if x.strip()}
    lazy = [x for x in new if _LAZY.match(x) and x.strip() not in old_set]
    if lazy:
        raise _Refuse(
            "malformed",
            f"the block for {e.path} leaves code out ({lazy[0].strip()!r}); a whole-file "
            "block replaces the entire file, so send it complete or use a SEARCH/REPLACE block",
        )
    n_old = len(old_set)
    n_new = len([x for x in new if x.strip()])
    if n_old >= 20 and n_new < 0.5 * len([x for x in old if x.strip()]):
        raise _Refuse(
            "malformed",
            f"the block for {e.path} has {n_new} lines of code where the file has "
            f"{len(old)}; a whole-file block replaces the entire file, so this looks like a "
            "fragment. Use a SEARCH/REPLACE block for part of a file",
        )
    if not e.path_given and n_old >= 3:
        shared = old_set & {x.strip() for x in new}
        if len(shared) < 0.3 * n_old:
            raise _Refuse(
                "malformed",
                f"a code block with no file path does not look like a new version of "
                f"{e.path}; put the path on the line before the block",
            )


def _write_all(root: Path, plan: _Plan) -> list[str]:
    """Write the planned files, restoring everything written so far if one write fails."""
    done: list[tuple[Path, bytes | None, int | None]] = []
    made_dirs: list[Path] = []
    changed: list[str] = []
    writes = [(rel, plan.slots[rel]) for rel in plan.order]
    try:
        for rel, s in [w for w in writes if w[1].file is not None] + [w for w in writes if w[1].file is None]:
            path = root / rel
            new = s.data if s.file is not None else None
            if new == s.original:
                continue
            if new is None:
                os.unlink(path)
                done.append((path, s.original, s.mode))
            else:
                target = Path(os.path.realpath(path)) if path.is_symlink() else path
                missing = []
                parent = target.parent
                while not parent.exists():
                    missing.append(parent)
                    parent = parent.parent
                for d in reversed(missing):
                    d.mkdir()
                    made_dirs.append(d)
                atomic_write(target, new, mode=s.mode, new_mode=0o777 if s.executable else 0o666)
                done.append((target, s.original, s.mode))
            changed.append(rel)
    except OSError:
        for path, data, mode in reversed(done):
            try:
                if data is None:
                    path.unlink(missing_ok=True)
                else:
                    atomic_write(path, data, mode=mode)
            except OSError:
                pass
        for d in reversed(made_dirs):
            try:
                d.rmdir()
            except OSError:
                pass
        raise
    return changed




def apply_reply(
    root: Path,
    reply: str | list[Edit],
    *,
    protect: Sequence[str] = (),
    known_files: Sequence[str] = (),
    dry_run: bool = False,
    partial: Mapping[str, str] | None = None,
    repo_files: Callable[[], Sequence[str]] | None = None,
) -> ApplyResult:
    """Parse (if given text), validate every edit, then apply all of them or none.

    `partial`: files the model was shown only in part (-> which part): a whole-file block for one
    of them is refused, since it would have to invent the lines the model never saw. `repo_files`: lists
    the files the model may know of, for a refusal to say which file defines a name it misplaced."""
    root = Path(root)
    result = ApplyResult(dry_run=dry_run)
    if isinstance(reply, str):
        edits = parse_raw(reply, is_file=file_test(root, known_files))
        result.notes += resolve_paths(edits, known_files, root=root)
    else:
        edits = list(reply)
        for k, e in enumerate(edits, 1):
            e.index = e.index or k
    result.edits = edits
    if not edits:
        return result
    plan = _Plan(root, protect, partial, repo_files)
    unchanged: list[EditFailure] = []  # whole files sent back as they are: no-ops, unless nothing else applies
    for e in edits:
        try:
            notes = plan.do(e)
        except _Refuse as exc:
            failure = EditFailure(e.index, e.path, exc.reason, exc.message)
            if e.kind == "write" and exc.reason == "already_applied":
                unchanged.append(failure)
            else:
                result.failures.append(failure)
            continue
        except (OSError, UnicodeError) as exc:
            result.failures.append(
                EditFailure(e.index, e.path, "path_refused", f"cannot read {e.path}: {exc}")
            )
            continue
        result.would_apply.append(e.index)
        result.notes += [f"edit {e.index}: {n}" for n in notes]
    if unchanged and not result.would_apply:
        result.failures = sorted(result.failures + unchanged, key=lambda f: f.index)
    else:
        result.notes += [f"edit {f.index}: {f.path} sent back unchanged; skipped" for f in unchanged]
    if result.failures:
        return result
    for rel in plan.order:
        s = plan.slots[rel]
        if s.file is not None:
            try:
                s.data = s.file.encode()
            except UnicodeEncodeError as exc:
                result.failures.append(
                    EditFailure(
                        0,
                        rel,
                        "malformed",
                        f"the new text of {rel} cannot be "
                        f"written in the file's encoding ({s.file.encoding}): {exc}",
                    )
                )
                return result
    if dry_run:
        result.applied = True
        result.changed_files = [r for r in plan.order if _differs(plan.slots[r])]
        return result
    try:
        result.changed_files = _write_all(root, plan)
    except OSError as exc:
        result.failures.append(EditFailure(0, "", "path_refused", f"writing failed, nothing changed: {exc}"))
        return result
    result.applied = True
    return result


def _differs(s: _Slot) -> bool:
    return (s.data if s.file is not None else None) != s.original
