"""Read recorded runs back: find them, list them fast, rebuild what each model call was sent.

Everything that consumes trajectories (runs, show, replay, export) goes through here, so the
on-disk format (docs/trajectory.md) is interpreted in one place.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from agentloop.errors import UsageError
from agentloop.files import read_json
from agentloop.outcome import Outcome
from agentloop.record.trajectory import INDEX, SUMMARY, TRAJECTORY, read_events


@dataclass
class Run:
    """One run directory: its events (tolerant of a truncated tail) and its summary if written."""

    run_dir: Path
    events: list[dict[str, Any]] = field(repr=False)
    summary: dict[str, Any] | None = field(default=None, repr=False)

    @classmethod
    def load(cls, run_dir: Path) -> Run:
        path = run_dir / TRAJECTORY
        if not path.is_file():
            raise UsageError(f"{run_dir}: no {TRAJECTORY} there; is it a run directory?")
        return cls(run_dir, read_events(path), read_json(run_dir / SUMMARY))

    def of_type(self, type_: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("type") == type_]

    def first(self, type_: str) -> dict[str, Any]:
        return next((e for e in self.events if e.get("type") == type_), {})

    @property
    def header(self) -> dict[str, Any]:
        return self.first("header")

    @property
    def footer(self) -> dict[str, Any]:
        """The `outcome` event, or {} if the run never finished."""
        found = self.of_type("outcome")
        return found[-1] if found else {}

    @property
    def run_id(self) -> str:
        return self.header.get("run_id") or self.run_dir.name

    @property
    def task(self) -> str:
        return self.header.get("task", "")

    @property
    def outcome(self) -> str:
        return self.footer.get("outcome") or Outcome.INCOMPLETE

    @property
    def reward(self) -> float | None:
        return self.footer.get("reward", (self.summary or {}).get("reward"))

    @property
    def flags(self) -> dict[str, int]:
        """Suspicious-edit and tampering flags of the run, by kind ({} when none)."""
        found = self.footer.get("flags", (self.summary or {}).get("flags"))
        return dict(found) if isinstance(found, dict) else {}

    @property
    def export_reward(self) -> float | None:
        """The reward exports use: a flagged run's is never positive (runs recorded before flags
        lowered the reward themselves get the failure reward here)."""
        reward = self.reward
        if reward is None or not self.flags or reward <= 0:
            return reward
        weights = (self.header.get("config") or {}).get("reward") or {}
        failed = weights.get("failed", -1.0)
        return float(failed) if isinstance(failed, (int, float)) and failed <= 0 else 0.0

    @property
    def tool_specs(self) -> list[dict[str, Any]]:
        return list(self.header.get("tool_specs") or [])

    @cached_property
    def calls(self) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
        """Every model_call event with the exact messages it sent."""
        return list(conversations(self.events))

    def final_conversation(self) -> list[dict[str, Any]]:
        """The last conversation sent plus the reply to it: the whole dialogue of the run."""
        answered = [(e, m) for e, m in self.calls if e.get("reply")]
        if not answered:
            return []
        event, messages = answered[-1]
        return messages + [assistant_message(event["reply"])]

    def usable_replies(self) -> list[bool]:
        """For each answered model call in order: False when it was a turn's final reply that had no
        applicable edit (a format error the trainer should not imitate), else True."""
        marks: list[bool] = []
        for event in self.events:
            if event.get("type") == "model_call" and event.get("reply"):
                marks.append(True)
            elif event.get("type") == "edits" and marks and not event.get("applied"):
                marks[-1] = False
        return marks

    def turn_numbers(self) -> list[int]:
        return sorted({e["turn"] for e in self.events if isinstance(e.get("turn"), int) and e["turn"] > 0})


def conversations(events: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """Rebuild each model call's messages: previous[:messages_base] + messages_new (schema v2);
    schema v1 stored the whole list in `messages`."""
    previous: list[dict[str, Any]] = []
    for event in events:
        if event.get("type") != "model_call":
            continue
        if "messages_new" in event:
            messages = previous[: event.get("messages_base", 0)] + list(event["messages_new"])
        else:
            messages = list(event.get("messages") or [])
        previous = messages
        yield event, messages


def assistant_message(reply: dict[str, Any]) -> dict[str, Any]:
    """A recorded reply as the assistant chat message the loop appended (OpenAI format)."""
    message: dict[str, Any] = {"role": "assistant", "content": reply.get("content") or ""}
    calls = reply.get("tool_calls") or []
    if calls:
        message["tool_calls"] = [{"id": c["id"], "type": "function",
                                  "function": {"name": c["name"], "arguments": c["arguments"]}} for c in calls]
    return message


# -- finding and listing runs -------------------------------------------------------------------


RUN_REF_HELP = "a run id, a unique prefix of one, `last` (= -1), -2 for the one before, or a run directory"


def recent_ref(ref: str) -> int | None:
    """`last` -> 1, `-N` -> N (the N-th newest run); None for any other reference."""
    if ref == "last":
        return 1
    if ref.startswith("-") and ref[1:].isdigit() and int(ref[1:]) >= 1:
        return int(ref[1:])
    return None


def find_run(ref: str, runs_dir: Path | None) -> Path:
    """A run directory from a path (run dir or its trajectory.jsonl), a run id / unique prefix, or
    `last` / `-N` (the newest run / the N-th newest)."""
    path = Path(ref)
    if path.is_file() and path.name == TRAJECTORY:
        return path.parent
    if (path / TRAJECTORY).is_file():
        return path
    if runs_dir is None or not runs_dir.is_dir():
        raise UsageError(f"{ref}: no such run (no runs directory here; pass --runs-dir or a run path)")
    nth = recent_ref(ref)
    if nth is not None:
        newest = sorted((p for p in runs_dir.iterdir() if (p / TRAJECTORY).is_file()), key=lambda p: p.name,
                        reverse=True)
        if len(newest) < nth:
            have = f"only {len(newest)} run(s)" if newest else "no runs"
            raise UsageError(f"{ref}: there are {have} in {runs_dir}; `agentloop runs` lists them")
        return newest[nth - 1]
    if (runs_dir / ref / TRAJECTORY).is_file():
        return runs_dir / ref
    matches = sorted(p for p in runs_dir.iterdir() if p.name.startswith(ref) and (p / TRAJECTORY).is_file())
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise UsageError(f"{ref}: no such run in {runs_dir}; `agentloop runs` lists them")
    raise UsageError(f"{ref}: matches {len(matches)} runs ({matches[0].name}, {matches[1].name}, ...); "
                     "give more of the id")


def expand_runs(refs: list[str], runs_dir: Path | None) -> list[Path]:
    """Run directories from refs that may also be directories holding many runs."""
    found: list[Path] = []
    for ref in refs:
        path = Path(ref)
        if path.is_dir() and not (path / TRAJECTORY).is_file():
            found.extend(sorted(p.parent for p in path.glob(f"*/{TRAJECTORY}")))
        else:
            found.append(find_run(ref, runs_dir))
    return list(dict.fromkeys(found))


def run_row(run_dir: Path) -> dict[str, Any]:
    """The listing row of a run from summary.json alone; for a run without one, its first line."""
    summary = read_json(run_dir / SUMMARY)
    if summary is not None:
        return summary
    header: dict[str, Any] = {}
    try:
        with open(run_dir / TRAJECTORY, encoding="utf-8", errors="replace") as fh:
            header = json.loads(fh.readline() or "{}")
    except (OSError, json.JSONDecodeError):
        pass
    return {"run_id": run_dir.name, "outcome": Outcome.INCOMPLETE, "task": header.get("task", ""),
            "started": header.get("time"), "model": header.get("model"), "turns": None, "cost_usd": None,
            "duration_s": None, "reward": None, "run_dir": str(run_dir)}


def list_runs(runs_dir: Path, *, outcome: str | None = None, task: str | None = None,
              min_reward: float | None = None, limit: int | None = None) -> list[dict[str, Any]]:
    """Rows for the runs under `runs_dir`, newest first (run ids start with their start time)."""
    if not runs_dir.is_dir():
        return []
    names = sorted((e.name for e in _scandir(runs_dir)), reverse=True)
    indexed = read_index(runs_dir)
    rows = []
    for name in names:
        row = indexed.get(name) or run_row(runs_dir / name)
        if outcome and row.get("outcome") != outcome:
            continue
        if task and task.lower() not in str(row.get("task", "")).lower():
            continue
        if min_reward is not None and (row.get("reward") is None or row["reward"] < min_reward):
            continue
        rows.append(row)
        if limit and len(rows) >= limit:
            break
    return rows


def read_index(runs_dir: Path) -> dict[str, dict[str, Any]]:
    """run id -> listing row from the runs directory's index (rows of deleted runs are ignored by the
    caller, which lists directories; runs missing from it fall back to their summary.json)."""
    rows: dict[str, dict[str, Any]] = {}
    for event in read_events(runs_dir / INDEX) if (runs_dir / INDEX).is_file() else []:
        if isinstance(event.get("run_id"), str):
            rows[event["run_id"]] = event
    return rows


def _scandir(runs_dir: Path):
    import os

    with os.scandir(runs_dir) as it:
        return [e for e in it if e.is_dir() and not e.name.startswith(".")]


def default_runs_dir(runs_dir: str | None) -> Path | None:
    """--runs-dir, else the configured runs directory of the repository around the cwd (if any)."""
    if runs_dir:
        return Path(runs_dir)
    from agentloop.workspace.gitsafe import toplevel

    root = toplevel()
    if root is None:
        return None
    from agentloop.config import load_config

    configured = Path(load_config(root).runs_dir)
    return configured if configured.is_absolute() else root / configured
