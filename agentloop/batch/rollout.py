"""One rollout: a task row's sample k, run start to end in `OUT/rollouts/<id>/<k>/`.

The source is never written: a git source is cloned (`--shared`, objects borrowed read-only) into a
private repository for this rollout; a plain directory is snapshotted into one. `setup` runs there
(not agent turns), then the usual session runs in place in that private repository, its run record
under `runs/`. The outcome is mapped to a batch status; `infra_error` (model server unreachable,
sandbox unusable, workspace could not be made) is the one status a batch retries and no export
counts as a negative example.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from agentloop.batch.tasks import TaskRow, directory_tree
from agentloop.workspace import gitbatch
from agentloop.workspace.gitsafe import SAFE_CONFIG, git_env
from agentloop.workspace.repo import LS_TREE, FreshCheckout, commit_tree_id, git_side_by_side, keep_listing

PASSED, FAILED, TIMEOUT, AGENT_ERROR, INFRA_ERROR = "passed", "failed", "timeout", "agent_error", "infra_error"
STATUSES = (PASSED, FAILED, TIMEOUT, AGENT_ERROR, INFRA_ERROR)
DEFAULT_ROLLOUT_TIMEOUT = 1800.0
DEFAULT_VERIFY_TIMEOUT = 300.0
SETUP_TIMEOUT = 1800.0
INFRA_MARKERS = ("cannot connect to", "cannot reach", "connection refused", "server unreachable")
_GIT_ID = {"GIT_AUTHOR_NAME": "agentloop", "GIT_AUTHOR_EMAIL": "agentloop@localhost",
           "GIT_COMMITTER_NAME": "agentloop", "GIT_COMMITTER_EMAIL": "agentloop@localhost"}


class InfraError(Exception):
    """The rollout could not be run for reasons outside the model's control."""


def rollout_dir(out: Path, task_id: str, sample: int) -> Path:
    return Path(out) / "rollouts" / task_id / str(sample)


def unfinished(row_id: str, sample: int, group: str | None, status: str, reason: str, seconds: float = 0.0,
               run_dir: str | None = None) -> dict[str, Any]:
    """The result of a rollout that produced none of its own (it could not start, was killed or died),
    in the shape of a finished one (see run_rollout)."""
    return {"id": row_id, "sample": sample, "group_id": group, "status": status, "reward": None, "turns": 0,
            "tokens": 0, "cost": 0.0, "seconds": round(seconds, 3), "run_dir": run_dir, "outcome": None,
            "reason": reason, "flags": []}


def group_id(row: TaskRow) -> str:
    """Samples of one task form a group, named by the task id, as exports name it (the header's task_id)."""
    return row.id


def _git(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    """git hardened as agentloop's own (agentloop.workspace.gitsafe): no hooks, no fsmonitor, no secret."""
    proc = subprocess.run(["git", *SAFE_CONFIG, *args], cwd=cwd, capture_output=True, text=True,
                          env=git_env({**os.environ, **_GIT_ID, **(env or {})}))
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        raise InfraError(f"git {args[0]} failed: {last}")
    return proc.stdout.strip()


def materialise(row: TaskRow, repo: Path) -> FreshCheckout | None:
    """A private git repository at `repo` holding the task's starting content, on branch agentloop-task.
    Returns what is known of it without asking git again (its commit and tree), when known."""
    repo.parent.mkdir(parents=True, exist_ok=True)
    source = row.source
    tree: str | None = None
    remote: str | None = None
    if source.is_git:
        revision = source.revision or source.commit or "HEAD"
        objects = borrowable_objects(source.path) if source.revision and len(source.revision) == 40 else None
        if objects is not None:
            init_repository(repo, objects)
        else:
            _git(["clone", "-q", "--shared", "--no-checkout", "--", str(source.path), str(repo)], repo.parent)
        head, remote = source.revision, str(source.path)  # a commit id (tasks.resolve_commit), or None
    else:
        init_repository(repo)
        tree = directory_tree(source.path, git_dir=repo / ".git")
        head = revision = _git(["commit-tree", tree, "-m", f"task {row.id}: snapshot of {source.path}"], repo)
    listing = _checkout_and_list(repo, revision, listed=not row.setup)
    with open(repo / ".git" / "config", "a", encoding="utf-8") as config:  # commits in the rollout need an author
        config.write(f"[user]\n\tname = {_GIT_ID['GIT_AUTHOR_NAME']}\n\temail = {_GIT_ID['GIT_AUTHOR_EMAIL']}\n")
    if head is None:
        return None
    tree = tree or commit_tree_id(repo, head)
    if tree and listing is not None:
        keep_listing(repo.resolve(), tree, listing)  # (tree_listing's, asked at the run's set-up)
    return FreshCheckout(head, tree, remote) if tree else None


def _checkout_and_list(repo: Path, revision: str, *, listed: bool) -> str | None:
    """Check `revision` out on branch agentloop-task. `listed` (when the run starts from it, no setup
    command in between): its files' listing (`repo.LS_TREE`) is made at the same time and returned,
    and the long-lived git processes the run reads trees through and diffs its turns with
    (agentloop.workspace.gitbatch) start meanwhile too: four git processes getting ready side by side
    rather than one after another."""
    checkout = ["checkout", "-q", "-B", "agentloop-task", revision]
    if not listed:
        _git(checkout, repo)
        return None
    gitbatch.batch(repo, gitbatch.CAT_FILE)
    gitbatch.batch(repo, gitbatch.DIFF_TREE)
    try:
        return git_side_by_side([checkout, [*LS_TREE, revision]], repo, env={**os.environ, **_GIT_ID})[1]
    except RuntimeError as exc:
        gitbatch.close_all(repo)
        raise InfraError(str(exc)) from None


def borrowable_objects(source: Path) -> Path | None:
    """The object folder of the git repository whose top folder is `source`, when a rollout can borrow
    it as `git clone --shared` would; None where git should decide (a `.git` file: a linked worktree
    or a submodule; a folder name git's alternates file cannot hold)."""
    git_dir = source / ".git"
    if not (git_dir.is_dir() and (git_dir / "HEAD").is_file() and (git_dir / "objects").is_dir()
            and (git_dir / "refs").is_dir()):
        return None
    objects = (git_dir / "objects").resolve()
    return None if "\n" in str(objects) else objects


def init_repository(repo: Path, borrowed: Path | None = None) -> None:
    """What `git init` (or, with `borrowed`, `git clone --shared --no-checkout`) makes and a rollout
    needs, written directly: no git process, no copied templates, no upload-pack round trip. HEAD is
    on the unborn branch agentloop-task; `borrowed` objects are read through alternates, never written."""
    git_dir = repo / ".git"
    for sub in ("objects/info", "objects/pack", "refs/heads", "refs/tags"):
        (git_dir / sub).mkdir(parents=True)
    (git_dir / "config").write_text("[core]\n\trepositoryformatversion = 0\n\tfilemode = true\n\tbare = false\n"
                                    "\tlogallrefupdates = true\n", encoding="utf-8")
    if borrowed is not None:
        (git_dir / "objects" / "info" / "alternates").write_text(f"{borrowed}\n", encoding="utf-8")
    (git_dir / "HEAD").write_text("ref: refs/heads/agentloop-task\n", encoding="utf-8")  # last: git sees a repository


def run_setup(row: TaskRow, repo: Path, log: Path) -> None:
    """The row's setup commands, in order, in the workspace; output to `log`. A failure is InfraError."""
    with open(log, "ab") as fh:
        for command in row.setup:
            fh.write(f"$ {command}\n".encode())
            fh.flush()
            try:
                proc = subprocess.run(command, shell=True, cwd=repo, stdout=fh, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, timeout=SETUP_TIMEOUT)
            except subprocess.TimeoutExpired:
                raise InfraError(f"setup {command!r} did not finish in {SETUP_TIMEOUT:.0f}s") from None
            if proc.returncode != 0:
                raise InfraError(f"setup {command!r} exited {proc.returncode} (see {log})")


def build_config(row: TaskRow, *, model: str | None, api_base: str | None, sandbox: str, runs_dir: Path,
                 defaults: dict[str, Any] | None = None, tools: str = "auto"):
    """The session Config for a row: visible checks (feedback only when there are hidden ones), hidden
    accept checks with the verify timeout, held-out files, the row's limits over the batch's defaults."""
    from agentloop.config import Budget, Check, Config

    limits = {**(defaults or {}), **{k: v for k, v in vars(row.limits).items() if v is not None}}
    verify = float(limits.get("verify_timeout") or DEFAULT_VERIFY_TIMEOUT)
    hidden = bool(row.accept)
    checks = tuple(Check(run=c, accept=not hidden) for c in row.checks)
    checks += tuple(Check(run=a, feedback=False, accept=True, timeout=verify) for a in row.accept)
    budget = Budget()
    budget_changes: dict[str, Any] = {"time_limit": float(limits.get("rollout_timeout") or DEFAULT_ROLLOUT_TIMEOUT)}
    for key in ("max_turns", "max_tokens", "max_cost"):
        if limits.get(key) is not None:
            budget_changes[key] = limits[key]
    from dataclasses import replace

    return Config(model=model, api_base=api_base, checks=checks, sandbox=sandbox, tools=tools,
                  budget=replace(budget, **budget_changes),
                  accept_files=tuple((str(src), dest) for src, dest in row.accept_files),
                  runs_dir=str(runs_dir), in_place=True, source="task file")


def hard_deadline(row: TaskRow, defaults: dict[str, Any] | None = None, grace: float = 60.0) -> float:
    """Seconds after which a batch kills a rollout outright: the agent's time, the verification's, grace."""
    limits = {**(defaults or {}), **{k: v for k, v in vars(row.limits).items() if v is not None}}
    return (float(limits.get("rollout_timeout") or DEFAULT_ROLLOUT_TIMEOUT)
            + float(limits.get("verify_timeout") or DEFAULT_VERIFY_TIMEOUT) + grace)


def classify(outcome: str, reason: str, flags: list | None = None) -> str:
    """A session outcome as a batch status."""
    reason = (reason or "").lower()
    if outcome == "accepted":
        return FAILED if flags else PASSED
    if outcome == "error":
        return INFRA_ERROR if any(m in reason for m in INFRA_MARKERS) else AGENT_ERROR
    if outcome == "budget_exhausted" and "time_limit" in reason:
        return TIMEOUT
    if outcome == "interrupted":
        return INFRA_ERROR
    return FAILED


def run_rollout(row: TaskRow, sample: int, out: Path, *, model: str | None, api_base: str | None = None,
                sandbox: str = "bwrap", defaults: dict[str, Any] | None = None, group: str | None = None,
                model_obj: Any = None, tools: str = "auto") -> dict[str, Any]:
    """Run (row, sample) into `OUT/rollouts/<id>/<k>/` (which must not exist yet) and return its result:
    status, reward, turns, tokens, cost, seconds, run_dir (plus reason, outcome, flags)."""
    started = time.monotonic()
    base = rollout_dir(out, row.id, sample)
    if base.exists():
        shutil.rmtree(base)
    base.mkdir(parents=True)
    result = unfinished(row.id, sample, group or group_id(row), INFRA_ERROR, "")
    if row.meta:
        result["meta"] = row.meta
    try:
        if sandbox != "off":
            from agentloop.workspace.sandbox import probe

            why = probe()
            if why:
                raise InfraError(f"sandbox could not start: {why}")
        repo = base / "repo"
        fresh = materialise(row, repo)
        result["workspace_seconds"] = round(time.monotonic() - started, 3)
        run_setup(row, repo, base / "setup.log")
        session = _session(row, sample, base, repo, model=model, api_base=api_base, sandbox=sandbox,
                           defaults=defaults, group=result["group_id"], model_obj=model_obj, tools=tools,
                           fresh=None if row.setup else fresh)  # setup commands may write anything
    except InfraError as exc:
        result["reason"] = str(exc)
        result["seconds"] = round(time.monotonic() - started, 3)
        return result
    s = session.summary
    status = classify(s["outcome"], s.get("reason") or "", s.get("flags"))
    reward = s.get("reward")
    if s.get("flags") and isinstance(reward, (int, float)) and reward > 0:
        reward = 0.0  # a flagged episode (tests touched, checks gamed) never earns a positive reward
    result.update(status=status, reward=reward, turns=s["turns"], tokens=s["tokens"], cost=s["cost_usd"],
                  seconds=round(time.monotonic() - started, 3), run_dir=s["run_dir"], outcome=s["outcome"],
                  reason=s.get("reason") or "", flags=s.get("flags") or [])
    return result


def _session(row: TaskRow, sample: int, base: Path, repo: Path, *, model, api_base, sandbox, defaults, group,
             model_obj, tools, fresh: FreshCheckout | None = None):
    """`fresh`: the checkout materialise made, when nothing ran in the repository since (its .git is
    then the plain folder materialise made)."""
    from agentloop.run.session import run_session
    from agentloop.workspace.repo import Workspace

    config = build_config(row, model=model, api_base=api_base, sandbox=sandbox, runs_dir=base / "runs",
                          defaults=defaults, tools=tools)
    workspace = Workspace(repo, git_dir=repo / ".git") if fresh else Workspace(repo)
    return run_session(config, workspace, row.task, model=model_obj,
                       header_extra={"task_id": row.id, "sample": sample, "group_id": group}, fresh=fresh)
