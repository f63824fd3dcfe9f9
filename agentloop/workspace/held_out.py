"""Held-out acceptance material the model's code must never see: `accept_files` and paths that
hidden (`--accept`) checks name outside the repository.

`accept_files` (SRC[:DEST]): SRC, a file or directory outside the repository, is read once at the
start of the run and laid into the workspace at DEST only while a hidden check runs, then removed
(whatever the model had at DEST is put back). This is how SWE-bench grades: its test patch is
applied only at grading time. Under the sandbox the laid copy is read-only and SRC itself, and any
outside path a hidden check names, is hidden from every other check; without the sandbox a check
that changes the laid copy voids the verdict (and nothing outside the workspace can be hidden).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from agentloop.errors import UsageError
from agentloop.workspace.repo import inside
from agentloop.workspace.sandbox import Bind

# Never hidden even if a hidden check names them: the system and the checks' own tools.
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt", "/proc", "/dev",
               "/sys", "/run", "/var/lib", "/snap", "/nix")


def parse_spec(spec: str) -> tuple[str, str]:
    """`SRC[:DEST]` -> (SRC, DEST); DEST defaults to SRC's base name."""
    src, sep, dest = spec.partition(":")
    src = src.strip()
    if not src:
        raise UsageError(f"--accept-files {spec!r}: no source path; write SRC[:DEST], e.g. "
                         "../held-out/test_x.py:tests/test_x.py")
    return src, (dest.strip() if sep and dest.strip() else os.path.basename(src.rstrip("/")))


@dataclass
class LaidFile:
    rel: str  # repo-relative path inside the workspace
    data: bytes
    mode: int


@dataclass
class HeldOut:
    """The run's held-out files (read into memory at the start) and outside paths of hidden checks."""

    sources: list[Path] = field(default_factory=list)
    dests: list[str] = field(default_factory=list)
    files: list[LaidFile] = field(default_factory=list)
    named: list[Path] = field(default_factory=list)  # outside paths hidden checks name

    @property
    def empty(self) -> bool:
        return not self.sources and not self.named

    def hide_paths(self) -> list[Path]:
        """What checks outside the acceptance phase must not see."""
        return [*self.sources, *self.named]

    def acceptance_binds(self) -> list[Bind]:
        """Outside paths a hidden check names, read-only (the private /tmp would hide them)."""
        return [Bind(p, p) for p in self.named]

    def dest_paths(self, root: Path) -> list[Path]:
        return [root / rel for rel in self.dests]

    @contextlib.contextmanager
    def laid_in(self, root: Path, changed: list[str]) -> Iterator[None]:
        """The files at their DEST while the block runs; then removed and the model's files put back.
        DESTs whose content the block changed are appended to `changed`."""
        if not self.files:
            yield
            return
        import tempfile

        backup = Path(tempfile.mkdtemp(prefix="agentloop-heldout-"))
        moved: list[str] = []
        made_dirs: list[Path] = []
        try:
            for laid in self.files:
                target = inside(root, laid.rel)
                if os.path.lexists(target):  # the model's own file there: put aside, put back after
                    (backup / laid.rel).parent.mkdir(parents=True, exist_ok=True)
                    shutil.move(str(target), str(backup / laid.rel))
                    moved.append(laid.rel)
                missing = [p for p in (target.parent, *target.parent.parents)
                           if p.is_relative_to(root) and not p.exists()]
                made_dirs += [p for p in missing if p not in made_dirs]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(laid.data)
                os.chmod(target, laid.mode)
            yield
        finally:
            for laid in self.files:
                target = root / laid.rel
                try:
                    same = target.is_file() and not target.is_symlink() and target.read_bytes() == laid.data
                except OSError:
                    same = False
                if not same:
                    changed.append(laid.rel)
                if target.is_dir() and not target.is_symlink():
                    shutil.rmtree(target, ignore_errors=True)
                elif os.path.lexists(target):
                    target.unlink()
            for path in sorted(made_dirs, key=lambda p: len(p.parts), reverse=True):
                shutil.rmtree(path, ignore_errors=True)  # made for the held-out files: theirs alone
            for rel in moved:
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.move(str(backup / rel), str(root / rel))
            shutil.rmtree(backup, ignore_errors=True)


def load(specs: Iterable[tuple[str, str]], repo: Path, hidden_commands: Iterable[str]) -> HeldOut:
    """Read the accept files, refusing a SRC inside the repository or a DEST that leaves it."""
    repo = repo.resolve()
    held = HeldOut()
    for src_text, dest in specs:
        src = Path(os.path.expanduser(src_text))
        src = (src if src.is_absolute() else repo / src).resolve()
        if not src.exists():
            raise UsageError(f"accept_files: {src_text}: no such file or directory; give a path outside "
                             "the repository")
        if src.is_relative_to(repo):
            raise UsageError(f"accept_files: {src_text} is inside the repository, where the model can read it; "
                             "move it outside (e.g. ../held-out/) and pass SRC:DEST")
        parts = Path(dest).parts
        if (not parts or Path(dest).is_absolute() or ".." in parts
                or any(p.lower() in (".git", ".agentloop") for p in parts)):
            raise UsageError(f"accept_files: DEST {dest!r} must be a relative path inside the repository "
                             "(not .git or .agentloop); e.g. tests/test_hidden.py")
        held.sources.append(src)
        held.dests.append(str(Path(*parts)))
        if src.is_dir():
            for path in sorted(src.rglob("*")):
                if path.is_file():
                    rel = str(Path(*parts, path.relative_to(src)))
                    held.files.append(LaidFile(rel, path.read_bytes(), path.stat().st_mode & 0o777))
        else:
            held.files.append(LaidFile(str(Path(*parts)), src.read_bytes(), src.stat().st_mode & 0o777))
    for command in hidden_commands:
        for path in named_paths(command, repo):
            if path not in held.named:
                held.named.append(path)
    return held


def named_paths(command: str, repo: Path) -> list[Path]:
    """Absolute paths in a command that exist outside the repository and the system's own folders."""
    try:
        words = shlex.split(command)
    except ValueError:
        words = command.split()
    tools = {Path(p).resolve() for p in os.environ.get("PATH", "").split(os.pathsep) if os.path.isabs(p)}
    prefixes = {Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve()}
    found = []
    for word in words:
        candidate = word.split("=", 1)[-1] if word.startswith("-") else word
        if not candidate.startswith("/") or not os.path.exists(candidate):
            continue
        path = Path(os.path.normpath(candidate))
        real = path.resolve()
        if (real == Path("/") or real.is_relative_to(repo) or repo.is_relative_to(real)
                or any(real.is_relative_to(d) for d in SYSTEM_DIRS)
                or any(real.is_relative_to(t) or t.is_relative_to(real) for t in tools)
                or any(real.is_relative_to(p) or p.is_relative_to(real) for p in prefixes)):
            continue
        found.append(path)
    return found


def listing(root: Path, skip: Iterable[str] = ()) -> set[str]:
    """Every path under `root` (but `.git` and the top-level names in `skip`), to find what a hidden
    check created: its bytecode, caches and reports could carry the held-out tests to the model."""
    skipped = {".git", *skip}
    found: set[str] = set()
    for folder, dirs, files in os.walk(root):
        rel = os.path.relpath(folder, root)
        if rel == ".":
            dirs[:] = [d for d in dirs if d not in skipped]
            rel = ""
        found.update(os.path.join(rel, name) for name in (*dirs, *files))
    return found


def remove_new(root: Path, before: set[str], skip: Iterable[str] = (), *, only_ignored: bool = False) -> list[str]:
    """Delete what appeared under `root` since `before` was listed; returns the removed paths.

    `only_ignored` (a tree the user may be working in, --in-place): only what git ignores (caches,
    bytecode, reports), never a new source file of theirs."""
    new_paths = sorted(listing(root, skip) - before, key=len)
    if only_ignored and new_paths:
        from agentloop.workspace.repo import git

        out = git(["check-ignore", "--stdin", "-z"], root, check=False, input_text="\0".join(new_paths) + "\0")
        ignored = set(out.split("\0"))
        new_paths = [rel for rel in new_paths if rel in ignored]
    removed = []
    for rel in new_paths:
        path = root / rel
        if not os.path.lexists(path):
            continue  # inside a directory already removed
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(rel)
    return removed


HIDDEN_CHECK_ENV = {"PYTHONDONTWRITEBYTECODE": "1"}  # no .pyc of the held-out tests left behind


def hidden_check_env(env: dict[str, str]) -> dict[str, str]:
    """A hidden check's environment: no bytecode, no pytest cache (both would name held-out tests)."""
    addopts = env.get("PYTEST_ADDOPTS", "")
    if "no:cacheprovider" not in addopts:
        addopts = f"{addopts} -p no:cacheprovider".strip()
    return {**env, **HIDDEN_CHECK_ENV, "PYTEST_ADDOPTS": addopts}
