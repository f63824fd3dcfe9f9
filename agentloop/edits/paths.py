"""Path safety and path forgiveness for edits.

Safety is one function, `safe_path`, so every module that touches the repository on a model's
behalf refuses the same things: absolute paths, `..` escapes, symlinks leading outside, `.git/`.
Forgiveness (`resolve_path`) only ever maps a path the model wrote to a file it can only have meant.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path, PurePosixPath

from agentloop.files import names_git_dir, real_inside


class PathRefused(ValueError):
    """A path the applier will not touch; the message says why, for the model."""


def clean_rel(rel: str) -> str:
    """Normalise a path as written by a model: quotes, backticks, `./`, backslashes."""
    rel = rel.strip().strip("`'\"").strip()
    rel = rel.replace("\\", "/")
    while rel.startswith("./"):
        rel = rel[2:]
    return rel


def check_rel(rel: str) -> str:
    """Refuse what no repository-relative path may be, without touching the disk."""
    rel = clean_rel(rel)
    if not rel:
        raise PathRefused("empty path")
    if "\0" in rel:
        raise PathRefused(f"path {rel!r} contains a NUL byte")
    if rel.startswith("/") or re.match(r"^[A-Za-z]:", rel) or rel.startswith("~"):
        raise PathRefused(f"path {rel!r} is absolute; use a path relative to the repository root")
    parts = PurePosixPath(rel).parts
    if ".." in parts:
        raise PathRefused(f"path {rel!r} leaves the repository ('..')")
    if names_git_dir(parts):
        raise PathRefused(f"path {rel!r} is inside .git/, which edits may not touch")
    if parts[0] == ".agentloop":
        raise PathRefused(f"path {rel!r} is inside .agentloop/ (agentloop's run records), which edits may not touch")
    return str(PurePosixPath(*parts))


def safe_path(root: Path, rel: str) -> Path:
    """Return `root/rel` if it stays inside the repository once symlinks are followed, else raise."""
    rel = check_rel(rel)
    target = root / rel
    inside = real_inside(root, target)
    if inside is None:
        raise PathRefused(f"path {rel!r} leads outside the repository (symlink)")
    if names_git_dir(inside.parts):
        raise PathRefused(f"path {rel!r} leads into .git/ (symlink)")
    return target


@lru_cache(maxsize=256)
def _glob_regex(pattern: str) -> re.Pattern[str]:
    """Translate one gitignore-style glob into a regex over repository-relative posix paths."""
    pat = pattern.strip()
    dir_only = pat.endswith("/")
    pat = pat.strip("/") if pat.startswith("/") or dir_only else pat
    anchored = "/" in pat.rstrip("/") or pattern.strip().startswith("/")
    out = []
    i = 0
    while i < len(pat):
        c = pat[i]
        if pat.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if pat.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = pat.find("]", i)
            if j == -1:
                out.append(re.escape(c))
            else:
                out.append("[" + pat[i + 1 : j].replace("!", "^", 1) + "]")
                i = j
        else:
            out.append(re.escape(c))
        i += 1
    body = "".join(out)
    prefix = "" if anchored else "(?:.*/)?"
    # A pattern naming a directory protects everything under it.
    return re.compile(f"^{prefix}{body}(?:/.*)?$")


def is_protected(rel: str, patterns: Sequence[str]) -> str | None:
    """Return the first protecting pattern that matches `rel`, or None."""
    rel = clean_rel(rel)
    for pat in patterns:
        if pat.strip() and _glob_regex(pat).match(rel):
            return pat
    return None


PLACEHOLDER_STEMS = {
    "file", "filename", "your_file", "yourfile", "my_file", "myfile", "some_file", "example",
    "path", "module", "your_module", "code", "script", "source",
}  # fmt: skip


def is_placeholder(rel: str) -> bool:
    """A path the model wrote as a stand-in: `path/to/x.py`, `file.py`, `<path>`."""
    rel = clean_rel(rel).lower()
    if not rel or rel.startswith("<") or "path/to/" in rel or rel.startswith("path_to"):
        return True
    stem = PurePosixPath(rel).stem
    return "/" not in rel and stem in PLACEHOLDER_STEMS


# Files that conventionally have no extension: a line naming one is a path, even for a new file.
EXTENSIONLESS_NAMES = {
    "Makefile", "GNUmakefile", "makefile", "Dockerfile", "Containerfile", "Vagrantfile", "Jenkinsfile",
    "Procfile", "Gemfile", "Rakefile", "Brewfile", "Podfile", "Pipfile", "Justfile", "justfile",
    "Caddyfile", "Snakefile", "Tiltfile", "Earthfile", "BUILD", "WORKSPACE", "LICENSE", "LICENCE",
    "COPYING", "NOTICE", "AUTHORS", "CONTRIBUTORS", "CODEOWNERS", "OWNERS", "README", "CHANGELOG",
    "CHANGES", "HISTORY", "NEWS", "VERSION", "MANIFEST",
}  # fmt: skip


def looks_like_path(text: str, is_file: Callable[[str], bool] | None = None) -> bool:
    """Whether a line of prose is plausibly a bare file path (used to find block headers).

    `is_file` says whether a path names a file of the repository: any such file is recognised,
    whatever its name. Otherwise a new file needs a dot in its name, a directory, or a name that
    conventionally has no extension (`Makefile`), so that prose is not taken for a path.
    """
    text = clean_rel(text)
    if not text or len(text) > 200 or text.endswith("/"):
        return False
    if is_file is not None and is_file(text):
        return True
    if " " in text or not re.fullmatch(r"[\w.\-/+@~]+", text):
        return False
    name = PurePosixPath(text).name
    return "." in name or "/" in text or name in EXTENSIONLESS_NAMES


def resolve_path(
    rel: str,
    *,
    known_files: Sequence[str] = (),
    root: Path | None = None,
    creating: bool = False,
) -> tuple[str, str | None]:
    """Map the path a model wrote to the file it can only have meant.

    Returns (path, note); note explains any forgiveness used. Only unique resolutions are made;
    otherwise the path comes back unchanged and later validation refuses it with a reason.
    """
    raw = rel
    rel = clean_rel(rel)
    inner = _inside_root(root, rel) if root is not None and rel.startswith("/") else None
    if inner is not None:  # an absolute path into the repository: the same file, written long
        new, note = resolve_path(inner, known_files=known_files, root=root, creating=creating)
        return new, note or f"absolute path {raw!r} taken as {new!r}"
    known = [clean_rel(k) for k in known_files]

    def exists(p: str) -> bool:
        if p in known:
            return True
        if root is None:
            return False
        try:
            return safe_path(root, p).is_file()
        except PathRefused:
            return False

    if rel and (exists(rel) or not may_stand_in(root, rel)):
        return rel, None  # it exists, or it escapes: never taken to mean another file
    if creating and rel and not is_placeholder(rel):
        return rel, None
    # A path with a wrong leading prefix: `a/x.py`, `repo/src/x.py` for `src/x.py`.
    if rel and not is_placeholder(rel):
        parts = PurePosixPath(rel).parts
        for k in range(1, len(parts)):
            cand = str(PurePosixPath(*parts[k:]))
            if exists(cand):
                return (
                    cand,
                    f"path {raw!r} taken to mean {cand!r} (dropped the leading {'/'.join(parts[:k])}/)",
                )
    # A basename, or a path whose basename is one known file's: `calc.py` for `src/calc.py`.
    if rel:
        base = PurePosixPath(rel).name
        same = [k for k in known if PurePosixPath(k).name == base]
        if len(same) == 1 and not (creating and not is_placeholder(rel)):
            return same[0], f"path {raw!r} taken to mean {same[0]!r}"
    # A placeholder or missing path, when only one file is in play.
    if (not rel or is_placeholder(rel)) and len(set(known)) == 1:
        return known[0], f"path {raw!r} taken to mean {known[0]!r}, the only file in play"
    return rel, None


def file_test(root: Path | None, known_files: Sequence[str] = ()) -> Callable[[str], bool]:
    """A check that a path names a file of the repository (in play, or on disk inside it)."""
    known = {clean_rel(k) for k in known_files}

    def is_file(rel: str) -> bool:
        rel = clean_rel(rel)
        if rel in known:
            return True
        if root is None or not rel:
            return False
        try:
            return safe_path(root, rel).is_file()
        except (PathRefused, OSError):
            return False

    return is_file


def _inside_root(root: Path, rel: str) -> str | None:
    """`rel` made relative, when it is an absolute path under the repository root; else None."""
    for base in dict.fromkeys([str(root), os.path.realpath(root)]):
        base = base.rstrip("/")
        if rel.startswith(base + "/") and rel[len(base) + 1 :].strip("/"):
            return rel[len(base) + 1 :]
    return None


def _clean_escape_free(rel: str) -> bool:
    try:
        check_rel(rel)
    except PathRefused:
        return False
    return True


def may_stand_in(root: Path | None, rel: str) -> bool:
    """Whether the path a model wrote may be taken to mean another file (found by name or content).

    Yes for a placeholder (`path/to/file.py`, `<file>`), no path at all, or a path naming nothing in
    the repository. Never for a path that escapes it (absolute, `..`, a symlink leading out), points
    into `.git/`, or names something that exists: that edit is for that path, or it is refused.
    """
    rel = clean_rel(rel)
    if not rel:
        return True
    if not _clean_escape_free(rel):
        return False
    if root is None:
        return True
    try:
        path = safe_path(root, rel)
    except PathRefused:
        return False
    return not os.path.lexists(path)


def _lines(text: str) -> list[str]:
    return [ln.strip() for ln in text.splitlines() if ln.strip()]


def resolve_by_content(
    text: str, *, whole: bool, known_files: Sequence[str], root: Path | None
) -> tuple[str, str] | None:
    """The one known file an edit with no usable path can only be meant for, judged by its text.

    For a SEARCH text (whole=False): the only known file that contains those lines. For a whole-file
    block: the known file that shares most of its lines with the block, if clearly the best and
    at least half of the file's lines are kept. Returns (path, why) or None when it is not clear.
    """
    if root is None or not text.strip():
        return None
    want = _lines(text)
    if not want:
        return None
    contents: dict[str, list[str]] = {}
    for rel in dict.fromkeys(clean_rel(k) for k in known_files):
        try:
            path = safe_path(root, rel)
            if path.is_file():
                contents[rel] = _lines(path.read_text(encoding="utf-8", errors="replace"))
        except (PathRefused, OSError):
            continue
    if not whole:
        n = len(want)
        hits = [rel for rel, have in contents.items()
                if any(have[i:i + n] == want for i in range(len(have) - n + 1))]
        return (hits[0], "the only file in play that holds the lines it searches for") if len(hits) == 1 else None
    new = set(want)
    scores = sorted(((sum(ln in new for ln in have) / len(have), rel) for rel, have in contents.items() if have),
                    reverse=True)
    if not scores or scores[0][0] < 0.5 or (len(scores) > 1 and scores[1][0] >= scores[0][0] - 0.2):
        return None
    return scores[0][1], "the file in play whose lines it keeps"
