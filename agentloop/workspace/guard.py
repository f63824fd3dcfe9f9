"""Acceptance that cannot be gamed: protected files stay pristine, suspicious edits are flagged.

Edits to protected paths are refused by the applier (agentloop.edits). But model-written code runs
in the checks and could rewrite a test by another route (a helper module that writes the test file
when imported, a new conftest.py). So before the checks run, every protected file is put back to
its content at the start of the run (and protected files that appeared since are removed); after
they run, any protected file that changed voids the verdict. Under the bubblewrap sandbox the
protected files are also read-only while checks run, so they cannot change at all.

Restoring in place, rather than running acceptance in an exported copy, keeps the checks in the
real working tree, with its ignored files (virtualenvs, node_modules, build outputs) that an
export would lack. It is safe if interrupted: what is restored is the user's own start content.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from agentloop.edits.paths import PathRefused, is_protected, safe_path
from agentloop.files import atomic_write
from agentloop.workspace import gitbatch
from agentloop.workspace.repo import file_blobs, git, ignored_entries, link_blob, read_blob, tree_listing

SYMLINK_MODE = "120000"
# What checks write on their own (bytecode, pytest's cache): never counted as a protected file appearing.
CHECK_OUTPUT = re.compile(r"(^|/)(__pycache__|\.pytest_cache)/|\.py[co]$")

# -- the harness protected by default ----------------------------------------------------------------

# Tests, the files that configure how they run, and the files that decide what git (and so the
# result) sees. `--allow-test-edits` / `allow_test_edits: true` lifts this for tasks that must change
# tests; `protect:` adds to it. setup.cfg is protected whole: pytest honours a [tool:pytest] section in
# it, so adding one (`addopts = --co`) would change what runs. pyproject.toml is protected whole when
# it configures pytest ([tool.pytest...]); otherwise the model may edit it (dependencies) and a new
# pytest section is flagged (harness_edit) and cannot deselect tests (agentloop.workspace.grading).
HARNESS = (
    "tests/", "test/", "test_*.py", "*_test.py", "conftest.py", "pytest.ini", "tox.ini", "setup.cfg",
    "noxfile.py", ".agentloop.yaml", ".gitignore", ".gitattributes", ".pre-commit-config.yaml",
    "sitecustomize.py", "usercustomize.py", "/pytest.py", "/pytest/", "/_pytest/", "/py.py",
)
RUNNERS = {  # a check run through one of these makes its file part of the harness
    "make": ("/Makefile", "/makefile", "/GNUmakefile"),
    "npm": ("/package.json",), "yarn": ("/package.json",), "pnpm": ("/package.json",), "npx": ("/package.json",),
    "tox": ("/tox.ini",), "nox": ("/noxfile.py",), "just": ("/justfile", "/Justfile"),
}


def default_protected(root: Path, checks: Iterable[str]) -> list[str]:
    """The protected patterns a run starts with for a repository and its check commands; `fix`,
    `hook` and anything else that runs the loop use this (see HARNESS for what and why)."""
    patterns = list(HARNESS)
    try:
        pyproject = (root / "pyproject.toml").read_text(encoding="utf-8", errors="replace")
    except OSError:
        pyproject = ""
    if re.search(r"^\s*\[tool\.pytest", pyproject, re.M):
        patterns.append("/pyproject.toml")
    for command in checks:
        for word in _words(command):
            for pattern in RUNNERS.get(os.path.basename(word), ()):
                if pattern not in patterns:
                    patterns.append(pattern)
    return patterns


def protected_patterns(root: Path, protect: Sequence[str], checks: Iterable[str], allow_test_edits: bool) -> list[str]:
    """The user's `protect:` list plus, unless test edits are allowed, the default harness."""
    base = [] if allow_test_edits else default_protected(root, checks)
    return list(dict.fromkeys([*base, *(p for p in protect if p.strip())]))


def _words(command: str) -> list[str]:
    try:
        lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        return list(lexer)
    except ValueError:
        return command.split()


@dataclass(frozen=True)
class _Entry:
    mode: str
    blob: str


class ProtectedFiles:
    """The protected files of a workspace as they were at the start of a run."""

    def __init__(self, root: Path, patterns: Sequence[str], start_tree: str,
                 ignored: Callable[[], list[str]] | None = None):
        """`ignored`: gives `ignored_entries(root)` as it is now, when the caller shares that listing."""
        self.root, self.patterns = root, tuple(p for p in patterns if p.strip())
        self.start: dict[str, _Entry] = {}
        if not self.patterns:
            return
        for item in tree_listing(root, start_tree).split("\0"):
            if not item:
                continue
            meta, path = item.split("\t", 1)
            mode, _, blob = meta.split()
            if is_protected(path, self.patterns):
                self.start[path] = _Entry(mode, blob)
        self._keep_ignored_at_start(ignored)

    def _keep_ignored_at_start(self, listing: Callable[[], list[str]] | None) -> None:
        """Protected files git ignores (a scratch test, a local conftest.py) are the user's too: the
        start tree lacks them, so their content is stored now, or they would count as new and be removed."""
        ignored = [p for p in self._ignored(listing) if p not in self.start and not CHECK_OUTPUT.search(p)
                   and is_protected(p, self.patterns)]
        links = [p for p in ignored if (self.root / p).is_symlink()]
        regular = [p for p in ignored if p not in links and (self.root / p).is_file()]
        for path, blob in zip(regular, file_blobs(self.root, regular, store=True), strict=True):
            mode = "100755" if os.stat(self.root / path).st_mode & 0o111 else "100644"
            self.start[path] = _Entry(mode, blob)
        for path in links:
            self.start[path] = _Entry(SYMLINK_MODE, link_blob(self.root, path))

    def changed(self, current_files: Sequence[str], ignored: list[str] | None = None) -> list[str]:
        """Protected paths whose content differs from the start (changed, deleted or new). `ignored`:
        ignored_entries(root) as it is now, when the caller has just listed it."""
        if not self.patterns:
            return []
        differ: list[str] = []
        regular: list[str] = []
        for path, entry in self.start.items():
            full = self.root / path
            if entry.mode == SYMLINK_MODE or full.is_symlink() or not full.is_file():
                if not (full.is_symlink() and entry.mode == SYMLINK_MODE
                        and os.readlink(full) == read_blob(self.root, entry.blob).decode("utf-8", "replace")):
                    differ.append(path)
            else:
                regular.append(path)
        for path, blob in zip(regular, file_blobs(self.root, regular), strict=True):
            if blob != self.start[path].blob or not _mode_matches(self.root / path, self.start[path].mode):
                differ.append(path)
        differ += [p for p in (*current_files, *self._ignored(None if ignored is None else lambda: ignored))
                   if p not in self.start
                   and not CHECK_OUTPUT.search(p) and is_protected(p, self.patterns)]
        return sorted(set(differ))

    def _ignored(self, listing: Callable[[], list[str]] | None = None) -> list[str]:
        """Ignored files outside ignored folders: a `.gitignore` line must not hide a new conftest.py."""
        entries = listing() if listing is not None else ignored_entries(self.root)
        return [p for p in entries if not p.endswith("/") and not p.startswith(".agentloop/")]

    def restore(self, paths: Sequence[str]) -> list[str]:
        """Put `paths` back as they were at the start; returns the ones that could not be restored
        (a symlinked parent leading outside the repository: then nothing is written there)."""
        failed = []
        for path in paths:
            try:
                target = safe_path(self.root, path)
            except PathRefused:
                failed.append(path)
                continue
            entry = self.start.get(path)
            if target.is_symlink() or target.exists():
                if target.is_dir() and not target.is_symlink():
                    failed.append(path)
                    continue
                target.unlink()
            if entry is None:
                continue  # a protected file that appeared during the run: removed
            data = read_blob(self.root, entry.blob)
            target.parent.mkdir(parents=True, exist_ok=True)
            if entry.mode == SYMLINK_MODE:
                os.symlink(data.decode("utf-8", "replace"), target)
                continue
            atomic_write(target, data, mode=0o755 if entry.mode == "100755" else 0o644)
        return failed

    def readonly_paths(self) -> list[Path]:
        """What the sandbox mounts read-only: each protected file, and each protected directory
        named by a pattern like `tests/**` or `tests/` (so no new file can appear in it)."""
        paths = [self.root / p for p in self.start if (self.root / p).exists()]
        for pat in self.patterns:
            base = pat.strip().strip("/")
            base = base[:-3] if base.endswith("/**") else base
            if base and not re.search(r"[*?\[]", base) and (self.root / base).is_dir():
                paths.append(self.root / base)
        return paths


def _mode_matches(path: Path, mode: str) -> bool:
    return bool(path.stat().st_mode & 0o111) == (mode == "100755")


# -- suspicious edits -----------------------------------------------------------------------------

TEST_PATH = re.compile(r"(^|/)(tests?|spec|__tests__)/|(^|/)(test_[^/]*|[^/]*_test\.\w+|conftest\.py"
                       r"|[^/]*\.(test|spec)\.\w+)$")
SKIP = re.compile(r"(@pytest\.mark\.(skip|skipif|xfail)\b|\bpytest\.(skip|xfail|importorskip)\(|@unittest\.skip"
                  r"|\.skipTest\(|@unittest\.expectedFailure|\b(it|test|describe)\.(skip|todo)\(|\bx(it|describe)\("
                  r"|#\[ignore\]|\bt\.Skip(Now|f)?\()")
ASSERTION = re.compile(r"^\s*(assert\b|self\.assert\w*\(|expect\(|assert_eq!|assert!|assert_ne!"
                       r"|(t|s)\.(Error|Fatal)f?\()")
EXIT = re.compile(r"\b(sys\.exit|os\._exit|exit|quit)\s*\(")
HARD_EXIT = re.compile(r"\bos\._exit\s*\(")
LITERAL = r"(-?\d[\d_.eE+-]*|'[^']*'|\"[^\"]*\"|True|False|None|\[[^\]]*\]|\([^)]*\))"
SPECIAL_IF = re.compile(rf"^\s*(el)?if\b.*(==|\bis\b|\bin\b)\s*{LITERAL}.*:\s*(return\s+{LITERAL}\s*)?$")
RETURN_LITERAL = re.compile(rf"^\s*return\s+{LITERAL}\s*$")
TRIVIAL = {"0", "1", "-1", "None", "True", "False", "''", '""', "[]", "()", "{}"}  # base cases, not gaming


PYTEST_DETECTION = re.compile(r"""(['"])_?pytest\1\s+(not\s+)?in\s+sys\.(modules|argv)"""
                              r"""|sys\.modules\s*(\.get\(|\[)\s*['"]_?pytest"""
                              r"|PYTEST_(CURRENT_TEST|VERSION|XDIST_WORKER|ADDOPTS)|sys\.argv\[0\].*pytest"
                              r"|pytest.*\bin\s+sys\.argv")
EXIT_TRICK = re.compile(r"atexit\.register\(.*\b(exit|_exit|kill|getattr)\b|getattr\(\s*os\s*,"
                        r"|os\.kill\(\s*os\.getpid\(|\bos\.abort\(|\bsys\.exitfunc\b")
VCS_FILES = re.compile(r"(^|/)\.git(ignore|attributes)$")
NUMBER_OR_STRING = re.compile(r"(?<![\w.])-?\d[\d_]*(\.\d+)?(?![\w.])|'[^'\n]{1,80}'" r'|"[^"\n]{1,80}"')


def literals_of(texts: Iterable[str]) -> frozenset[str]:
    """The number and string literals of test files, for spotting code special-cased on them."""
    found: set[str] = set()
    for text in texts:
        found.update(_literal(m.group(0)) for m in NUMBER_OR_STRING.finditer(text))
    return frozenset(v for v in found if v and v not in TRIVIAL_VALUES)


TRIVIAL_VALUES = {"-1", "0", "1", "", " "}


def _literal(text: str) -> str:
    text = text.strip()
    return text[1:-1] if text[:1] in "'\"" else text.replace("_", "")


def scan_diff(diff: str, harness: Sequence[str] = (), literals: frozenset[str] = frozenset()) -> list[dict[str, str]]:
    """Flags for a unified diff that look like gaming the checks rather than fixing the code:
    new skip/xfail markers, deleted assertions, exits in tests, exit tricks, special-cased expected
    values (or literals taken from the tests), code that asks whether it runs under pytest, and
    changes to the harness (`harness` patterns: conftest, pytest configuration, Makefile, ...) or
    to .gitignore/.gitattributes. Pass a diff made with `text_diff`, so attributes cannot hide lines."""
    flags: list[dict[str, str]] = []
    for path, added, removed in _files(diff):
        in_test = bool(TEST_PATH.search(path))

        def flag(kind: str, line: str, path: str = path) -> None:
            flags.append({"kind": kind, "path": path, "line": line.strip()[:200]})

        if VCS_FILES.search(path):
            flag("vcs_attributes", (added or removed or [""])[0])
        elif harness_file(path, harness):
            flag("harness_edit", (added or removed or [""])[0])
        elif path.endswith(("pyproject.toml", "setup.cfg")) and any(re.search(r"pytest|addopts", a) for a in added):
            flag("harness_edit", next(a for a in added if re.search(r"pytest|addopts", a)))
        for line in added:
            if SKIP.search(line):
                flag("skip_marker", line)
            if HARD_EXIT.search(line) or (in_test and EXIT.search(line)):
                flag("exit_in_test" if in_test else "hard_exit", line)
            elif EXIT_TRICK.search(line):
                flag("exit_trick", line)
            if not in_test and PYTEST_DETECTION.search(line):
                flag("pytest_detection", line)
        kept = {a.strip() for a in added}
        for line in removed:
            if ASSERTION.search(line) and line.strip() not in kept:
                flag("deleted_assertion", line)
        if not in_test:
            for i, line in enumerate(added):
                if not SPECIAL_IF.match(line):
                    continue
                tail = line.rsplit(":", 1)[-1]
                ret = tail if "return" in tail else added[i + 1] if i + 1 < len(added) else ""
                value = ret.strip().removeprefix("return").strip()
                returns_literal = bool(RETURN_LITERAL.match(ret.strip())) and value not in TRIVIAL
                if returns_literal:
                    flag("special_case", line if ret is tail else f"{line.strip()} / {ret.strip()}")
                elif literals:
                    compared = {_literal(m.group(0)) for m in NUMBER_OR_STRING.finditer(line.split(":")[0])}
                    if len(compared & literals) >= 2:
                        flag("test_literal_case", line)
    return flags


def harness_file(path: str, harness: Sequence[str]) -> bool:
    """A file of the harness other than a test module (edits to tests are judged line by line)."""
    if not harness or not is_protected(path, harness):
        return False
    return not TEST_PATH.search(path) or path.endswith("conftest.py") or bool(VCS_FILES.search(path))


def text_diff(root: Path, old_tree: str, new_tree: str) -> str:
    """A diff between two trees that no `.gitattributes` can make binary or filter (for scan_diff)."""
    return git([*gitbatch.DIFF_ARGS, "-p", "--text", old_tree, new_tree], root)


def _files(diff: str) -> list[tuple[str, list[str], list[str]]]:
    """(path, added lines, removed lines) per file of a git diff."""
    out: list[tuple[str, list[str], list[str]]] = []
    for line in diff.splitlines():
        if line.startswith("diff --git "):
            out.append((line.split(" b/", 1)[-1], [], []))
        elif not out or line.startswith(("+++", "---")):
            continue
        elif line.startswith("+"):
            out[-1][1].append(line[1:])
        elif line.startswith("-"):
            out[-1][2].append(line[1:])
    return out


def suspicious_edits(root: Path, before: str, after: str, changed: Sequence[str], harness: Sequence[str],
                     literals: frozenset[str], diff: str | None = None) -> list[dict[str, str]]:
    """The flags an edit from tree `before` to `after` earns (see scan_diff), plus one for each harness
    file in `changed` that git does not see (ignored): it is not in the diff, yet it was written.
    `diff`: the same change as Workspace.diff wrote it, used when it holds no binary part (it is then
    text_diff's text; a file it shows as binary may still hide a test edit, so text_diff runs)."""
    if diff is None or "GIT binary patch" in diff or "\nBinary files " in diff:
        diff = text_diff(root, before, after)
    suspicious = scan_diff(diff, harness, literals)
    seen = {f["path"] for f in suspicious}
    for path in changed:
        if path not in seen and harness_file(path, harness):
            suspicious.append({"kind": "harness_edit", "path": path, "line": "(not in the diff: ignored by git)"})
    return suspicious
