"""A run as a readable sequence of blocks: what both `agentloop show` renderers (terminal, HTML) print.

Deciding *what* a reader sees lives here; the renderers only decide *how*.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from agentloop.outcome import Outcome
from agentloop.record.runlog import Run
from agentloop.words import plural

OK, FAIL, INFO = "ok", "fail", "info"


@dataclass
class Block:
    kind: str  # header | system | user | assistant | tool | edits | check | guard | feedback | turn | outcome | error
    title: str
    body: str = ""
    is_diff: bool = False  # body is a unified diff (coloured by the renderers)
    status: str = INFO
    meta: list[str] = field(default_factory=list)
    foldable: bool = False  # long output the renderers may fold
    turn: int = 0  # set on model replies: renderers start a new turn section where it changes


def blocks(run: Run) -> list[Block]:
    out: list[Block] = [_header(run)]
    for event in run.events:
        kind = event.get("type")
        if kind == "prompt":
            out.append(Block("system", "system prompt", event.get("system", ""), foldable=True))
            out.append(Block("user", "task", event.get("user", ""), foldable=True))
        elif kind == "model_call":
            out.append(_model_call(event))
        elif kind == "tool":
            out.append(Block("tool", f"tool {event.get('name')}({_args(event.get('arguments'))})",
                             event.get("output", ""), status=OK if event.get("ok") else FAIL, foldable=True))
        elif kind == "edits":
            out.append(_edits(event))
        elif kind == "check":
            out.append(_check(event))
        elif kind == "guard":
            who = f" by `{event['check']}`" if event.get("check") else ""
            out.append(Block("guard", f"protected files changed{who}; put back", "\n".join(
                list(event.get("paths") or []) + [f"could not restore: {p}" for p in event.get("unrestored") or []]),
                status=FAIL))
        elif kind == "feedback":
            out.append(Block("feedback", "feedback to the model", event.get("content", ""), foldable=True))
        elif kind == "turn":
            out.append(Block("turn", f"end of turn {event.get('turn')}",
                             status=OK if event.get("checks_passed") == event.get("checks_total") else INFO,
                             meta=[f"checks {event.get('checks_passed')}/{event.get('checks_total')} passed",
                                   f"{_tokens(event.get('totals', {}))} tokens so far"]))
        elif kind == "internal_error":
            out.append(Block("error", "internal error", event.get("traceback", ""), status=FAIL))
        elif kind == "outcome":
            out.extend(_outcome(event))
    if not run.footer:
        out.append(Block("outcome", "run incomplete (no outcome recorded: crashed or still running)", status=FAIL))
    return out


def _header(run: Run) -> Block:
    h = run.header
    meta = [f"run {run.run_id}", f"started {str(h.get('time', ''))[:19].replace('T', ' ')}",
            f"model {h.get('model') or '-'}", f"agentloop {h.get('agentloop_version', '?')}",
            f"repo {h.get('repo_name') or h.get('repo', '')} @ {str(h.get('base_commit') or 'no commit')[:12]}"]
    checks = h.get("checks") or (h.get("config") or {}).get("checks") or []
    body = "\n".join(f"check: {c.get('run')}" + ("" if c.get("feedback", True) else "  (hidden acceptance)")
                     for c in checks)
    return Block("header", h.get("task") or "(no task)", body, meta=meta)


def _model_call(event: dict[str, Any]) -> Block:
    reply = event.get("reply")
    if not reply:
        return Block("assistant", f"model call failed (turn {event.get('turn')})", event.get("error", ""),
                     status=FAIL, turn=int(event.get("turn") or 0))
    body = reply.get("content") or ""
    for call in reply.get("tool_calls") or []:
        body += f"\n-> {call.get('name')}({_args(call.get('arguments'))})"
    meta = [f"turn {event.get('turn')}", f"{reply.get('prompt_tokens', 0)}+{reply.get('completion_tokens', 0)} tokens",
            f"${reply.get('cost_usd', 0):.4f}", f"{reply.get('latency_s', 0):.1f}s",
            f"finish {reply.get('finish_reason')}"]
    retries = len(reply.get("attempts") or []) - 1
    if retries > 0:
        meta.append(f"{retries} retries")
    return Block("assistant", f"model reply ({event.get('model')})", body.strip("\n"), meta=meta,
                 turn=int(event.get("turn") or 0))


def _edits(event: dict[str, Any]) -> Block:
    parts = [event["diff"]] if event.get("applied") and event.get("diff") else []  # real line numbers
    for edit in [] if parts else event.get("edits") or []:
        path = edit.get("path", "")
        if edit.get("kind") in ("replace", "write", "create"):
            old = edit.get("search", "") if edit.get("kind") == "replace" else ""
            hunk = "".join(difflib.unified_diff(
                old.splitlines(keepends=True), (edit.get("replace") or "").splitlines(keepends=True),
                f"a/{path}", f"b/{path}", n=2))
            # Recorded before edits carried their diff: difflib numbers from 1, not the file's lines.
            where = f"@@ near line {edit['line_hint']} @@" if edit.get("line_hint") else "@@ (line not recorded) @@"
            parts.append(re.sub(r"^@@ [^\n]* @@", where, hunk, flags=re.M))
        else:
            parts.append(f"{edit.get('kind')} {path}" + (f" -> {edit['new_path']}" if edit.get("new_path") else "")
                         + "\n")
    failures = [f"edit {f.get('index')} ({f.get('path')}): {f.get('reason')}: {f.get('message')}"
                for f in event.get("failures") or []]
    applied = event.get("applied")
    title = (f"edits applied to {', '.join(event.get('changed_files') or []) or 'no file'}" if applied
             else "edits refused" if failures else "no edit found in the reply")
    body = "\n".join(p.rstrip("\n") for p in parts)
    if failures:
        body = (body + "\n\n" if body else "") + "\n".join(failures)
    suspicious = [f"SUSPICIOUS {s.get('kind')} in {s.get('path')}: {s.get('line')}"
                  for s in event.get("suspicious") or []]
    if suspicious:
        body = (body + "\n\n" if body else "") + "\n".join(suspicious)
    meta = list(event.get("notes") or []) + ([f"{len(suspicious)} suspicious"] if suspicious else [])
    return Block("edits", title, body, is_diff=bool(parts) and not failures, status=OK if applied else FAIL,
                 meta=meta)


def _check(event: dict[str, Any]) -> Block:
    passed = event.get("passed", event.get("exit_code") == 0 and not event.get("timed_out"))
    verdict = "timed out" if event.get("timed_out") else f"exit {event.get('exit_code')}"
    meta = [verdict, f"{event.get('duration_s', 0):.1f}s"]
    if not event.get("feedback", True):
        meta.append("hidden from the model")
    if event.get("elided_bytes"):
        meta.append(f"{event['elided_bytes']} bytes elided (full output: {event.get('output_file')})")
    return Block("check", f"check {event.get('name') or event.get('command')}", event.get("output", ""),
                 status=OK if passed else FAIL, meta=meta, foldable=True)


def _outcome(event: dict[str, Any]) -> list[Block]:
    totals = event.get("totals") or {}
    meta = [f"reward {event.get('reward')}", plural(totals.get('turns', 0), 'turn'), f"{_tokens(totals)} tokens",
            f"${totals.get('cost_usd', 0):.4f}", f"{event.get('duration_s', 0):.1f}s"]
    flags = event.get("flags") or {}
    if flags:
        meta.insert(0, "FLAGGED " + ", ".join(f"{kind} x{count}" for kind, count in flags.items()))
    checks = "\n".join(f"{'PASS' if c.get('passed', c.get('exit_code') == 0) else 'FAIL'}  {c.get('command')}"
                       for c in event.get("checks") or [])
    out = [Block("outcome", f"{event.get('outcome')}: {event.get('reason')}", checks,
                 status=OK if event.get("outcome") == Outcome.ACCEPTED else FAIL, meta=meta)]
    if (event.get("diff") or "").strip():
        out.append(Block("diff", "final diff", event["diff"].rstrip("\n"), is_diff=True))
    return out


def _tokens(totals: dict[str, Any]) -> int:
    return int(totals.get("prompt_tokens", 0)) + int(totals.get("completion_tokens", 0))


def _args(arguments: Any) -> str:
    try:
        value = json.loads(arguments) if isinstance(arguments, str) else arguments
    except json.JSONDecodeError:
        return str(arguments)
    if isinstance(value, dict):
        return ", ".join(f"{k}={json.dumps(v)}" for k, v in value.items())
    return json.dumps(value)


def fold(text: str, keep: int = 15) -> tuple[str, int]:
    """The first and last `keep` lines and how many were folded in between."""
    lines = text.splitlines()
    if len(lines) <= 2 * keep + 3:
        return text, 0
    folded = len(lines) - 2 * keep
    return "\n".join(lines[:keep] + [f"[... {folded} lines folded ...]"] + lines[-keep:]), folded
