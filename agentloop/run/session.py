"""One `agentloop fix` run from start to end: run directory, header, loop, summary.

Shared by the CLI commands that start runs (fix, the pre-commit hook, replay).
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentloop import __version__
from agentloop.config import Config
from agentloop.errors import EXIT_ERROR, EXIT_FAILED
from agentloop.interrupts import SignalGuard
from agentloop.outcome import Outcome
from agentloop.record.trajectory import (
    SCHEMA_VERSION,
    SUMMARY,
    TRAJECTORY,
    Trajectory,
    append_index,
    new_run_id,
    now_iso,
)
from agentloop.run import rules
from agentloop.run.loop import Loop
from agentloop.run.model import LazyModel, Model
from agentloop.run.settle import RunResult, settle
from agentloop.run.start import first_checks
from agentloop.run.turns import Ending, ending_of
from agentloop.workspace.checks import CommandResult
from agentloop.workspace.isolation import Isolation
from agentloop.workspace.repo import AGENTLOOP_DIR, FreshCheckout, Workspace
from agentloop.workspace.result import EditedResult
from agentloop.workspace.suite import CheckSuite

DEFAULT_TASK = "Make the checks pass."


@dataclass
class Session:
    run_id: str
    run_dir: Path
    result: RunResult
    summary: dict[str, Any]

    @property
    def exit_code(self) -> int:
        if self.result.exit_code is not None:
            return self.result.exit_code
        if self.result.workspace.get("conflicts") or self.result.workspace.get("apply_error"):
            return EXIT_FAILED  # accepted on the branch, but not applied to the user's tree
        outcome = Outcome.of(self.result.outcome)
        return outcome.exit_code if outcome else EXIT_ERROR


def build_model(config: Config, on_retry: Callable[[int, str], None] | None = None) -> Model:
    """The litellm model of `config`; `on_retry` is told of each retry (attempt, what failed)."""
    from agentloop.run.model import LiteLLMModel

    return LiteLLMModel(config.model or "", api_base=config.api_base,
                        params=rules.params(config.model, config.model_params), retries=config.retries,
                        retry_max_wait=config.retry_max_wait, request_timeout=config.request_timeout,
                        on_retry=on_retry)


def repo_identity(workspace: Workspace) -> dict[str, Any]:
    """Name and origin URL of the repository (credentials in the URL dropped), for the header."""
    import re

    from agentloop.workspace.repo import git

    remote = git(["config", "--get", "remote.origin.url"], workspace.root, check=False).strip() or None
    if remote:
        remote = re.sub(r"^(\w+://)[^/@]*@", r"\1", remote)
    return {"repo_name": workspace.root.name, "remote": remote}


def run_session(config: Config, workspace: Workspace, task: str | None, *,
                model: Model | None = None,
                progress: Callable[[str], None] = lambda line: None,
                show_reply: Callable[[str], None] | None = None,
                header_extra: dict[str, Any] | None = None,
                first_results: list[CommandResult] | None = None,
                started: float | None = None,
                status: Callable[[str], None] = lambda text: None,
                check_output: Callable[[bytes], None] | None = None,
                fresh: FreshCheckout | None = None) -> Session:
    """Run the loop on `workspace` (in a worktree of it unless config.in_place) and record everything
    under the runs directory.

    `model`: None for the litellm model of `config`, built on first use (litellm is imported only
    when a call is made; see LazyModel).

    `first_results`: the checks as the caller has just run them, so the loop need not run them again.
    `started`: time.monotonic() when the command began; the time limit counts from there.
    `status`, `check_output`: the live status line and -v's check output (agentloop/console.py).
    `fresh`: what the caller knows of the workspace, when it has just made it (a batch rollout).
    """
    task = task or DEFAULT_TASK
    workspace.exclude_agentloop_dir()
    run_id = new_run_id()
    runs_dir = Path(config.runs_dir)
    run_dir = (runs_dir if runs_dir.is_absolute() else workspace.root / runs_dir) / run_id
    with SignalGuard() as guard:
        isolation = Isolation(workspace, run_id, run_dir, in_place=config.in_place, note=progress)
        try:
            isolation.prepare()
            result = _run(config, workspace, isolation, guard, run_id, run_dir, task, model, progress, show_reply,
                          header_extra, first_results, started, {"status": status, "check_output": check_output},
                          fresh)
        except BaseException:
            guard.settle()
            isolation.finish(Outcome.INTERRUPTED, None)  # whatever was set up is cleaned away; the tree is untouched
            raise
        finally:
            for used in {id(w): w for w in (workspace, isolation.workspace) if w is not None}.values():
                used.close()
    run_dir, trajectory_path = isolation.run_dir, isolation.run_dir / TRAJECTORY
    redactor = result.redactor
    result, started, base_commit = result.result, result.started, result.base_commit
    t = result.totals
    (run_dir / "final.patch").write_text(redactor.text(result.diff), encoding="utf-8")
    summary = {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id,
        "started": started,
        "base_commit": base_commit,
        "outcome": result.outcome,
        "reason": result.reason,
        "task": task,
        "model": config.model,
        "turns": t.turns,
        "turns_finished": t.turns_finished,
        "model_calls": t.model_calls,
        "prompt_tokens": t.prompt_tokens,
        "completion_tokens": t.completion_tokens,
        "tokens": t.prompt_tokens + t.completion_tokens,
        "first_prompt_tokens": t.first_prompt_tokens,  # the provider's count (0: no reply)
        "first_prompt_estimate": t.first_prompt_estimate,  # estimated tokens (agentloop.run.budget)
        "cost_usd": round(t.cost_usd, 6),
        "cost_notes": sorted(t.cost_notes),
        "duration_s": result.duration_s,
        "replies": t.replies,
        "replies_with_edits": t.replies_with_edits,
        "replies_applied": t.replies_applied,
        "reward": result.reward,
        "flags": result.flags,
        "checks": [{"command": r.command, "exit_code": r.exit_code, "passed": r.passed} for r in result.checks],
        "changed": bool(result.diff.strip()),
        "run_dir": str(run_dir),
        "trajectory": str(trajectory_path),
        "patch": str(run_dir / "final.patch"),
        "workspace": result.workspace,
        "kept_turn": result.kept_turn,
    }
    write_summary(run_dir, summary, redactor)
    append_index(run_dir.parent, summary, redactor)
    return Session(run_id, run_dir, result, summary)


@dataclass
class _Ran:
    result: RunResult
    started: str
    base_commit: str | None
    redactor: Any


def _run(config: Config, workspace: Workspace, isolation: Isolation, guard: SignalGuard, run_id: str,
         run_dir: Path, task: str, model, progress, show_reply, header_extra, first_results=None,
         started_at: float | None = None, live: dict[str, Any] | None = None,
         fresh: FreshCheckout | None = None) -> _Ran:
    """Header, set-up, turns, settling; an interrupt after the header still ends the trajectory with its footer."""
    from agentloop.run import feedback, toolbox

    if fresh is not None:  # exactly the commit's files: no snapshot to take, nothing uncommitted, nothing ignored
        base_commit, start_tree, untracked = fresh.commit, fresh.tree, []
        identity = {"repo_name": workspace.root.name, "remote": fresh.remote}
    else:
        base_commit = workspace.head()
        start_tree, untracked = workspace.snapshot_and_untracked()
        identity = repo_identity(workspace)
    trajectory = Trajectory(run_dir)
    started = now_iso()
    started_at = time.monotonic() if started_at is None else started_at  # the time limit counts from here
    status = (live or {}).get("status") or (lambda text: None)
    loop: Loop | None = None
    try:
        try:
            # Uncommitted changes the run starts from, so that a replay can recreate the starting tree.
            base_patch = workspace.diff(f"{base_commit}^{{tree}}", start_tree) if base_commit and not fresh else ""
            if base_patch:
                trajectory.write_text("base.patch", base_patch)
            trajectory.event(
                "header", schema_version=SCHEMA_VERSION, agentloop_version=__version__, run_id=run_id, task=task,
                repo=str(workspace.root), **identity, base_commit=base_commit,
                config=config.to_dict(), model=config.model, api_base=config.api_base,
                model_params=rules.params(config.model, config.model_params), python=platform.python_version(),
                templates=feedback.template_hashes(), tools=toolbox.tool_specs_hash(),
                tool_specs=list(toolbox.load_tool_specs()) if rules.tools_enabled(config.tools, config.model or "")
                else [],
                checks=[vars(c) | {} for c in config.checks], budget=vars(config.budget) | {},
                base_patch="base.patch" if base_patch else None,
                workspace={"mode": isolation.mode, "branch": isolation.branch}, **(header_extra or {}),
            )
            # The snapshot's listing of untracked files is still the tree's unless the header above
            # was written into it (a runs folder inside the tree, outside the excluded .agentloop/).
            records = run_dir.resolve()
            unwritten = (not records.is_relative_to(workspace.root)
                         or records.is_relative_to(workspace.root / AGENTLOOP_DIR))
            private = frozenset() if config.include_untracked else private_files(
                workspace, config, untracked if unwritten else None)
            work = isolation.begin(start_tree, base_commit)
            if model is None:
                def retrying(attempt: int, error: str) -> None:
                    status(f"waiting for the model (retry {attempt}: {error})")

                model = LazyModel(config.model or "", lambda: build_model(config, on_retry=retrying))
            checks = CheckSuite(config, work, trajectory, user_root=workspace.root, started=started_at,
                                progress=progress, status=status, check_output=(live or {}).get("check_output"))
            edited = EditedResult(work, start_tree, in_place=config.in_place, on_base=isolation.record_base)
            loop = Loop(config, model, work, checks, task, trajectory, start_tree=start_tree, edited=edited,
                        private_files=private, progress=progress, status=status, show_reply=show_reply,
                        on_turn=isolation.record_turn)
            try:
                ending = loop.run(first_checks(checks, start_tree, first_results, prefetch=bool(config.model),
                                               ignored=[] if fresh else None))
            except Exception as exc:  # noqa: BLE001 - a check that cannot start, or a bug of ours: recorded
                ending = ending_of(exc, trajectory)
        except KeyboardInterrupt:
            ending = Ending(Outcome.INTERRUPTED, "interrupted by the user")
        result = settle(config, trajectory, ending, loop, started=started_at, on_end=isolation.finish,
                        progress=progress, guard=guard)
    finally:
        trajectory.close()
    return _Ran(result, started, base_commit, trajectory.redactor)


def private_files(workspace: Workspace, config: Config, untracked: list[str] | None = None) -> frozenset[str]:
    """Files git neither tracks nor has staged (notes, local settings): the user never shared them, so
    the model is not shown them, unless `include_untracked` or `files:` names them. `untracked`: git's
    listing of them, when the caller has just taken it (Workspace.snapshot_and_untracked)."""
    from agentloop.workspace.repo import git

    if untracked is None:
        out = git(["ls-files", "-z", "--others", "--exclude-standard"], workspace.root, check=False)
        untracked = [f for f in out.split("\0") if f]
    return frozenset(untracked) - set(config.files)


def write_summary(run_dir: Path, summary: dict[str, Any], redactor) -> None:
    import json

    from agentloop.files import atomic_write

    atomic_write(run_dir / SUMMARY, json.dumps(redactor.data(summary), indent=2, ensure_ascii=False,
                                                    default=str) + "\n")
