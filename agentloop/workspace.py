"""The git working tree a run edits: finding it, listing it, snapshotting it, diffing it.

Snapshots are git tree objects written through a private index file, so the user's index,
branches and stash are never touched.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from agentloop.errors import UsageError

AGENTLOOP_DIR = ".agentloop"


def git(args: list[str], cwd: Path, *, env: dict[str, str] | None = None, check: bool = True,
        input_text: str | None = None) -> str:
    """Run git and return stdout; a failure raises with git's own one-line message."""
    proc = subprocess.run(["git", *args], cwd=cwd, env=env, input=input_text, capture_output=True, text=True)
    if check and proc.returncode != 0:
        message = (proc.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise RuntimeError(f"git {' '.join(args[:2])} failed: {message}")
    return proc.stdout


def find_repo_root(start: Path) -> Path:
    proc = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=start, capture_output=True, text=True)
    if proc.returncode != 0:
        raise UsageError(f"{start}: not inside a git repository; run agentloop from a git repo (or `git init`)")
    return Path(proc.stdout.strip()).resolve()


class Workspace:
    """A git working tree that agentloop edits and runs checks in."""

    def __init__(self, root: Path):
        self.root = root.resolve()
        self.git_dir = Path(git(["rev-parse", "--absolute-git-dir"], self.root).strip())

    def exclude_agentloop_dir(self) -> None:
        """Keep `.agentloop/` out of git through `.git/info/exclude`, not the user's .gitignore."""
        common = Path(git(["rev-parse", "--git-common-dir"], self.root).strip())
        exclude = (common if common.is_absolute() else self.root / common) / "info" / "exclude"
        exclude.parent.mkdir(parents=True, exist_ok=True)
        existing = exclude.read_text(encoding="utf-8") if exclude.exists() else ""
        if f"/{AGENTLOOP_DIR}/" not in existing.splitlines():
            with open(exclude, "a", encoding="utf-8") as fh:
                fh.write(("" if existing.endswith("\n") or not existing else "\n") + f"/{AGENTLOOP_DIR}/\n")

    def list_files(self) -> list[str]:
        """Tracked files plus untracked ones git does not ignore, repo-relative, sorted."""
        out = git(["ls-files", "-z", "--cached", "--others", "--exclude-standard"], self.root)
        files = {f for f in out.split("\0") if f and not f.startswith(AGENTLOOP_DIR + "/")}
        return sorted(f for f in files if (self.root / f).is_file())

    def head(self) -> str | None:
        out = git(["rev-parse", "--verify", "-q", "HEAD"], self.root, check=False).strip()
        return out or None

    def snapshot(self) -> str:
        """A tree object of the working tree now (tracked + untracked-not-ignored files)."""
        with tempfile.TemporaryDirectory(prefix="agentloop-index-") as tmp:
            index = Path(tmp) / "index"
            real_index = self.git_dir / "index"
            if real_index.exists():
                shutil.copyfile(real_index, index)  # reuse stat data: only changed files get hashed
            env = {**os.environ, "GIT_INDEX_FILE": str(index)}
            git(["add", "-A", "--", "."], self.root, env=env)
            return git(["write-tree"], self.root, env=env).strip()

    def diff(self, old_tree: str, new_tree: str | None = None) -> str:
        """A git-style patch from `old_tree` to `new_tree` (default: the working tree now)."""
        new_tree = new_tree or self.snapshot()
        return git(["diff", "--binary", "--no-color", "--no-ext-diff", old_tree, new_tree], self.root)

    def changes(self, old_tree: str, new_tree: str) -> list[Change]:
        """The files that differ between two trees, with both sides' mode and blob."""
        return tree_changes(self.root, old_tree, new_tree)

    def restore(self, tree: str, paths: set[str] | None = None) -> list[str]:
        """Make the files git sees equal to `tree` (only `paths`, if given), each written whole;
        returns the paths changed. Ignored files are left alone."""
        changed = []
        for change in self.changes(self.snapshot(), tree):
            if paths is None or change.path in paths:
                write_entry(self.root, change.path, change.new_mode, change.new_sha)
                changed.append(change.path)
        return changed


ZERO_SHA = "0" * 40


@dataclass(frozen=True)
class Change:
    path: str
    old_mode: str
    new_mode: str
    old_sha: str
    new_sha: str

    @property
    def deleted(self) -> bool:
        return self.new_sha == ZERO_SHA


def tree_changes(cwd: Path, old_tree: str, new_tree: str) -> list[Change]:
    out = git(["diff", "--raw", "-z", "--no-renames", "--no-abbrev", "--no-ext-diff", old_tree, new_tree], cwd)
    fields = out.split("\0")
    changes = []
    for meta, path in zip(fields[0::2], fields[1::2], strict=False):
        if not meta.startswith(":"):
            continue
        old_mode, new_mode, old_sha, new_sha, _status = meta[1:].split(" ")
        changes.append(Change(path, old_mode, new_mode, old_sha, new_sha))
    return changes


def read_blob(cwd: Path, sha: str, path: str | None = None) -> bytes:
    """A blob's content as git would check it out at `path`: line endings and smudge filters applied,
    so a file snapshotted (cleaned) and written back comes out with the bytes it had."""
    args = ["cat-file", "--filters", f"--path={path}", sha] if path else ["cat-file", "blob", sha]
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True)
    if proc.returncode != 0:
        raise RuntimeError(f"git cat-file failed for {sha[:12]}: {proc.stderr.decode(errors='replace').strip()}")
    return proc.stdout


def inside(root: Path, rel: str) -> Path:
    """`root/rel`, refusing any path whose directory resolves outside `root` or into a `.git`."""
    target = root / rel
    parts = Path(rel).parts
    if not parts or Path(rel).is_absolute() or ".." in parts or any(p.lower() == ".git" for p in parts):
        raise RuntimeError(f"refusing to write {rel!r}: not a plain path inside the repository")
    real_root = Path(os.path.realpath(root))
    real_dir = Path(os.path.realpath(target.parent))
    try:
        rest = real_dir.relative_to(real_root)
    except ValueError:
        raise RuntimeError(f"refusing to write {rel!r}: its directory leads outside the repository") from None
    if any(p.lower() == ".git" for p in rest.parts):
        raise RuntimeError(f"refusing to write {rel!r}: its directory leads into .git/")
    return target


def temp_name(target: Path, tag: str) -> Path:
    return target.with_name(f".{target.name}.{tag}.agentloop-tmp")


def stage_entry(root: Path, rel: str, mode: str, sha: str, tag: str) -> Path | None:
    """Write the new content of `rel` beside it under a temporary name (None for a deletion)."""
    if sha == ZERO_SHA:
        return None
    target = inside(root, rel)
    if target.is_dir() and not target.is_symlink():
        raise RuntimeError(f"refusing to replace the directory {rel!r} with a file; move it away first")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(target, tag)
    if os.path.lexists(tmp):
        os.unlink(tmp)
    data = read_blob(root, sha, None if mode == "120000" else rel)
    if mode == "120000":
        os.symlink(os.fsdecode(data), tmp)
    else:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o755 if mode == "100755" else 0o644)
    return tmp


def commit_entry(root: Path, rel: str, tmp: Path | None) -> None:
    """Put a staged file in place (one rename), or delete `rel` when `tmp` is None."""
    target = inside(root, rel)
    if tmp is None:
        if os.path.lexists(target) and not target.is_dir():
            os.unlink(target)
        return
    os.replace(tmp, target)


def write_entry(root: Path, rel: str, mode: str, sha: str) -> None:
    commit_entry(root, rel, stage_entry(root, rel, mode, sha, f"{os.getpid()}"))
