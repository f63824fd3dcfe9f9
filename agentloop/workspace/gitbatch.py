"""Long-lived git processes a run asks many times: `git cat-file --batch` (read objects) and
`git hash-object -w --no-filters --stdin-paths` (store files), `git mktree -z --batch` (store
trees), `git update-ref --stdin` (move a run's branch, one transaction a turn) and
`git diff-tree --stdin` (a turn's patch), one of each per repository folder.

Each turn of a run reads a few blobs, stores the files an edit wrote and diffs its tree; a git
process for each of those costs some 2-3 ms, as much as the work. These commands answer one request
per line and flush each answer (git-svn drives them the same way; diff-tree's answer ends where it
echoes back a line that names no object), so one process serves a whole run.

Nothing is left behind on any exit path: each process runs in a session of its own (a Ctrl-C at the
terminal reaches agentloop, not it) and ends at end of input, which comes when `close` runs, when
agentloop exits (atexit) or when it dies (the kernel closes the pipe; a forked batch rollout ends
with os._exit, so also this way). git writes each object to a temporary file and renames it into
place: a process ended mid-request leaves no half-written object. A process belongs to the process
that started it: a forked child starts its own.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from agentloop.workspace.gitsafe import git_argv, git_env

CAT_FILE = ("cat-file", "--batch")
HASH_OBJECT = ("hash-object", "-w", "--no-filters", "--stdin-paths")
MKTREE = ("mktree", "-z", "--batch")
UPDATE_REF = ("update-ref", "--stdin")
# How agentloop diffs two trees: plumbing, which unlike `git diff` ignores the user's diff.* settings
# (noprefix, context, algorithm, relative, ...), so a patch agentloop records and parses has git's
# default form whatever ~/.gitconfig says. (Unlike `git diff`, it writes no patch unless asked: -p.)
DIFF_ARGS = ("diff-tree", "-r", "--no-color", "--no-ext-diff", "--no-textconv", "--no-renames")
# `git DIFF_ARGS --raw -z --no-abbrev -p --text OLD NEW` (see diff_trees), one pair of trees a line.
DIFF_TREE = (DIFF_ARGS[0], "--stdin", *DIFF_ARGS[1:], "--raw", "-z", "--no-abbrev", "-p", "--text")
OBJECT_ID = re.compile(r"^([0-9a-f]{40}|[0-9a-f]{64})$")  # a SHA-1 or SHA-256 object id


class GitBatchError(RuntimeError):
    """The process ended or answered out of protocol; git's own last line of stderr, when it wrote one."""


class GitBatch:
    """One long-lived git command in `cwd`: a request is written, its answer read back at once."""

    def __init__(self, args: tuple[str, ...], cwd: Path):
        self.args, self.cwd, self.pid = args, cwd, os.getpid()
        self.key = (str(cwd), args)
        self._errors: IO[bytes] = tempfile.TemporaryFile()  # a file, not a pipe: it can never fill and block git
        self.proc = subprocess.Popen(git_argv(*args), cwd=cwd, env=git_env(), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._errors, start_new_session=True)

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def send(self, data: bytes) -> None:
        """Write a request (its lines with their ends, as git reads them)."""
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(data)
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError):
            raise self.failure() from None

    def read_line(self) -> bytes:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.endswith(b"\n"):
            raise self.failure()
        return line[:-1]

    def read_exactly(self, size: int) -> bytes:
        assert self.proc.stdout is not None
        data = self.proc.stdout.read(size)
        if len(data) != size:
            raise self.failure()
        return data

    @contextlib.contextmanager
    def exchange(self) -> Iterator[GitBatch]:
        """One request and its whole answer. One left unfinished (an interrupt, an error) drops the
        process: the rest of its answer, still in the pipe, would be read as the next request's (a
        wrong blob id, or a read that never ends)."""
        try:
            yield self
        except BaseException:
            self.drop()
            raise

    def drop(self) -> None:
        """Forget this process and end it now, without waiting for it to finish a request."""
        if _OPEN.get(self.key) is self:
            del _OPEN[self.key]
        if self.pid == os.getpid() and self.proc.poll() is None:
            self.proc.kill()
        self.close()

    def forget_inherited(self) -> None:
        """In a forked child: close this copy of the parent's pipes (the child holding them, git would
        never see its input end when the parent closes it), and never use them."""
        for pipe in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(OSError, ValueError):
                if pipe is not None:
                    pipe.close()

    def failure(self) -> GitBatchError:
        """The error to raise once the process stopped answering (it is ended, closed and forgotten)."""
        if _OPEN.get(self.key) is self:
            del _OPEN[self.key]
        self.close()
        self._errors.seek(0)
        lines = self._errors.read().decode(errors="replace").strip().splitlines()
        self._errors.close()
        return GitBatchError(f"git {' '.join(self.args[:2])} failed: {(lines or ['(no message)'])[-1]}")

    def close(self) -> None:
        """End of input: git finishes the request it is on, if any, and exits; waited for."""
        self.end_input()
        self.wait()

    def end_input(self) -> None:
        """Close the pipes: git finishes the request it is on, if any, and exits."""
        if self.pid != os.getpid():
            return
        for pipe in (self.proc.stdin, self.proc.stdout):
            try:
                if pipe is not None:
                    pipe.close()
            except OSError:  # (a flush into a dead process)
                pass

    def wait(self) -> None:
        """Wait for the process to exit (after end_input); killed if it has not in 10 s."""
        if self.pid != os.getpid():
            return
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def read_object(cwd: Path, oid: str) -> tuple[str, bytes] | None:
    """The type and content of object `oid` (an object id, nothing else) in the repository at `cwd`;
    None if it has none."""
    with batch(cwd, CAT_FILE).exchange() as reader:
        reader.send(oid.encode() + b"\n")
        header = reader.read_line().split()
        if len(header) != 3:  # "<oid> missing"
            return None
        return header[1].decode(), reader.read_exactly(int(header[2]) + 1)[:-1]  # (each object ends with a newline)


def diff_trees(cwd: Path, old: str, new: str) -> bytes:
    """What `git DIFF_ARGS --raw -z --no-abbrev -p --text OLD NEW` writes for two trees (object ids) in the
    repository at `cwd`: the listing, a NUL, the patch (nothing when they do not differ). GitBatchError
    for anything but two trees' ids (a name, a commit, a missing object): the caller asks git itself."""
    if not (OBJECT_ID.fullmatch(old) and OBJECT_ID.fullmatch(new)):
        raise GitBatchError(f"not two object ids: {old!r} {new!r}")  # (diff-tree would echo the line back)
    # The line diff-tree echoes back after its answer: new for each request, so that no file written
    # before it (a patch line holds a file's bytes) can hold it and end the answer early.
    end = f"agentloop-end-{os.urandom(8).hex()}\n".encode()
    with batch(cwd, DIFF_TREE).exchange() as differ:
        differ.send(f"{old} {new}\n".encode() + end)
        if differ.read_line() != f"{old} {new}".encode():  # (diff-tree's header: the pair, echoed)
            raise differ.failure()
        lines = []
        while True:
            line = differ.read_line() + b"\n"
            if line == end or line.endswith(b"\0" + end):  # (after a listing with no patch: its NUL)
                lines.append(line[:-len(end)])
                return b"".join(lines)
            lines.append(line)


_NO_TRANSACTIONS: set[str] = set()  # folders whose git's update-ref --stdin knows no `start` (before 2.27)


def update_ref(cwd: Path, ref: str, new: str, old: str) -> bool:
    """Move `ref` from commit `old` to `new` (as `git update-ref REF NEW OLD` does: refused, with git's
    message, if it is elsewhere); False when this git cannot, and the caller runs the command."""
    folder = os.path.realpath(cwd)
    if folder in _NO_TRANSACTIONS or "\n" in ref:
        return False
    with batch(cwd, UPDATE_REF).exchange() as writer:
        try:
            writer.send(f"start\nupdate {ref} {new} {old}\ncommit\n".encode())
            started = writer.read_line()
        except GitBatchError:
            started = b""
        if started != b"start: ok":
            _NO_TRANSACTIONS.add(folder)
            writer.drop()  # (whatever it still has to say is not read)
            return False
        if writer.read_line() != b"commit: ok":
            raise writer.failure()
        return True


_OPEN: dict[tuple[str, tuple[str, ...]], GitBatch] = {}


def batch(cwd: Path, args: tuple[str, ...]) -> GitBatch:
    """The running `git ARGS` of this process in `cwd`, started if there is none (or it has ended)."""
    key = (os.path.realpath(cwd), args)
    found = _OPEN.get(key)
    if found is not None and (found.pid != os.getpid() or not found.alive):
        if found.pid == os.getpid():
            found.close()
        del _OPEN[key]  # (one a parent started before a fork is the parent's: its pipes are left to it)
        found = None
    if found is None:
        found = _OPEN[key] = GitBatch(args, Path(key[0]))
    return found


def close_all(cwd: Path | None = None) -> None:
    """Close this process's long-lived git processes (only those in `cwd`, if given)."""
    folder = None if cwd is None else os.path.realpath(cwd)
    closing = [_OPEN.pop(key) for key in [k for k in _OPEN if folder is None or k[0] == folder]]
    for found in closing:  # all told first, then waited for: they exit side by side
        found.end_input()
    for found in closing:
        found.wait()


def _forget_inherited() -> None:
    """After a fork, in the child: the parent's processes are the parent's (see GitBatch.forget_inherited)."""
    for found in _OPEN.values():
        found.forget_inherited()
    _OPEN.clear()


atexit.register(close_all)
os.register_at_fork(after_in_child=_forget_inherited)
