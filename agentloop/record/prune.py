"""`agentloop runs --prune`: remove old run folders and their `agentloop/<id>` branches, and the pooled
worktrees no run holds (agentloop.workspace.pool; the next run makes one again).

Never removes a run that is in progress (its process is alive, or it wrote to its trajectory in the
last minute without finishing), nor one whose result was applied to the user's tree and not undone:
`agentloop undo` needs its record, and the branch holds what it did.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from agentloop.record.trajectory import SUMMARY, TRAJECTORY
from agentloop.workspace.gitsafe import git_argv, git_env
from agentloop.workspace.isolation import BRANCH_PREFIX, WORKSPACE_FILE, alive, read_json, state_dir
from agentloop.workspace.repo import git

RECENT_S = 60.0  # an unfinished run that wrote this recently may still be starting up


@dataclass
class PruneReport:
    removed: list[str] = field(default_factory=list)
    kept_applied: list[str] = field(default_factory=list)  # applied to the tree and not undone
    kept_running: list[str] = field(default_factory=list)
    kept_checked_out: list[str] = field(default_factory=list)  # its branch is checked out somewhere
    branches_removed: int = 0
    worktrees_removed: int = 0  # idle pooled worktrees


def in_progress(repo: Path, run_dir: Path) -> bool:
    if (run_dir / SUMMARY).is_file():
        return False
    record = read_json(state_dir(repo) / "runs" / f"{run_dir.name}.json")
    if record is not None and alive(int(record.get("pid", 0)), record.get("ticks")):
        return True
    try:
        return time.time() - (run_dir / TRAJECTORY).stat().st_mtime < RECENT_S
    except OSError:
        return time.time() - run_dir.stat().st_mtime < RECENT_S


def applied_not_undone(run_dir: Path) -> bool:
    info = read_json(run_dir / WORKSPACE_FILE) or {}
    return bool(info.get("applied")) and not info.get("undone")


def prune_runs(repo: Path, runs_dir: Path, keep: int, *, dry_run: bool = False) -> PruneReport:
    """Keep the `keep` newest runs; remove the older ones that are neither running nor applied."""
    report = PruneReport()
    if not dry_run:
        from agentloop.workspace.pool import remove_free_slots

        report.worktrees_removed = len(remove_free_slots(repo, state_dir(repo)))
    if not runs_dir.is_dir():
        return report
    runs = sorted((p for p in runs_dir.iterdir() if p.is_dir() and not p.name.startswith(".")),
                  key=lambda p: p.name, reverse=True)
    for run_dir in runs[keep:]:
        if in_progress(repo, run_dir):
            report.kept_running.append(run_dir.name)
            continue
        if applied_not_undone(run_dir):
            report.kept_applied.append(run_dir.name)
            continue
        branch = BRANCH_PREFIX + run_dir.name
        has_branch = bool(git(["rev-parse", "--verify", "--quiet", f"refs/heads/{branch}"], repo, check=False).strip())
        if not dry_run and has_branch:
            # `git branch -D` refuses a branch checked out in some worktree: someone is looking at it.
            if subprocess.run(git_argv("branch", "-D", "-q", branch), cwd=repo, env=git_env(),
                              capture_output=True).returncode:
                report.kept_checked_out.append(run_dir.name)
                continue
        report.removed.append(run_dir.name)
        report.branches_removed += has_branch
        if not dry_run:
            shutil.rmtree(run_dir, ignore_errors=True)
    return report
