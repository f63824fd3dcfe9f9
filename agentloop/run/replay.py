"""Re-execute a recorded run: its replies (or a new model's) against a fresh worktree at its base commit.

The replayed run is recorded like any other (its header names `replay_of`), then each check verdict
is compared with the record. The worktree lives under `.agentloop/replay/` in the repository and is
removed afterwards, whatever happens; the user's own working tree is never touched.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from agentloop.config import Config, apply_mapping
from agentloop.errors import AgentloopError, UsageError
from agentloop.record.runlog import Run
from agentloop.run.model import Attempt, Model, ModelCallFailed, ModelReply, ToolCall
from agentloop.run.scripted import ScriptedModel
from agentloop.workspace.repo import AGENTLOOP_DIR, Workspace, forget_worktrees, git

REPLAY_DIR = "replay"


def reply_from_record(data: dict[str, Any]) -> ModelReply:
    """A ModelReply rebuilt from a model_call event's `reply`."""
    return ModelReply(
        content=data.get("content") or "",
        tool_calls=[ToolCall(c["id"], c["name"], c["arguments"]) for c in data.get("tool_calls") or []],
        finish_reason=data.get("finish_reason"),
        prompt_tokens=data.get("prompt_tokens", 0), completion_tokens=data.get("completion_tokens", 0),
        cost_usd=data.get("cost_usd", 0.0), cost_note=data.get("cost_note"), latency_s=data.get("latency_s", 0.0),
        attempts=[Attempt(**a) for a in data.get("attempts") or []], logprobs=data.get("logprobs"),
    )


class ReplayModel(ScriptedModel):
    """Answers with the recorded replies in order; after `recorded` of them, hands over to `then` (a
    live model) if given, else fails: the replay asked for more than the record has."""

    def __init__(self, replies: list[ModelReply], name: str, *, recorded: int | None = None,
                 then: Model | None = None):
        super().__init__(replies[:len(replies) if recorded is None else recorded], name)
        self.then = then

    def exhausted(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, *,
                  deadline: float | None, overrides: dict[str, Any] | None) -> ModelReply:
        if self.then is not None:
            self.name = self.then.name
            return self.then.query(messages, tools, deadline=deadline, overrides=overrides)
        raise ModelCallFailed(f"replay diverged: the run asked for model reply {self.served + 1} but the record "
                              f"has only {len(self.replies)}", [])


@dataclass
class Verdict:
    turn: int
    check: str
    recorded: bool | None  # passed in the record (None: not run there)
    replayed: bool | None

    @property
    def matches(self) -> bool:
        return self.recorded == self.replayed


@dataclass
class ReplayReport:
    run_id: str
    replay_run_id: str
    recorded_outcome: str
    replayed_outcome: str
    verdicts: list[Verdict] = field(default_factory=list)
    live_model: str | None = None

    @property
    def matches(self) -> bool:
        return all(v.matches for v in self.verdicts) and self.recorded_outcome == self.replayed_outcome

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "replay_run_id": self.replay_run_id, "matches": self.matches,
                "recorded_outcome": self.recorded_outcome, "replayed_outcome": self.replayed_outcome,
                "live_model": self.live_model,
                "verdicts": [vars(v) | {"matches": v.matches} for v in self.verdicts]}


def check_verdicts(run: Run) -> dict[tuple[int, str, int], bool]:
    """(turn, check name, n-th run of that check in the turn) -> passed, for every check event."""
    seen: dict[tuple[int, str], int] = {}
    out = {}
    for e in run.of_type("check"):
        key = (int(e.get("turn", 0)), str(e.get("name") or e.get("command")))
        seen[key] = seen.get(key, 0) + 1
        out[(*key, seen[key])] = bool(e.get("passed", e.get("exit_code") == 0 and not e.get("timed_out")))
    return out


def compare(recorded: Run, replayed: Run, live_model: str | None = None) -> ReplayReport:
    old, new = check_verdicts(recorded), check_verdicts(replayed)
    verdicts = [Verdict(key[0], key[1], old.get(key), new.get(key)) for key in sorted(set(old) | set(new))]
    return ReplayReport(recorded.run_id, replayed.run_id, recorded.outcome, replayed.outcome, verdicts, live_model)


def recorded_config(run: Run, runs_dir: Path) -> Config:
    """The recorded run's settings (validated again), recording the replay into `runs_dir`."""
    raw = {k: v for k, v in (run.header.get("config") or {}).items() if k != "source"}
    raw["runs_dir"] = str(runs_dir.resolve())
    try:
        return apply_mapping(Config(), raw, f"run {run.run_id} config")
    except UsageError as exc:
        raise UsageError(f"cannot replay: {exc}") from None


@contextlib.contextmanager
def fresh_worktree(repo: Path, commit: str, name: str) -> Iterator[Path]:
    """A detached git worktree of `commit` under .agentloop/replay/, removed on the way out."""
    if git(["cat-file", "-t", commit], repo, check=False).strip() != "commit":
        raise UsageError(f"cannot replay: base commit {commit[:12]} is not in the repository at {repo}")
    import secrets

    path = repo / AGENTLOOP_DIR / REPLAY_DIR / f"{name}-{secrets.token_hex(3)}"  # unique: never reuse a leftover
    path.parent.mkdir(parents=True, exist_ok=True)
    forget_worktrees(repo, path.parent)  # worktrees of replays that were killed
    try:
        git(["worktree", "add", "--detach", "--quiet", str(path), commit], repo)
    except RuntimeError as exc:
        raise AgentloopError(f"cannot replay: {exc}") from None
    try:
        yield path
    finally:
        git(["worktree", "remove", "--force", str(path)], repo, check=False)
        forget_worktrees(repo, path.parent)


def apply_base_patch(run: Run, worktree: Path) -> None:
    """Recreate the uncommitted changes the recorded run started from, if it recorded any."""
    name = run.header.get("base_patch")
    if not name:
        return
    patch = (run.run_dir / name).read_text(encoding="utf-8")
    from agentloop.workspace.gitsafe import git_argv, git_env

    proc = subprocess.run(git_argv("apply", "--binary", "--whitespace=nowarn", "-"), cwd=worktree, input=patch,
                          env=git_env(), capture_output=True, text=True)
    if proc.returncode != 0:
        raise UsageError(f"cannot replay: the run's starting changes ({name}) do not apply: "
                         f"{(proc.stderr.strip().splitlines() or ['?'])[-1]}")


def replay_run(run: Run, repo: Path, runs_dir: Path, *, live: Model | None = None, from_turn: int = 1,
               progress=lambda line: None) -> ReplayReport:
    """Replay `run` in a fresh worktree of `repo`; with `live`, recorded replies serve turns before
    `from_turn` and the live model continues from there."""
    from agentloop.run.session import run_session

    base = run.header.get("base_commit")
    if not base:
        raise UsageError(f"cannot replay run {run.run_id}: it recorded no base commit (the repository had none)")
    replies = [(e.get("turn", 0), reply_from_record(e["reply"])) for e, _ in run.calls if e.get("reply")]
    recorded = sum(1 for turn, _ in replies if live is None or turn < from_turn)
    model = ReplayModel([r for _, r in replies], f"replay:{run.run_id}", recorded=recorded, then=live)
    config = replace(recorded_config(run, runs_dir), in_place=True)  # the replay's worktree is already its own
    if live is not None:
        config = replace(config, model=live.name)
    with fresh_worktree(repo, base, run.run_id) as worktree:
        apply_base_patch(run, worktree)
        session = run_session(config, Workspace(worktree), run.task, model=model, progress=progress,
                              header_extra={"replay_of": run.run_id, "replay_from_turn": from_turn if live else None})
    return compare(run, Run.load(session.run_dir), live.name if live else None)
