"""One `agentloop fix` run from start to end: run directory, header, loop, summary.

Shared by the CLI commands that start runs (fix, the pre-commit hook, replay).
"""

from __future__ import annotations

import platform
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentloop import __version__
from agentloop.config import Config, Reward
from agentloop.errors import EXIT_ERROR, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK
from agentloop.loop import ACCEPTED, INTERRUPTED, Loop, RunResult, tools_enabled
from agentloop.model import Model
from agentloop.trajectory import SCHEMA_VERSION, SUMMARY, Trajectory, append_index, new_run_id, now_iso
from agentloop.workspace import Workspace

EXIT_CODES = {ACCEPTED: EXIT_OK, "budget_exhausted": EXIT_FAILED, "gave_up": EXIT_FAILED,
              "error": EXIT_ERROR, INTERRUPTED: EXIT_INTERRUPTED}
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
        return EXIT_CODES.get(self.result.outcome, EXIT_ERROR)


def model_params_for(model: str | None, user_params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Request parameters: prompts/models.yaml's for this model (e.g. a reply length limit that stops a
    small model rambling), under the user's `model_params`, which always win."""
    from agentloop.feedback import model_rule

    return model_rule(model or "")["params"] | dict(user_params or {})


def build_model(config: Config) -> Model:
    from agentloop.model import LiteLLMModel

    params = model_params_for(config.model, config.model_params)
    return LiteLLMModel(config.model or "", api_base=config.api_base, params=params,
                        retries=config.retries, retry_max_wait=config.retry_max_wait,
                        request_timeout=config.request_timeout)


def reward(result: RunResult, weights: Reward | None = None) -> float:
    """RLEF-style by default: +1 accepted, -1 otherwise, -0.2 for each turn without a usable edit."""
    return (weights or Reward()).score(result.outcome == ACCEPTED, result.totals.unusable_turns)


def repo_identity(workspace: Workspace) -> dict[str, Any]:
    """Name and origin URL of the repository (credentials in the URL dropped), for the header."""
    import re

    from agentloop.workspace import git

    remote = git(["config", "--get", "remote.origin.url"], workspace.root, check=False).strip() or None
    if remote:
        remote = re.sub(r"^(\w+://)[^/@]*@", r"\1", remote)
    return {"repo_name": workspace.root.name, "remote": remote}


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def run_session(config: Config, workspace: Workspace, task: str | None, *,
                model: Model | Callable[[], Model] | None = None,
                progress: Callable[[str], None] = lambda line: None,
                show_reply: Callable[[str], None] | None = None,
                header_extra: dict[str, Any] | None = None) -> Session:
    """Run the loop in `workspace` and record everything under the runs directory."""
    task = task or DEFAULT_TASK
    workspace.exclude_agentloop_dir()
    run_id = new_run_id()
    runs_dir = Path(config.runs_dir)
    run_dir = (runs_dir if runs_dir.is_absolute() else workspace.root / runs_dir) / run_id
    trajectory = Trajectory(run_dir)
    started = now_iso()
    from agentloop import feedback, toolbox

    base_commit = workspace.head()
    # Uncommitted changes the run starts from, so that a replay can recreate the starting tree.
    base_patch = workspace.diff(f"{base_commit}^{{tree}}") if base_commit else ""
    if base_patch:
        trajectory.write_text("base.patch", base_patch)
    trajectory.event(
        "header", schema_version=SCHEMA_VERSION, agentloop_version=__version__, run_id=run_id, task=task,
        repo=str(workspace.root), **repo_identity(workspace), base_commit=base_commit, config=config.to_dict(),
        model=config.model, api_base=config.api_base,
        model_params=model_params_for(config.model, config.model_params),
        python=platform.python_version(), templates=feedback.template_hashes(), tools=toolbox.tool_specs_hash(),
        tool_specs=list(toolbox.load_tool_specs()) if tools_enabled(config.tools, config.model or "") else [],
        checks=[vars(c) | {} for c in config.checks], budget=vars(config.budget) | {},
        base_patch="base.patch" if base_patch else None,
        **(header_extra or {}),
    )
    loop = Loop(config, model or (lambda: build_model(config)), workspace, task, trajectory, progress, show_reply)
    previous = signal.signal(signal.SIGTERM, _raise_interrupt) if _main_thread() else None
    try:
        result = loop.run()
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        trajectory.close()
    t = result.totals
    (run_dir / "final.patch").write_text(trajectory.redactor.text(result.diff), encoding="utf-8")
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
        "model_calls": t.model_calls,
        "prompt_tokens": t.prompt_tokens,
        "completion_tokens": t.completion_tokens,
        "tokens": t.prompt_tokens + t.completion_tokens,
        "cost_usd": round(t.cost_usd, 6),
        "cost_notes": sorted(t.cost_notes),
        "duration_s": result.duration_s,
        "replies": t.replies,
        "replies_with_edits": t.replies_with_edits,
        "replies_applied": t.replies_applied,
        "reward": reward(result, config.reward),
        "checks": [{"command": r.command, "exit_code": r.exit_code, "passed": r.passed} for r in result.checks],
        "changed": bool(result.diff.strip()),
        "run_dir": str(run_dir),
        "trajectory": str(trajectory.path),
        "patch": str(run_dir / "final.patch"),
    }
    trajectory.write_json(SUMMARY, summary)
    append_index(run_dir.parent, summary, trajectory.redactor)
    return Session(run_id, run_dir, result, summary)


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread() and sys.platform != "win32"
