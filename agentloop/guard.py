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
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from agentloop.edits.paths import PathRefused, is_protected, safe_path
from agentloop.gitsafe import git_argv, git_env
from agentloop.workspace import git

SYMLINK_MODE = "120000"


@dataclass(frozen=True)
class _Entry:
    mode: str
    blob: str


class ProtectedFiles:
    """The protected files of a workspace as they were at the start of a run."""

    def __init__(self, root: Path, patterns: Sequence[str], start_tree: str):
        self.root, self.patterns = root, tuple(p for p in patterns if p.strip())
        self.start: dict[str, _Entry] = {}
        if not self.patterns:
            return
        out = git(["ls-tree", "-r", "-z", "--full-tree", start_tree], root)
        for item in out.split("\0"):
            if not item:
                continue
            meta, path = item.split("\t", 1)
            mode, _, blob = meta.split()
            if is_protected(path, self.patterns):
                self.start[path] = _Entry(mode, blob)

    def changed(self, current_files: Sequence[str]) -> list[str]:
        """Protected paths whose content differs from the start (changed, deleted or new)."""
        if not self.patterns:
            return []
        differ: list[str] = []
        regular: list[str] = []
        for path, entry in self.start.items():
            full = self.root / path
            if entry.mode == SYMLINK_MODE or full.is_symlink() or not full.is_file():
                if not (full.is_symlink() and entry.mode == SYMLINK_MODE
                        and os.readlink(full) == self._blob(entry.blob).decode("utf-8", "replace")):
                    differ.append(path)
            else:
                regular.append(path)
        if regular:
            proc = subprocess.run(git_argv("hash-object", "--no-filters", "--stdin-paths"), cwd=self.root,
                                  env=git_env(), input="\n".join(regular) + "\n", capture_output=True, text=True,
                                  check=True)
            for path, blob in zip(regular, proc.stdout.split(), strict=True):
                if blob != self.start[path].blob or not _mode_matches(self.root / path, self.start[path].mode):
                    differ.append(path)
        differ += [p for p in current_files if p not in self.start and is_protected(p, self.patterns)]
        return sorted(set(differ))

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
            data = self._blob(entry.blob)
            target.parent.mkdir(parents=True, exist_ok=True)
            if entry.mode == SYMLINK_MODE:
                os.symlink(data.decode("utf-8", "replace"), target)
                continue
            tmp = target.with_name(f".{target.name}.agentloop-restore")
            tmp.write_bytes(data)
            os.chmod(tmp, 0o755 if entry.mode == "100755" else 0o644)
            os.replace(tmp, target)
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

    def _blob(self, blob: str) -> bytes:
        return subprocess.run(git_argv("cat-file", "blob", blob), cwd=self.root, env=git_env(), capture_output=True,
                              check=True).stdout


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


def scan_diff(diff: str) -> list[dict[str, str]]:
    """Flags for a unified diff that look like gaming the checks rather than fixing the code:
    new skip/xfail markers, deleted assertions, exits in tests, special-cased expected values."""
    flags: list[dict[str, str]] = []
    for path, added, removed in _files(diff):
        in_test = bool(TEST_PATH.search(path))

        def flag(kind: str, line: str, path: str = path) -> None:
            flags.append({"kind": kind, "path": path, "line": line.strip()[:200]})

        for line in added:
            if SKIP.search(line):
                flag("skip_marker", line)
            if HARD_EXIT.search(line) or (in_test and EXIT.search(line)):
                flag("exit_in_test" if in_test else "hard_exit", line)
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
                if RETURN_LITERAL.match(ret.strip()) and value not in TRIVIAL:
                    flag("special_case", line if ret is tail else f"{line.strip()} / {ret.strip()}")
    return flags


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
