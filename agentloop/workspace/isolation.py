"""Where a run works, and how its result reaches the user's tree.

Default: a git worktree of its own (one of a pool under `.git/agentloop/pool/`, taken for the run
alone and reset to its start: agentloop.workspace.pool), checked out at a
commit of the user's current state (HEAD + staged + unstaged + untracked-not-ignored files; made
with a private index, so the user's index, branches and stash are untouched). The user's tree is
not written while the run works. At the end the result is committed on branch `agentloop/<run id>`
and, if accepted, applied back: only if every file it touches is still as it was at the start,
all files staged beside their targets first, then renamed into place under a journal. A journal
left by a SIGKILL is rolled forward (or its temp files removed) by the next run, as are worktrees
and run records of dead processes.

`in_place`: the run edits the user's tree itself (pre-commit, CI); its start is committed on the
branch first, so an interruption, or `agentloop undo`, restores it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentloop.errors import EXIT_FAILED, AgentloopError, UsageError
from agentloop.files import atomic_write, read_json
from agentloop.outcome import Outcome
from agentloop.workspace import gitbatch, objects, pool
from agentloop.workspace.repo import (
    Change,
    Workspace,
    commit_entry,
    common_dir,
    forget_worktrees,
    git,
    inside,
    stage_entry,
    temp_name,
)

STATE_DIR = "agentloop"  # in the git common dir: run records, journals, worktrees
BRANCH_PREFIX = "agentloop/"
WORKSPACE_FILE = "workspace.json"  # in the run directory: what undo needs
IDENTITY = {"GIT_AUTHOR_NAME": "agentloop", "GIT_AUTHOR_EMAIL": "agentloop@localhost",
            "GIT_COMMITTER_NAME": "agentloop", "GIT_COMMITTER_EMAIL": "agentloop@localhost"}
NO_HOOKS = ["-c", "core.hooksPath=/dev/null"]  # our own git commands never run the user's hooks


def state_dir(root: Path) -> Path:
    return common_dir(root) / STATE_DIR


# -- processes -------------------------------------------------------------------------------------
def process_ticks(pid: int) -> str | None:
    """The start time of a process (Linux), so a recycled pid is not mistaken for a live run."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def alive(pid: int, ticks: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return ticks is None or process_ticks(pid) in (None, ticks)


def write_json(path: Path, data: dict[str, Any], *, durable: bool = True) -> None:
    """Whole file or nothing, and (`durable`) on disk before we go on."""
    atomic_write(path, json.dumps(data, indent=1), durable=durable)


def remove_dead_temp_files(folder: Path) -> None:
    """`.<name>.<random>.<pid>.tmp` files of atomic_write whose writer died before renaming them."""
    for tmp in folder.glob(".*.tmp"):
        pid = tmp.name.rsplit(".", 2)[-2]
        if pid.isdigit() and not alive(int(pid), None):
            tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def repo_lock(state: Path) -> Iterator[None]:
    """One writer to the user's tree at a time; the kernel drops it if the process dies."""
    import fcntl

    state.mkdir(parents=True, exist_ok=True)
    with open(state / "apply.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# -- applying a tree change to a directory, all or nothing ---------------------------------------------
def apply_changes(root: Path, changes: list[Change], journal: Path, tag: str, extra: dict[str, Any]) -> None:
    """Write `changes` into `root`: every new file staged beside its target, then a journal marked
    `committing`, then one rename (or unlink) per file. A kill at any point is repaired by
    `repair_journal`: before `committing` it removes the temp files, after it finishes the renames."""
    entries = [{"path": c.path, "tmp": None if c.deleted else str(temp_name(inside(root, c.path), tag))}
               for c in changes]
    record = {**extra, "pid": os.getpid(), "ticks": process_ticks(os.getpid()), "root": str(root),
              "state": "staging", "entries": entries}
    write_json(journal, record)
    try:
        for change in changes:
            stage_entry(root, change.path, change.new_mode, change.new_sha, tag)
    except BaseException:
        for entry in entries:
            if entry["tmp"] and os.path.lexists(entry["tmp"]):
                os.unlink(entry["tmp"])
        journal.unlink()
        raise
    write_json(journal, {**record, "state": "committing"})
    for entry in entries:
        commit_entry(root, entry["path"], Path(entry["tmp"]) if entry["tmp"] else None)
    journal.unlink()


def repair_journal(journal: Path, note: Callable[[str], None]) -> None:
    """Finish or undo an apply that a dead process left half done."""
    record = read_json(journal)
    if record is None:
        journal.unlink(missing_ok=True)
        return
    if alive(int(record.get("pid", 0)), record.get("ticks")):
        return
    root = Path(record["root"])
    if record.get("state") == "committing":
        for entry in record["entries"]:
            tmp = Path(entry["tmp"]) if entry["tmp"] else None
            if tmp is None or os.path.lexists(tmp):
                commit_entry(root, entry["path"], tmp)
        note(f"finished applying the result of run {record.get('run_id')}, which was killed while applying it")
        run_dir = record.get("run_dir")
        if run_dir and (Path(run_dir) / WORKSPACE_FILE).exists():
            info = read_json(Path(run_dir) / WORKSPACE_FILE) or {}
            write_json(Path(run_dir) / WORKSPACE_FILE, {**info, "applied": True})
    else:
        for entry in record["entries"]:
            if entry["tmp"] and os.path.lexists(entry["tmp"]):
                os.unlink(entry["tmp"])
    journal.unlink()


# -- clean-up of dead runs --------------------------------------------------------------------------
def remove_worktree(root: Path, path: Path) -> None:
    git([*NO_HOOKS, "worktree", "unlock", str(path)], root, check=False)
    git(["worktree", "remove", "--force", "--force", str(path)], root, check=False)
    if path.exists():
        shutil.rmtree(path, ignore_errors=True)


def recover(root: Path, note: Callable[[str], None] = lambda line: None) -> None:
    """Repair what dead runs left behind: half-applied results, worktrees, run records, ref locks."""
    state = state_dir(root)
    if not state.is_dir():
        return
    with repo_lock(state):
        for journal in sorted(state.glob("journal-*.json")):
            repair_journal(journal, note)
        remove_dead_temp_files(state)
    if (state / "runs").is_dir():
        remove_dead_temp_files(state / "runs")
    live_worktrees = set()
    for path in sorted((state / "runs").glob("*.json")):
        record = read_json(path)
        if record is None:
            path.unlink(missing_ok=True)
            continue
        if alive(int(record.get("pid", 0)), record.get("ticks")):
            if record.get("worktree"):
                live_worktrees.add(Path(record["worktree"]).name)
            continue
        run_id = record.get("run_id", path.stem)
        if record.get("pooled"):
            pass  # a pooled worktree is freed by the kernel (its lock) and reset by whoever takes it next
        elif record.get("worktree"):
            remove_worktree(root, Path(record["worktree"]))
        elif record.get("mode") == "in_place":
            note(f"run {run_id} was killed while editing this tree in place; `agentloop undo {run_id} --force` "
                 "puts every file back as it was before it started")
        ref_lock = common_dir(root) / "refs" / "heads" / (BRANCH_PREFIX + f"{run_id}.lock")
        ref_lock.unlink(missing_ok=True)
        path.unlink(missing_ok=True)
    worktrees = state / "worktrees"  # runs before the pool had one each
    if worktrees.is_dir():
        for leftover in worktrees.iterdir():
            if leftover.name not in live_worktrees:
                remove_worktree(root, leftover)
        forget_worktrees(root, worktrees)


# -- one run's workspace ----------------------------------------------------------------------------
@dataclass
class Isolation:
    """Sets up, and at the end settles, the tree one run edits."""

    user: Workspace
    run_id: str
    run_dir: Path
    in_place: bool = False
    note: Callable[[str], None] = lambda line: None
    start_tree: str | None = None
    start_commit: str | None = None
    workspace: Workspace | None = None
    worktree: Path | None = None
    slot: pool.Slot | None = None
    tip: str | None = None  # the branch's newest commit: the start, then one per turn
    tip_tree: str | None = None  # its tree
    base_tree: str | None = None  # the start, plus (in place) ignored files the model's edits touched
    finished: dict[str, Any] | None = None

    @property
    def branch(self) -> str:
        return BRANCH_PREFIX + self.run_id

    @property
    def mode(self) -> str:
        return "in_place" if self.in_place else "worktree"

    @property
    def state(self) -> Path:
        return state_dir(self.user.root)

    @property
    def durable(self) -> bool:
        """Whether this run's records must survive a power cut before it goes on: not in a repository
        agentloop made for a batch rollout (`Workspace.store`), which nothing needs after a crash (the
        rollout is run again) and whose result the trajectory's footer holds."""
        return self.user.store is None

    @property
    def record_path(self) -> Path:
        return self.state / "runs" / f"{self.run_id}.json"

    def prepare(self) -> None:
        """Clean up after dead runs; refuse to start on a tree another run edits in place."""
        recover(self.user.root, self.note)
        self.refuse_if_tree_busy()

    def begin(self, start_tree: str, head: str | None = None) -> Workspace:
        """Record this run, commit its starting state on its branch, and return the tree it works in.
        `head`: the user's HEAD commit, when the caller has just read it."""
        (self.state / "runs").mkdir(parents=True, exist_ok=True)
        record = {"run_id": self.run_id, "pid": os.getpid(), "ticks": process_ticks(os.getpid()),
                  "mode": self.mode, "root": str(self.user.root), "worktree": None, "pooled": not self.in_place,
                  "run_dir": str(self.run_dir)}
        write_json(self.record_path, record, durable=self.durable)  # before anything exists that would need cleaning up
        self.start_tree = start_tree
        head = head or self.user.head()
        self.start_commit = self.commit(self.start_tree, head, f"agentloop {self.run_id}: starting state")
        self.move_branch(self.start_commit, None)
        self.tip, self.tip_tree = self.start_commit, self.start_tree
        write_json(self.run_dir / WORKSPACE_FILE, {
            "run_id": self.run_id, "mode": self.mode, "root": str(self.user.root), "branch": self.branch,
            "start_tree": self.start_tree, "start_commit": self.start_commit, "head": head}, durable=self.durable)
        if self.in_place:
            self.workspace = self.user
        else:  # a pooled worktree of this repository, reset to the start (see agentloop.workspace.pool)
            try:
                self.slot = pool.take(self.user.root, self.state, self.start_commit)
            except (RuntimeError, OSError) as exc:  # git failing, a full disk, every slot busy
                raise AgentloopError(f"cannot set up the run's worktree: {exc}; free some disk space or "
                                     "end other runs (`agentloop runs`), or run with --in-place") from None
            self.worktree = self.slot.path
            self.workspace = Workspace(self.worktree)
        return self.workspace

    def refuse_if_tree_busy(self) -> None:
        """Two runs may share a repository, but not a tree that one of them edits in place."""
        for path in sorted((self.state / "runs").glob("*.json")):
            other = read_json(path) or {}
            if (other.get("mode") == "in_place" and other.get("root") == str(self.user.root)
                    and alive(int(other.get("pid", 0)), other.get("ticks"))):
                raise UsageError(f"run {other.get('run_id')} (pid {other.get('pid')}) is editing this tree in place; "
                                 "wait for it to finish, then run again")

    def record_base(self, tree: str) -> None:
        """The start grew files git does not see (an ignored `.env` an edit is about to change in place):
        record it before the edit is written, so that undo, even after a kill, puts them back."""
        self.base_tree = tree
        self.update_workspace_file(start_tree=tree)

    def record_turn(self, turn: int, tree: str) -> None:
        """One commit per turn on the run's branch, so that every turn's tree stays restorable."""
        if self.tip is not None:
            commit = self.commit(tree, self.tip, f"agentloop {self.run_id}: turn {turn}")
            self.move_branch(commit, self.tip)
            self.tip, self.tip_tree = commit, tree

    def move_branch(self, commit: str, tip: str | None) -> None:
        """Point the run's branch at `commit`, refused unless it is at `tip` (None: the branch must not
        exist yet). Written in process in a repository agentloop made (agentloop.workspace.objects),
        else through the long-lived `git update-ref`, else by `git update-ref`."""
        ref = f"refs/heads/{self.branch}"
        old = tip or "0" * len(commit)
        if self.user.store is not None and objects.write_ref(self.user.git_dir, ref, commit, old):
            return
        if not gitbatch.update_ref(self.user.root, ref, commit, old):
            git(["update-ref", ref, commit, tip or ""], self.user.root)

    def commit(self, tree: str, parent: str | None, message: str) -> str:
        """A commit of `tree` on `parent`: written in process in a repository agentloop made (see
        agentloop.workspace.objects), else by `git commit-tree`."""
        if self.user.store is not None:
            made = objects.write_commit(self.user.store, tree, [parent] if parent else [], message,
                                        IDENTITY["GIT_AUTHOR_NAME"], IDENTITY["GIT_AUTHOR_EMAIL"])
            if made is not None:
                return made
        env = {**os.environ, **IDENTITY}
        args = ["commit-tree", tree, *(["-p", parent] if parent else []), "-m", message]
        return git(args, self.user.root, env=env).strip()

    def finish(self, outcome: str, final_tree: str | None) -> dict[str, Any]:
        """Keep the result on the branch; apply it back if accepted (worktree) or restore the start if
        interrupted (in place); give the worktree back to the pool. Called once, with signals only noted."""
        if self.finished is not None:
            return self.finished
        info: dict[str, Any] = {"mode": self.mode, "branch": None, "applied": False, "conflicts": [],
                                "restored": False}
        try:
            if self.start_commit is None:  # interrupted before the start was recorded: nothing was changed
                return info
            # An interrupted `git update-ref` of ours may have left the branch's lock: it is ours alone.
            (common_dir(self.user.root) / "refs" / "heads" / f"{self.branch}.lock").unlink(missing_ok=True)
            final_tree = final_tree or self.start_tree
            base = self.base_tree or self.start_tree
            changes = self.user.changes(base, final_tree)
            info.update(start_tree=base, final_tree=final_tree)
            if changes or self.tip != self.start_commit:
                if final_tree != self.tip_tree:  # else the last turn's commit, the branch's tip, is the result
                    result = self.commit(final_tree, self.tip, f"agentloop {self.run_id}: {outcome}")
                    self.move_branch(result, self.tip)
                info["branch"] = self.branch
            else:  # no turn, no change (checks already passing, or stopped at once): no branch to clutter the repo
                git(["update-ref", "-d", f"refs/heads/{self.branch}", self.start_commit], self.user.root, check=False)
            if self.in_place:
                info["applied"] = bool(changes)
                if outcome == Outcome.INTERRUPTED and changes:
                    self.user.restore(base, {c.path for c in changes})
                    info.update(restored=True, applied=False)
            elif outcome == Outcome.ACCEPTED and changes:
                try:
                    info.update(self.apply_back(changes))
                except RuntimeError as exc:  # a path that cannot be written safely: the user's tree is untouched
                    info["apply_error"] = str(exc)
            self.update_workspace_file(final_tree=final_tree, applied=info["applied"], restored=info["restored"],
                                       outcome=outcome)
        except RuntimeError as exc:  # git refused something: say so in the record rather than crash the footer
            info["apply_error"] = str(exc)
        finally:
            if self.slot is not None:
                self.slot.release()
            self.record_path.unlink(missing_ok=True)
            self.finished = info
        return info

    def apply_back(self, changes: list[Change]) -> dict[str, Any]:
        """The model's changes, and nothing else, into the user's tree, unless one of those files is not
        as it was at the start (changed by the user meanwhile, or an ignored file the run never saw)."""
        with repo_lock(self.state):
            paths = [c.path for c in changes]
            current = self.user.tree_with(self.start_tree, paths)
            now = {c.path: c for c in self.user.changes(self.start_tree, current)}
            todo, conflicts = [], []
            for change in changes:
                theirs = now.get(change.path)
                if theirs is None:
                    todo.append(change)
                elif (theirs.new_mode, theirs.new_sha) != (change.new_mode, change.new_sha):
                    conflicts.append(change.path)  # changed by the user meanwhile, differently
            if conflicts:
                return {"applied": False, "conflicts": sorted(conflicts)}
            apply_changes(self.user.root, todo, self.state / f"journal-{self.run_id}.json", self.run_id,
                          {"run_id": self.run_id, "run_dir": str(self.run_dir)})
        return {"applied": True, "conflicts": []}

    def update_workspace_file(self, **fields: Any) -> None:
        path = self.run_dir / WORKSPACE_FILE
        write_json(path, {**(read_json(path) or {}), **fields}, durable=self.durable)


# -- undo --------------------------------------------------------------------------------------------
class Refused(AgentloopError):
    """Undo would overwrite changes made after the run: exit 1, like a refused edit."""

    exit_code = EXIT_FAILED


def undo(run_dir: Path, *, force: bool = False) -> list[str]:
    """Put back, byte for byte, the files a run changed in the user's tree; returns them.

    Refuses if those files changed since the run ended, unless `force`."""
    info = read_json(run_dir / WORKSPACE_FILE)
    run_id = run_dir.name
    if info is None:
        raise UsageError(f"run {run_id} has no workspace record ({WORKSPACE_FILE}); it predates undo or never started")
    if info.get("undone"):
        raise Refused(f"run {run_id} was already undone")
    user = Workspace(Path(info["root"]))
    start, final = info["start_tree"], info.get("final_tree")
    if final is None:  # the run never finished (killed): its changes cannot be told from later ones
        if not force:
            raise Refused(f"run {run_id} did not finish (killed?), so its changes cannot be told from later ones; "
                          f"`agentloop undo {run_id} --force` puts every file back as it was before it started")
        started_with = git(["ls-tree", "-r", "-z", "--name-only", "--full-tree", start], user.root).split("\0")
        now = user.tree_with(start, [*user.list_files(), *(p for p in started_with if p)])
        paths = {c.path for c in user.changes(start, now)}
    else:
        if not info.get("applied"):
            return []
        ours = {c.path: c for c in user.changes(start, final)}
        now = user.tree_with(final, ours)  # those files as they are now, ignored ones included
        moved = sorted(c.path for c in user.changes(final, now) if c.path in ours)
        if moved and not force:
            shown = ", ".join(moved[:3]) + (f" and {len(moved) - 3} more" if len(moved) > 3 else "")
            raise Refused(f"{shown} changed since run {run_id} ended; undo would overwrite that: "
                          f"pass --force to restore the start anyway")
        paths = set(ours)
    from agentloop.interrupts import SignalGuard

    with SignalGuard() as guard, repo_lock(state_dir(user.root)):
        guard.settle()  # Ctrl-C is noted, not obeyed, until every file is back
        changes = [c for c in user.changes(now, start) if c.path in paths]
        apply_changes(user.root, changes, state_dir(user.root) / f"journal-undo-{run_id}.json", f"undo-{run_id}",
                      {"run_id": run_id})
    write_json(run_dir / WORKSPACE_FILE, {**info, "undone": True})
    return sorted(c.path for c in changes)
