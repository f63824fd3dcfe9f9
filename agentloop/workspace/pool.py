"""Reusable worktrees, one per concurrent run of a repository, so that a run's set-up rewrites only the
files that differ from the previous run's start instead of checking out the whole tree.

A slot is `<git dir>/agentloop/pool/slot-<n>/` (a detached git worktree), its lock `slot-<n>.lock`
(flock: held for the whole run, dropped by the kernel if the process dies, so a dead run's slot is
free at once) and its record `slot-<n>.json` (the git directory it must point to). Taking a slot
resets it to the run's starting commit from whatever state the last run, a hostile check or a
`kill -9` left it in, and verifies the result; anything unexpected discards the slot and makes a
fresh worktree. The reset (`reset_slot`):

1. the slot's `.git` file and its git directory must be the ones recorded (a check that rewrote them
   would otherwise point our git at another tree); a `config.worktree` (settings a check planted)
   discards the slot; a git lock (`index.lock`, `HEAD.lock`) of a killed run is removed once it is
   old, while a young one (that run's git may still be writing) makes us take another slot;
2. every file changed in any way since the slot's last reset is deleted, so git writes it again:
   its ctime (nanoseconds, set by the kernel on every write, chmod, rename or link, and settable by
   no unprivileged process) is not older than the slot's stamp, touched when that reset ended. Git's
   own stat check alone compares ctime to the second: a file rewritten within the second of a
   checkout, its size and mtime put back, would pass it. Every directory gets the mode a fresh
   checkout gives it and loses any ACL (a check that made `tests/` read-only, or set a default ACL,
   would otherwise change the next run's verdicts);
3. `git clean -ffdx`: every untracked or ignored file and directory, nested repositories included;
4. `git read-tree -u --reset <commit>` with stat checks forced strict (ctime, inode, size, mode), so
   every file whose content or mode may differ from the index is rewritten; HEAD set to the commit;
5. if the tree's attributes (`.gitattributes`, `info/attributes`) changed since the slot was last
   checked out, every file is rewritten (an unchanged blob may check out to other bytes);
6. `git status --ignored -uall` must then report nothing, or the slot is discarded.

Steps 2 and 3 are done when a run gives its slot back (freeing the disk its checks used at once),
then the slot is marked clean (`slot-<n>.clean`), and whoever takes it next removes the mark and
skips them; a run that died holding the slot left no mark, so its successor does them. The mark
lives beside the records, which checks cannot see under the sandbox. The threat a slot guards against is a check
under the sandbox (it can write the worktree, not git directories); without the sandbox a check can
write anywhere, the slot's git directory included, as it could write the user's tree.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from agentloop.files import atomic_write, read_json
from agentloop.workspace.repo import git

POOL_DIR = "pool"  # under <git dir>/agentloop
SLOT_PREFIX = "slot-"
# Stat checks as strict as git has them: a check cannot keep a file's ctime or inode, whatever it does.
STRICT_STAT = ["-c", "core.trustctime=true", "-c", "core.checkStat=default", "-c", "core.logAllRefUpdates=false"]
ACL_NAMES = ("system.posix_acl_access", "system.posix_acl_default")
GIT_LOCK_WAIT_S = 1.0  # how long a killed run's git, still writing, is given to finish
STALE_GIT_LOCK_S = 10.0  # a killed run's git child may still be writing for a moment, not for this long


class SlotUnusable(Exception):
    """The slot is not in a state we can trust; it is discarded and made afresh."""


class SlotBusy(Exception):
    """A git process of a killed run may still be writing the slot: take another one."""


@dataclass
class Slot:
    """One taken worktree: `path` checked out at the run's start, locked until `release`."""

    root: Path  # the user's repository
    path: Path
    lock_fd: int | None
    reused: bool

    def release(self) -> None:
        """Give the slot back: remove what the run left (untracked files, and every file changed since
        the reset: step 2-3 of the module's list), mark the slot clean, then drop the lock. Saves the
        next run that work (and frees the disk now); a release cut short leaves no mark, and the next
        run does it all."""
        if self.lock_fd is None:
            return
        try:
            with contextlib.suppress(SlotUnusable, RuntimeError, OSError):
                git_dir = _verified_git_dir(self.path)
                clean(self.path, git_dir)
                _clean_mark(self.path).touch()
        finally:
            os.close(self.lock_fd)
            self.lock_fd = None


def pool_dir(state: Path) -> Path:
    return state / POOL_DIR


def take(root: Path, state: Path, commit: str) -> Slot:
    """A worktree of the repository at `root` checked out at `commit`, for this process alone."""
    pool = pool_dir(state)
    pool.mkdir(parents=True, exist_ok=True)
    numbers = _slot_numbers(pool)
    for n in [*numbers, *range((numbers[-1] + 1) if numbers else 0, 10_000)]:
        fd = _try_lock(pool / f"{SLOT_PREFIX}{n}.lock")
        if fd is None:
            continue
        path = pool / f"{SLOT_PREFIX}{n}"
        try:
            if path.exists() or (pool / f"{SLOT_PREFIX}{n}.json").exists():
                try:
                    reset_slot(root, path, commit)
                    return Slot(root, path, fd, reused=True)
                except SlotBusy:
                    os.close(fd)
                    continue
                except (SlotUnusable, RuntimeError, OSError):
                    discard_slot(root, path)
            try:
                _create_slot(root, path, commit)
            except RuntimeError:  # e.g. a registration a killed `worktree add` left: clear it, once
                discard_slot(root, path)
                _create_slot(root, path, commit)
            return Slot(root, path, fd, reused=False)
        except BaseException:
            os.close(fd)
            raise
    raise RuntimeError(f"no free worktree slot in {pool}")


def in_use(path: Path) -> bool:
    """Whether a live process holds the slot at `path`."""
    fd = _try_lock(path.parent / f"{path.name}.lock")
    if fd is not None:
        os.close(fd)
    return fd is None


def _slot_numbers(pool: Path) -> list[int]:
    """The numbers of the slots that have anything in `pool` (worktree, lock, record or stamp)."""
    if not pool.is_dir():
        return []
    names = (p.name[len(SLOT_PREFIX):].split(".")[0] for p in pool.glob(SLOT_PREFIX + "*"))
    return sorted({int(name) for name in names if name.isdigit()})


def _try_lock(lock: Path) -> int | None:
    """The slot's lock, held, or None if another live process holds it. The file is checked to still be
    the one at that path after locking (a `clean` may have removed it meanwhile)."""
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    try:
        same = os.stat(lock).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        same = False
    if not same:
        os.close(fd)
        return _try_lock(lock)
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())  # for a human wondering who holds it; the flock decides
    return fd


def _git(path: Path, args: list[str], *, check: bool = True, git_dir: Path | None = None) -> str:
    """git in the slot, through its recorded git directory when given (never through a `.git` a check wrote)."""
    where = ["--git-dir", str(git_dir), "--work-tree", str(path)] if git_dir is not None else []
    return git([*where, *STRICT_STAT, *args], path, check=check)


def _record_path(path: Path) -> Path:
    return path.parent / f"{path.name}.json"


def _stamp_path(path: Path) -> Path:
    """Touched when a reset ends: whatever has a ctime not older than it was changed after."""
    return path.parent / f"{path.name}.stamp"


def _clean_mark(path: Path) -> Path:
    """Present while the slot is free and was cleaned when given back (removed by whoever takes it)."""
    return path.parent / f"{path.name}.clean"


def _touch_stamp(path: Path) -> None:
    stamp = _stamp_path(path)
    stamp.touch()
    os.utime(stamp)  # an existing file's ctime moves with its times


def _create_slot(root: Path, path: Path, commit: str) -> None:
    if path.exists() or os.path.islink(path):
        discard_slot(root, path)
    _record_path(path).unlink(missing_ok=True)
    _clean_mark(path).unlink(missing_ok=True)
    git(["-c", "core.hooksPath=/dev/null", "worktree", "add", "--detach", "--quiet", str(path), commit], root)
    git_dir = Path(git(["rev-parse", "--absolute-git-dir"], path).strip())
    atomic_write(_record_path(path), json.dumps({"git_dir": str(git_dir),
                                                 "attributes": attributes_fingerprint(path, git_dir)}))
    _touch_stamp(path)


def _verified_git_dir(path: Path) -> Path:
    record = read_json(_record_path(path))
    if not record or not record.get("git_dir"):
        raise SlotUnusable("no record")
    git_dir = Path(record["git_dir"])
    _check_links(path, git_dir)
    return git_dir


def clean(path: Path, git_dir: Path) -> None:
    """Steps 2 and 3: every file changed since the last reset deleted, directories as git makes them,
    every untracked or ignored file removed."""
    try:
        stamp_ns = os.stat(_stamp_path(path)).st_ctime_ns
    except FileNotFoundError as exc:
        raise SlotUnusable("no stamp") from exc
    normalize(path, stamp_ns)
    _git(path, ["clean", "-ffdxq"], git_dir=git_dir)


def reset_slot(root: Path, path: Path, commit: str) -> None:
    """Make the slot exactly `commit`, whatever was done to it; SlotUnusable if that cannot be trusted."""
    git_dir = _verified_git_dir(path)
    record = read_json(_record_path(path)) or {}
    for name in ("index.lock", "HEAD.lock"):
        _remove_stale_lock(git_dir / name)
    mark = _clean_mark(path)
    if os.path.lexists(mark):  # released clean, untouched since (no one held it): steps 2-3 are done
        mark.unlink()
    else:
        clean(path, git_dir)
    _git(path, ["read-tree", "-u", "--reset", commit], git_dir=git_dir)
    atomic_write(git_dir / "HEAD", f"{commit}\n")  # detached at the start, as `update-ref --no-deref` would
    fingerprint = attributes_fingerprint(path, git_dir)
    if fingerprint != record.get("attributes"):
        _git(path, ["checkout-index", "--all", "--force", "--quiet"], git_dir=git_dir)
        atomic_write(_record_path(path), json.dumps({**record, "attributes": fingerprint}))
    left = _git(path, ["status", "--porcelain", "-z", "--ignored", "--untracked-files=all", "--no-renames"],
                git_dir=git_dir)
    if left.strip("\0"):
        raise SlotUnusable(f"not clean after reset: {left[:200]!r}")
    _touch_stamp(path)


def _check_links(path: Path, git_dir: Path) -> None:
    """The worktree's `.git` file and its git directory still point at each other, as recorded."""
    dot_git = path / ".git"
    try:
        if not stat.S_ISREG(os.lstat(dot_git).st_mode):
            raise SlotUnusable(".git is not a file")
        if dot_git.read_text() != f"gitdir: {git_dir}\n":
            raise SlotUnusable(".git points elsewhere")
        if (git_dir / "gitdir").read_text().strip() != str(dot_git):
            raise SlotUnusable("the git directory belongs to another worktree")
    except (OSError, UnicodeDecodeError) as exc:
        raise SlotUnusable(str(exc)) from exc
    if (git_dir / "config.worktree").exists():
        raise SlotUnusable("config.worktree present")


def _remove_stale_lock(lock: Path) -> None:
    """We hold the slot, so its git locks are a killed run's: its git, still running, removes its lock
    in a moment; a lock that stays is removed if old, else (SlotBusy) another slot is taken."""
    deadline = time.monotonic() + GIT_LOCK_WAIT_S
    while os.path.lexists(lock) and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        age = time.time() - os.lstat(lock).st_mtime
    except FileNotFoundError:
        return
    if age < STALE_GIT_LOCK_S:
        raise SlotBusy(str(lock))
    with contextlib.suppress(FileNotFoundError):
        os.unlink(lock)


def _umask() -> int:
    """The process umask, read without changing it (os.umask would, for every thread, for a moment)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def normalize(path: Path, changed_since_ns: int | None = None) -> None:
    """Every directory under `path` (symlinks not followed) as a fresh checkout makes it: mode
    0777 less the umask, no ACL (this also lets `git clean` into directories a check locked); every
    other entry whose ctime is not older than `changed_since_ns` deleted."""
    wanted = 0o777 & ~_umask()
    stack = [path]
    while stack:
        folder = stack.pop()
        for name in ACL_NAMES:  # before the mode: with an ACL, chmod sets its mask, not the group bits
            with contextlib.suppress(OSError):
                os.removexattr(folder, name, follow_symlinks=False)
        if stat.S_IMODE(os.lstat(folder).st_mode) != wanted:
            os.chmod(folder, wanted)
        with os.scandir(folder) as entries:
            for entry in entries:
                if folder == path and entry.name == ".git":
                    continue
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                elif changed_since_ns is not None and entry.stat(follow_symlinks=False).st_ctime_ns >= changed_since_ns:
                    os.unlink(entry.path)


def attributes_fingerprint(path: Path, git_dir: Path) -> str:
    """What decides how blobs check out: every .gitattributes in the index and info/attributes."""
    listed = _git(path, ["ls-files", "-s", "-z", "--", ":(glob)**/.gitattributes"], git_dir=git_dir)
    info = path.parent.parent.parent / "info" / "attributes"  # <git dir>/agentloop/pool/slot-<n>
    extra = info.read_bytes() if info.is_file() else b""
    return hashlib.sha256(listed.encode("utf-8", "surrogateescape") + b"\0" + extra).hexdigest()


def _rmtree(path: Path) -> None:
    """Remove a tree even where a check took away our permissions."""
    def fix(func, target, exc_info):  # noqa: ANN001 - shutil's onerror signature
        parent = os.path.dirname(target)
        with contextlib.suppress(OSError):
            os.chmod(parent, 0o700)
            if os.path.isdir(target) and not os.path.islink(target):
                os.chmod(target, 0o700)
            func(target)
    if os.path.islink(path) or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path, onerror=fix)


def discard_slot(root: Path, path: Path) -> None:
    """Remove a slot's worktree and its registration (the caller holds its lock, or it is free)."""
    record = read_json(_record_path(path)) or {}
    if path.is_dir() and not path.is_symlink():
        with contextlib.suppress(OSError):
            normalize(path)
    git(["worktree", "unlock", str(path)], root, check=False)  # `worktree add` killed midway leaves it locked
    git(["worktree", "remove", "--force", "--force", str(path)], root, check=False)
    with contextlib.suppress(OSError):
        _rmtree(path)
    git_dir = record.get("git_dir")
    if git_dir and Path(git_dir).parent.name == "worktrees" and Path(git_dir).name.startswith(SLOT_PREFIX):
        shutil.rmtree(git_dir, ignore_errors=True)
    _unregister(path)
    for leftover in (_record_path(path), _stamp_path(path), _clean_mark(path)):
        leftover.unlink(missing_ok=True)


def _unregister(path: Path) -> None:
    """Remove any git registration left that names the slot at `path`, and no other: `git worktree
    prune` would also drop the user's own worktrees whose folders are away for a while (an unmounted
    disk), their index and HEAD with them."""
    names = {str(path / ".git"), os.path.realpath(path) + "/.git"}
    admin = path.parent.parent.parent / "worktrees"  # <git dir>/agentloop/pool/slot-<n>
    for entry in admin.glob(f"{path.name}*") if admin.is_dir() else ():
        with contextlib.suppress(OSError, UnicodeDecodeError):
            if (entry / "gitdir").read_text().strip() in names:
                shutil.rmtree(entry, ignore_errors=True)


def remove_free_slots(root: Path, state: Path) -> list[Path]:
    """Remove every slot no live run holds (`agentloop runs --prune`); returns those removed."""
    pool = pool_dir(state)
    removed: list[Path] = []
    for n in _slot_numbers(pool):
        path = pool / f"{SLOT_PREFIX}{n}"
        lock = pool / f"{path.name}.lock"
        fd = _try_lock(lock)
        if fd is None:
            continue
        try:
            discard_slot(root, path)
            removed.append(path)
            lock.unlink(missing_ok=True)  # while held: a process that opened it re-checks the inode
        finally:
            os.close(fd)
    return removed
