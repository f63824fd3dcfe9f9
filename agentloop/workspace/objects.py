"""Git objects (and a run's branch) written in process, in repositories agentloop has just made (a
batch rollout's).

A run stores each turn's files and trees, and commits its starting state and each turn on its
branch: through git, each is a process (2-3 ms) or a long-lived one to start. In a repository
agentloop made itself (agentloop.batch.rollout: SHA-1 ids, a plain object folder of its own, no
configuration that signs or shares), an object is its bytes behind a short header, zlib-compressed
into a loose object file; it is written here as git writes one: to a temporary file in the object's
folder, then linked into place, so a kill mid-write leaves no half-written object. In any other
repository (a user's, where configuration may sign commits, share the object folder or change the
hash) git writes it.

A run's branch moves the same way: a loose ref file written under `<ref>.lock` and renamed into
place, as git does (without a reflog entry: nothing reads the reflog of a rollout's repository).
"""

from __future__ import annotations

import hashlib
import os
import re
import time
import zlib
from pathlib import Path

_SHA1 = 40
_UNBORN = "0" * _SHA1
_ID = re.compile(r"[0-9a-f]{40}")
# The branch names agentloop gives runs (agentloop/<run id>); git decides about any other.
_OWN_REF = re.compile(r"refs/heads/[A-Za-z0-9_-]+(/[A-Za-z0-9_][A-Za-z0-9_.-]*)*")


def commit_body(tree: str, parents: list[str], message: str, name: str, email: str,
                when: float | None = None) -> bytes:
    """The text `git commit-tree TREE -p PARENT... -m MESSAGE` stores, with author and committer
    `name <email>` at `when` (default now) in the local time zone."""
    stamp = int(time.time() if when is None else when)
    offset = time.localtime(stamp).tm_gmtoff // 60
    zone = f"{'-' if offset < 0 else '+'}{abs(offset) // 60:02d}{abs(offset) % 60:02d}"
    person = f"{name} <{email}> {stamp} {zone}"
    head = [f"tree {tree}", *(f"parent {p}" for p in parents), f"author {person}", f"committer {person}"]
    return ("\n".join(head) + "\n\n" + message + "\n").encode("utf-8")


def write_commit(objects: Path, tree: str, parents: list[str], message: str, name: str, email: str) -> str | None:
    """Store a commit in the loose object folder `objects` and return its id; None if the ids are not
    SHA-1 ones (the caller then asks git)."""
    if any(len(oid) != _SHA1 for oid in (tree, *parents)) or "\n" in name + email or "<" in name + email:
        return None
    return write_loose(objects, "commit", commit_body(tree, parents, message, name, email))


def write_blob(objects: Path, data: bytes) -> str:
    """Store a file's bytes as they are (`git hash-object -w --no-filters`); its blob id."""
    return write_loose(objects, "blob", data)


def write_tree(objects: Path, entries: dict[bytes, tuple[bytes, str]]) -> str:
    """Store a tree of `entries` (name -> (mode as git stores it, object id)) as `git mktree` does:
    in git's order, where a folder sorts as if its name ended with a slash."""
    ordered = sorted(entries.items(), key=lambda item: item[0] + b"/" if item[1][0] == b"40000" else item[0])
    return write_loose(objects, "tree", b"".join(b"%s %s\0%s" % (mode, name, bytes.fromhex(oid))
                                                  for name, (mode, oid) in ordered))


def write_loose(objects: Path, kind: str, body: bytes) -> str:
    """Store one object as git does (`<kind> <size>\\0<body>`, zlib, read-only, linked into place)."""
    data = f"{kind} {len(body)}\0".encode() + body
    oid = hashlib.sha1(data).hexdigest()  # noqa: S324 - git's object id, not a security hash
    folder = objects / oid[:2]
    target = folder / oid[2:]
    if target.exists():
        return oid
    folder.mkdir(exist_ok=True)
    temporary = folder / f"tmp_obj_{os.getpid()}_{time.monotonic_ns()}"
    try:
        with open(temporary, "xb") as fh:
            fh.write(zlib.compress(data))
        os.chmod(temporary, 0o444)
        try:
            os.link(temporary, target)
        except FileExistsError:  # written meanwhile: the same bytes
            pass
    finally:
        temporary.unlink(missing_ok=True)
    return oid


def write_ref(git_dir: Path, ref: str, new: str, old: str) -> bool:
    """Move `ref` from commit `old` (all zeros: it must not exist yet) to `new`, as `git update-ref REF
    NEW OLD` does in a repository of loose refs: the ref's `.lock` taken, the old value checked under
    it, the new one renamed into place. False, with nothing written, where git should decide (a packed
    ref, a ref that is not at `old`, a name not of agentloop's own making): the caller then asks git."""
    if (not _OWN_REF.fullmatch(ref) or ref.endswith(".lock") or ".." in ref or not _ID.fullmatch(new)
            or not _ID.fullmatch(old) or (git_dir / "packed-refs").exists()):
        return False
    target = git_dir / ref
    lock = target.with_name(target.name + ".lock")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except OSError:  # (the lock held by another writer, a file where a folder goes)
        return False
    try:
        try:
            current: str | None = target.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            current = _UNBORN
        if current == old:
            os.write(fd, (new + "\n").encode())
    except (OSError, UnicodeDecodeError):
        current = None
    finally:
        os.close(fd)
    if current != old:
        lock.unlink()
        return False
    os.replace(lock, target)  # (a kill before this leaves the lock: Isolation.finish removes it)
    return True
