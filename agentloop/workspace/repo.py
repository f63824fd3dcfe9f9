"""The git working tree a run edits: finding it, listing it, snapshotting it, diffing it.

Snapshots are git tree objects written through a private index file, so the user's index,
branches and stash are never touched.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from agentloop.errors import UsageError
from agentloop.files import looks_binary, names_git_dir, real_inside
from agentloop.workspace import gitbatch, objects, trees
from agentloop.workspace.gitsafe import SAFE_CONFIG, git_env, toplevel

AGENTLOOP_DIR = ".agentloop"


def git_bytes(args: list[str], cwd: Path, *, env: dict[str, str] | None = None, check: bool = True,
              input_bytes: bytes | None = None) -> bytes:
    """Run git (hardened, see SAFE_CONFIG) and return its stdout as bytes."""
    proc = subprocess.run(["git", *SAFE_CONFIG, *args], cwd=cwd, env=git_env(env), input=input_bytes,
                          capture_output=True)
    if check and proc.returncode != 0:
        raise _failure(args, proc.stderr)
    return proc.stdout


def _failure(args: list[str], stderr: bytes) -> RuntimeError:
    """A failed git command as one line: the command and git's own last word."""
    message = (stderr.decode(errors="replace").strip().splitlines() or ["(no message)"])[-1]
    return RuntimeError(f"git {' '.join(args[:2])} failed: {message}")


def git(args: list[str], cwd: Path, *, env: dict[str, str] | None = None, check: bool = True,
        input_text: str | None = None) -> str:
    """Run git and return stdout; a failure raises with git's own one-line message."""
    out = git_bytes(args, cwd, env=env, check=check,
                    input_bytes=input_text.encode("utf-8", "surrogateescape") if input_text is not None else None)
    return out.decode("utf-8", "surrogateescape")


_IGNORED = ["ls-files", "-z", "--others", "--ignored", "--exclude-standard", "--directory"]
_LISTED = ["ls-files", "-z", "--cached", "--others", "--exclude-standard"]


def ignored_entries(root: Path) -> list[str]:
    """The untracked files git ignores under `root`, each ignored folder as one `name/` entry."""
    out = git(_IGNORED, root, check=False)
    return [p for p in out.split("\0") if p]


def git_side_by_side(commands: list[list[str]], cwd: Path, env: dict[str, str] | None = None) -> list[str]:
    """The outputs of several git commands that do not depend on each other, run at the same time (each
    raising as `git` does)."""
    procs = [subprocess.Popen(["git", *SAFE_CONFIG, *args], cwd=cwd, env=git_env(env), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, stdin=subprocess.DEVNULL) for args in commands]
    outs = [proc.communicate() for proc in procs]
    for args, proc, (_, err) in zip(commands, procs, outs, strict=True):
        if proc.returncode != 0:
            raise _failure(args, err)
    return [out.decode("utf-8", "surrogateescape") for out, _ in outs]


def find_repo_root(start: Path) -> Path:
    root = toplevel(start)
    if root is None:
        raise UsageError(f"{start}: not inside a git repository; run agentloop from a git repo (or `git init`)")
    return root


_COMMON_DIRS: dict[str, Path] = {}
_INDEX_PREFIX = "agentloop-index-"


def _remove_dead_indexes() -> None:
    """Remove the private indexes (Workspace.tree_with) of processes that were killed before they could."""
    from agentloop.workspace.isolation import alive  # (isolation builds on this module)

    for folder in Path(tempfile.gettempdir()).glob(f"{_INDEX_PREFIX}*-*"):
        pid = folder.name[len(_INDEX_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and not alive(int(pid), None):
            shutil.rmtree(folder, ignore_errors=True)


def common_dir(root: Path) -> Path:
    """The git directory shared by all worktrees of the repository at `root` (its .git for a plain checkout).

    Asked several times per run set-up; one git process each time is worth saving (the answer is
    fixed for as long as the repository exists, and a missing one raises, which is not kept)."""
    key = str(Path(root).resolve())
    found = _COMMON_DIRS.get(key)
    if found is None:
        found = _keep_common_dir(key, git(["rev-parse", "--git-common-dir"], Path(key)).strip())
    return found


def _keep_common_dir(root: str, answer: str) -> Path:
    common = Path(answer)
    common = (common if common.is_absolute() else Path(root) / common).resolve()
    if len(_COMMON_DIRS) >= _MEMO_SIZE:
        _COMMON_DIRS.clear()
    _COMMON_DIRS[root] = common
    return common


def forget_worktrees(root: Path, under: Path) -> None:
    """Drop git's registration of every worktree whose folder was under `under` and is gone. Not
    `git worktree prune`: that also drops the user's own worktrees whose folders are away for a while
    (an unmounted disk), their index and HEAD with them."""
    admin = common_dir(root) / "worktrees"
    base = os.path.realpath(under)
    for entry in admin.iterdir() if admin.is_dir() else ():
        try:
            gitdir = (entry / "gitdir").read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):
            continue
        folder = os.path.dirname(gitdir)
        if os.path.commonpath([base, os.path.realpath(folder)]) == base and not os.path.exists(gitdir):
            shutil.rmtree(entry, ignore_errors=True)


@dataclass(frozen=True)
class FreshCheckout:
    """What a caller knows of a working tree it has just made from one commit, with nothing run in it
    since (a batch rollout's): its files are exactly `tree`, that commit's, with nothing untracked and
    nothing ignored beside them. A run then takes its starting state from this, not from git."""

    commit: str
    tree: str
    remote: str | None = None  # where it came from, for the run's header


def commit_tree_id(cwd: Path, commit: str) -> str | None:
    """The tree id of commit `commit` (an object id), read through the long-lived `git cat-file`."""
    found = gitbatch.read_object(cwd, commit)
    if found is None or found[0] != "commit" or not found[1].startswith(b"tree "):
        return None
    return found[1][5:found[1].index(b"\n")].decode()


class Workspace:
    """A git working tree that agentloop edits and runs checks in."""

    def __init__(self, root: Path, git_dir: Path | None = None):
        """`git_dir`: the .git folder of a plain repository the caller has just made at `root` (a
        batch rollout's), so also its common directory: not asked of git."""
        self.root = root.resolve()
        self._index: tuple[Path, str | None] | None = None  # tree_with's private index, and the tree it holds
        # The object folder of a repository agentloop made, where objects are written in process
        # (agentloop.workspace.objects); None in any other.
        self.store: Path | None = None
        if git_dir is not None:
            self.git_dir = git_dir.resolve()
            self.store = self.git_dir / "objects"
            _keep_common_dir(str(self.root), str(self.git_dir))
            return
        both = git(["rev-parse", "--absolute-git-dir", "--git-common-dir"], self.root).splitlines()
        if len(both) == 2:  # (a path holding a newline is asked for alone)
            _keep_common_dir(str(self.root), both[1])
        self.git_dir = Path(both[0] if len(both) == 2 else git(["rev-parse", "--absolute-git-dir"], self.root)[:-1])

    def exclude_agentloop_dir(self) -> None:
        """Keep `.agentloop/` out of git through `.git/info/exclude`, not the user's .gitignore."""
        exclude = common_dir(self.root) / "info" / "exclude"
        exclude.parent.mkdir(parents=True, exist_ok=True)
        existing = exclude.read_text(encoding="utf-8") if exclude.exists() else ""
        if f"/{AGENTLOOP_DIR}/" not in existing.splitlines():
            with open(exclude, "a", encoding="utf-8") as fh:
                fh.write(("" if existing.endswith("\n") or not existing else "\n") + f"/{AGENTLOOP_DIR}/\n")

    def list_files(self) -> list[str]:
        """Tracked files plus untracked ones git does not ignore, repo-relative, sorted."""
        return self._files(git(_LISTED, self.root))

    def files_and_ignored(self) -> tuple[list[str], list[str]]:
        """list_files and ignored_entries together, their two git commands run side by side."""
        listed, ignored = git_side_by_side([_LISTED, _IGNORED], self.root)
        return self._files(listed), [p for p in ignored.split("\0") if p]

    def _files(self, listed: str) -> list[str]:
        files = {f for f in listed.split("\0") if f and not f.startswith(AGENTLOOP_DIR + "/")}
        return sorted(f for f in files if (self.root / f).is_file())

    def head(self) -> str | None:
        out = git(["rev-parse", "--verify", "-q", "HEAD"], self.root, check=False).strip()
        return out or None

    def snapshot(self) -> str:
        """A tree object of the working tree now (tracked + untracked-not-ignored files), byte for byte.

        Starts from a copy of the user's index, so only files whose stat data changed are hashed,
        unless the index may hold converted content (line endings, filters): then every file is."""
        return self.snapshot_and_untracked()[0]

    def snapshot_and_untracked(self) -> tuple[str, list[str] | None]:
        """`snapshot`, and the untracked files git does not ignore as it listed them on the way
        (`git ls-files --others --exclude-standard`), or None when it did not list them."""
        with tempfile.TemporaryDirectory(prefix="agentloop-index-") as tmp:
            index = Path(tmp) / "index"
            env = {**os.environ, "GIT_INDEX_FILE": str(index)}
            real_index = self.git_dir / "index"
            if real_index.exists() and not self.may_convert():
                shutil.copy2(real_index, index)  # its mtime too: git then still re-checks racily clean entries
                out = git(["ls-files", "-z", "-t", "--modified", "--deleted", "--others", "--exclude-standard"],
                          self.root, env=env)
                tagged = [entry.split(" ", 1) for entry in out.split("\0") if entry]  # "? new", "C changed", ...
                paths = [f for _, f in tagged if not f.startswith(AGENTLOOP_DIR + "/")]
                try:
                    return self._write_tree(env, None, paths), [f for tag, f in tagged if tag == "?"]
                except RuntimeError:  # e.g. unmerged entries: start from nothing instead
                    index.unlink(missing_ok=True)
            return self._write_tree(env, "--empty", self.list_files()), None

    def may_convert(self) -> bool:
        """Whether the user's own `git add` may have stored files other than byte for byte: attributes
        files, or line-ending conversion in their configuration."""
        attributes = git(["ls-files", "-z", "--cached", "--others", "--exclude-standard", "--",
                          ":(glob)**/.gitattributes"], self.root)
        if attributes.strip("\0"):
            return True
        info = common_dir(self.root) / "info" / "attributes"
        if info.is_file() and info.stat().st_size:
            return True
        proc = subprocess.run(["git", "config", "--get-regexp", r"^core\.(autocrlf|attributesfile|eol)$"],
                              cwd=self.root, env=git_env(), capture_output=True, text=True)
        return any(line.split()[0].lower() != "core.autocrlf" or line.split()[-1].lower() not in ("false", "0")
                   for line in proc.stdout.splitlines() if line.strip())

    def tree_with(self, base: str | None, paths: Iterable[str]) -> str:
        """`base` (or an empty tree) with each of `paths` as it is on disk now, ignored or not: its exact
        bytes (no filter, no line-ending conversion, whatever .gitattributes says), or removed if gone.

        Written in process (agentloop.workspace.trees) when the edit is a plain one; otherwise through
        a private index. A run asks this once per turn with the tree it got the turn before, so that
        index is kept (in a temporary folder, removed with this object) and not read again then."""
        new = self._file_entries(paths)
        if base is None or base == "" or gitbatch.OBJECT_ID.match(base):
            tree = trees.edit_tree(self.root, base or None, new, self.store)
            if tree is not None:
                return tree
        if self._index is None:
            _remove_dead_indexes()
            folder = tempfile.mkdtemp(prefix=f"{_INDEX_PREFIX}{os.getpid()}-")
            self._index = (Path(folder) / "index", None)
            self._remove_index = weakref.finalize(self, shutil.rmtree, folder, True)
        index, holds = self._index
        env = {**os.environ, "GIT_INDEX_FILE": str(index)}
        self._index = (index, None)  # until the new tree is written: a failure leaves it unknown
        tree = self._index_tree(env, None if base and base == holds else base or "--empty", new)
        self._index = (index, tree)
        return tree

    def close(self) -> None:
        """Remove tree_with's private index and end the long-lived git processes in this tree now (a
        forked rollout ends with os._exit: no finalizer runs)."""
        gitbatch.close_all(self.root)
        if self._index is not None:
            self._remove_index()
            self._index = None

    def _write_tree(self, env: dict[str, str], read: str | None, paths: Iterable[str]) -> str:
        """Into the index named by `env` (first reset to tree `read`, if given), put `paths` as on disk."""
        return self._index_tree(env, read, self._file_entries(paths))

    def _file_entries(self, paths: Iterable[str]) -> dict[str, tuple[str, str] | None]:
        """Each of `paths` as on disk: (mode, blob id), its blob stored, or None for a path that is not
        a file or a symlink (or holds a newline); links and those first, then the regular files."""
        regular: list[str] = []
        entries: dict[str, tuple[str, str] | None] = {}
        for rel in dict.fromkeys(paths):
            path = self.root / rel
            if os.path.islink(path):
                entries[rel] = ("120000", link_blob(self.root, rel))
            elif "\n" not in rel and os.path.isfile(path):
                regular.append(rel)
            else:
                entries[rel] = None
        if self.store is not None:  # a repository agentloop made: written in process
            blobs = [objects.write_blob(self.store, (self.root / rel).read_bytes()) for rel in regular]
        else:
            blobs = file_blobs(self.root, regular, store=True)
        for rel, sha in zip(regular, blobs, strict=True):
            executable = os.stat(self.root / rel).st_mode & 0o111
            entries[rel] = ("100755" if executable else "100644", sha)
        return entries

    def _index_tree(self, env: dict[str, str], read: str | None, new: dict[str, tuple[str, str] | None]) -> str:
        """The tree of the index named by `env` (first reset to tree `read`, if given) with `new` in it."""
        if read is not None:
            git(["read-tree", read], self.root, env=env)
        if new:
            git(["update-index", "-z", "--index-info"], self.root, env=env,
                input_text="".join(f"{mode} {sha}\t{rel}\0" for rel, (mode, sha) in
                                   ((rel, entry or ("0", ZERO_SHA)) for rel, entry in new.items())))
        return git(["write-tree"], self.root, env=env).strip()

    def diff(self, old_tree: str, new_tree: str | None = None) -> str:
        """A git-style patch from `old_tree` to `new_tree` (default: the working tree now).

        Whether a file is text is decided by its content alone: a `.gitattributes` saying `-diff`,
        a textconv or an external diff driver cannot hide a change behind "Binary files differ"."""
        new_tree = new_tree or self.snapshot()
        key = (str(self.root), old_tree, new_tree)
        text = _DIFFS.get(key)
        if text is None:
            text = self._diff(old_tree, new_tree)
            if len(text) <= _MEMO_TEXT:
                _remember(_DIFFS, key, text)
        return text

    def _diff(self, old_tree: str, new_tree: str) -> str:
        patch = None
        if (str(self.root), old_tree, new_tree) in _CHANGES or old_tree == new_tree:
            changes = self.changes(old_tree, new_tree)
        else:
            changes, patch = self._changes_and_patch(old_tree, new_tree)
        if not changes:
            return ""
        binary = blobs_binary(self.root, [s for c in changes for s in (c.old_sha, c.new_sha) if s != ZERO_SHA])
        text_paths = [c.path for c in changes if not any(binary.get(s) for s in (c.old_sha, c.new_sha))]
        if patch is not None and len(text_paths) == len(changes):
            return patch  # (every file is text: the patch git wrote beside the listing is the one asked for)
        binary_paths = [c.path for c in changes if c.path not in set(text_paths)]
        env = {**os.environ, "GIT_LITERAL_PATHSPECS": "1"}
        out = ""
        if text_paths:
            out += git([*gitbatch.DIFF_ARGS, "-p", "--text", old_tree, new_tree, "--", *text_paths], self.root, env=env)
        if binary_paths:
            out += git([*gitbatch.DIFF_ARGS, "--binary", old_tree, new_tree, "--", *binary_paths], self.root, env=env)
        return out

    def _changes_and_patch(self, old_tree: str, new_tree: str) -> tuple[list[Change], str]:
        """`changes` and the `--text` patch of every changed file, from one git diff (`--raw -p`: the
        listing, a NUL, then the patch), asked of the long-lived `git diff-tree`. The listing is kept as
        `changes` keeps its own."""
        try:
            out = gitbatch.diff_trees(self.root, old_tree, new_tree)
        except gitbatch.GitBatchError:  # (a name that is not a tree's id): git says why
            out = git_bytes([*gitbatch.DIFF_ARGS, *_RAW, "-p", "--text", old_tree, new_tree], self.root)
        changes, pos = [], 0
        while out.startswith(b":", pos):
            meta_end = out.index(b"\0", pos)
            path_end = out.index(b"\0", meta_end + 1)
            old_mode, new_mode, old_sha, new_sha, _status = out[pos + 1:meta_end].decode().split(" ")
            path = out[meta_end + 1:path_end].decode("utf-8", "surrogateescape")
            changes.append(Change(path, old_mode, new_mode, old_sha, new_sha))
            pos = path_end + 1
        patch = out[pos + 1:] if changes else b""  # (after the NUL that ends the listing)
        _remember(_CHANGES, (str(self.root), old_tree, new_tree), tuple(changes))
        return changes, patch.decode("utf-8", "surrogateescape")

    def changes(self, old_tree: str, new_tree: str) -> list[Change]:
        """The files that differ between two trees, with both sides' mode and blob."""
        return tree_changes(self.root, old_tree, new_tree)

    def put(self, from_tree: str, to_tree: str, paths: Iterable[str] | None = None) -> list[str]:
        """Write into the tree on disk, file by file, what differs from `from_tree` to `to_tree` (only
        `paths`, if given); no other file is touched. Returns the paths written."""
        wanted = None if paths is None else set(paths)
        written = []
        for change in self.changes(from_tree, to_tree):
            if wanted is None or change.path in wanted:
                write_entry(self.root, change.path, change.new_mode, change.new_sha)
                written.append(change.path)
        return written

    def restore(self, tree: str, paths: set[str] | None = None) -> list[str]:
        """Make `paths` (default: the files git sees) equal to `tree`, each written whole; returns the
        paths changed."""
        now = self.snapshot() if paths is None else self.tree_with(tree, paths)
        return self.put(now, tree, paths)


def _utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def blobs_binary(cwd: Path, shas: list[str]) -> dict[str, bool]:
    """For each blob, whether its content is binary: a NUL byte in its first 8000 bytes (as git decides
    without attributes), or not UTF-8 (its diff would not be text a patch file can hold)."""
    result: dict[str, bool] = {}
    for sha in dict.fromkeys(shas):
        body = _cat_blob(cwd, sha) if gitbatch.OBJECT_ID.match(sha) else None
        if body is None:  # (not a blob's id: asked as before, a missing object read as empty)
            out = git_bytes(["cat-file", "--batch"], cwd, input_bytes=sha.encode() + b"\n")
            header, _, rest = out.partition(b"\n")
            size = int(header.split()[2]) if len(header.split()) == 3 else 0
            body = rest[:size]
        result[sha] = looks_binary(body) or not _utf8(body)
    return result


def _cat_blob(cwd: Path, sha: str) -> bytes | None:
    """The content of blob `sha` through the long-lived `git cat-file --batch`; None when `sha` names
    no blob (missing, or another kind of object): the caller asks git the old way."""
    found = gitbatch.read_object(cwd, sha)
    return found[1] if found is not None and found[0] == "blob" else None


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


# Two object ids name the same content for good, so what differs between them never changes: a
# turn asks for the same pair several times (the applied edit, the guard, the record, the end).
_MEMO_SIZE = 256
_MEMO_TEXT = 1 << 20  # a bigger patch is diffed again rather than held
_DIFFS: dict[tuple[str, str, str], str] = {}
_CHANGES: dict[tuple[str, str, str], tuple[Change, ...]] = {}


def tree_changes(cwd: Path, old_tree: str, new_tree: str) -> list[Change]:
    """The files that differ between two trees (see `Workspace.changes`). None between a tree and
    itself (the first edit of a run asks what the start and the result, still the same, differ by)."""
    if old_tree == new_tree and gitbatch.OBJECT_ID.match(old_tree):
        return []
    key = (str(cwd), old_tree, new_tree)
    if key in _CHANGES:
        return list(_CHANGES[key])
    changes = _tree_changes(cwd, old_tree, new_tree)
    _remember(_CHANGES, key, tuple(changes))
    return changes


_LISTINGS: dict[tuple[str, str], str] = {}


def tree_listing(cwd: Path, tree: str) -> str:
    """`git ls-tree -r -z --full-tree` of `tree`: mode, type, blob and path of each file, NUL-separated.
    Asked at set-up and again at the first edit; a tree named by its id never changes, so it is kept."""
    out = _LISTINGS.get((str(cwd), tree))
    if out is None:
        out = git([*LS_TREE, tree], cwd)
        keep_listing(cwd, tree, out)
    return out


def keep_listing(cwd: Path, tree: str, listing: str) -> None:
    """Keep `listing`, the `LS_TREE` output for `tree` (a tree or commit id) in `cwd`, for tree_listing."""
    if len(listing) <= _MEMO_TEXT:
        _remember(_LISTINGS, (str(cwd), tree), listing)


def _remember(memo: dict, key: tuple[str, ...], value: object) -> None:
    """Keep `value` when the key (a folder, then objects) names objects by id (a ref or "HEAD" may move);
    a full memo starts over."""
    if all(gitbatch.OBJECT_ID.match(name) for name in key[1:]):
        if len(memo) >= _MEMO_SIZE:
            memo.clear()
        memo[key] = value


LS_TREE = ("ls-tree", "-r", "-z", "--full-tree")
_RAW = ("--raw", "-z", "--no-abbrev")


def _tree_changes(cwd: Path, old_tree: str, new_tree: str) -> list[Change]:
    out = git([*gitbatch.DIFF_ARGS, *_RAW, old_tree, new_tree], cwd)
    fields = out.split("\0")
    changes = []
    for meta, path in zip(fields[0::2], fields[1::2], strict=False):
        if not meta.startswith(":"):
            continue
        old_mode, new_mode, old_sha, new_sha, _status = meta[1:].split(" ")
        changes.append(Change(path, old_mode, new_mode, old_sha, new_sha))
    return changes


def file_blobs(cwd: Path, paths: Sequence[str], *, store: bool = False) -> list[str]:
    """The blob ids of files as they are on disk, unconverted (no filter, whatever .gitattributes
    says); `store` also writes the blobs, through the workspace's long-lived `git hash-object`.
    (Paths holding a newline cannot be given this way.)"""
    if not paths:
        return []
    if not store:
        return git(["hash-object", "--no-filters", "--stdin-paths"], cwd,
                   input_text="".join(p + "\n" for p in paths)).split()
    shas: list[str] = []
    with gitbatch.batch(cwd, gitbatch.HASH_OBJECT).exchange() as writer:
        for start in range(0, len(paths), _PATHS_AT_ONCE):
            chunk = paths[start:start + _PATHS_AT_ONCE]
            writer.send("".join(p + "\n" for p in chunk).encode("utf-8", "surrogateescape"))
            shas += [writer.read_line().decode() for _ in chunk]
    return shas


# Paths sent to hash-object before reading their ids: 256 ids (some 10 kB) never fill the pipe back,
# so git is never blocked writing while agentloop is still writing paths.
_PATHS_AT_ONCE = 256


def link_blob(cwd: Path, rel: str) -> str:
    """Store the target of the symlink at `rel` as git stores a link (its bytes as a blob); the blob's id."""
    target = os.fsencode(os.readlink(cwd / rel))
    return git_bytes(["hash-object", "-w", "--stdin"], cwd, input_bytes=target).decode().strip()


def read_blob(cwd: Path, sha: str, path: str | None = None) -> bytes:
    """A blob's content exactly as stored: agentloop stores files unconverted (see `tree_with`), so
    writing it back gives the bytes the file had, whatever filters or attributes say. (`path` is
    accepted for older callers and ignored.)"""
    body = _cat_blob(cwd, sha) if gitbatch.OBJECT_ID.match(sha) else None
    if body is not None:
        return body
    try:
        return git_bytes(["cat-file", "blob", sha], cwd)
    except RuntimeError as exc:
        raise RuntimeError(f"git cat-file failed for {sha[:12]}: {exc}") from None


def inside(root: Path, rel: str) -> Path:
    """`root/rel`, refusing any path whose directory resolves outside `root` or into a `.git`."""
    target = root / rel
    parts = Path(rel).parts
    if not parts or Path(rel).is_absolute() or ".." in parts or names_git_dir(parts):
        raise RuntimeError(f"refusing to write {rel!r}: not a plain path inside the repository")
    rest = real_inside(root, target.parent)  # the file itself may be a symlink: it is replaced, not followed
    if rest is None:
        raise RuntimeError(f"refusing to write {rel!r}: its directory leads outside the repository")
    if names_git_dir(rest.parts):
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
