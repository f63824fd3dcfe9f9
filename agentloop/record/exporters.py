"""Turn recorded runs into the formats trainers read, one function per format.

Each exporter takes the selected runs and yields JSON rows (one line each in the output file).
The field names follow the formats exactly; docs/trajectory.md explains each mapping.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Callable, Iterator
from itertools import product
from pathlib import Path
from typing import Any

from agentloop import __version__
from agentloop.files import read_json
from agentloop.outcome import FAILED_ON_THE_MERITS, Outcome
from agentloop.record.runlog import Run, assistant_message

Row = dict[str, Any]
ATIF_VERSION = "ATIF-v1.4"


# -- helpers -----------------------------------------------------------------------------------


def _openai_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages with only the fields chat fine-tuning accepts, in OpenAI's tool-call shape."""
    out = []
    for m in messages:
        msg: dict[str, Any] = {"role": m["role"], "content": m.get("content") or ""}
        if m.get("tool_calls"):
            msg["tool_calls"] = [{"id": c["id"], "type": "function",
                                  "function": {"name": c["function"]["name"],
                                               "arguments": c["function"]["arguments"]}} for c in m["tool_calls"]]
        if m["role"] == "tool":
            msg["tool_call_id"] = m.get("tool_call_id", "")
        out.append(msg)
    return out


def _trl_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """TRL / transformers chat templates want tool-call arguments as objects, not JSON text."""
    out = _openai_messages(messages)
    for msg in out:
        for call in msg.get("tool_calls") or []:
            call["function"]["arguments"] = _parse_args(call["function"]["arguments"])
    return out


def _parse_args(arguments: Any) -> Any:
    if isinstance(arguments, str):
        try:
            return json.loads(arguments or "{}")
        except json.JSONDecodeError:
            return {"_raw": arguments}
    return arguments


def _opening(run: Run) -> list[dict[str, Any]]:
    """The system and task messages every conversation of the run starts with."""
    return run.calls[0][1][:2] if run.calls else []


def _first_reply(run: Run) -> dict[str, Any] | None:
    answered = [e for e, _ in run.calls if e.get("reply")]
    return assistant_message(answered[0]["reply"]) if answered else None


def _flags(*runs: Run) -> list[str]:
    """The flag kinds of the runs behind a row (a list, so every row has the same column type)."""
    return sorted({kind for run in runs for kind in run.flags})




def start_tree(run: Run) -> str | None:
    """The git tree id of the content the run started from: the footer's `workspace.start_tree`, else
    workspace.json's (a run that never finished), else for an older run with no uncommitted start
    (`base_patch` null) its base commit's tree, looked up in the recorded repository. None if unknown."""
    tree = (run.footer.get("workspace") or {}).get("start_tree")
    if not tree:
        tree = (read_json(run.run_dir / "workspace.json") or {}).get("start_tree")
    if tree:
        return str(tree)
    header = run.header
    repo = Path(str(header.get("repo") or ""))
    if header.get("base_commit") and not header.get("base_patch") and header.get("repo") and repo.is_dir():
        proc = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{header['base_commit']}^{{tree}}"],
                              cwd=repo, capture_output=True, text=True)
        if proc.returncode == 0:
            return proc.stdout.strip()
    return None


def checks_id(run: Run) -> str:
    """What decides the run's verdict, as a hash: every check's command and role (feedback, accept)."""
    checks = [[c.get("run", ""), bool(c.get("feedback", True)), bool(c.get("accept", True))]
              for c in run.header.get("checks") or []]
    return _digest(checks)


def group_id(run: Run) -> str:
    """The group a run is a sample of (GRPO-style): the header's `task_id` when the run has one (batch
    runs), else a hash of the task text, the starting tree content and the checks."""
    task_id = run.header.get("task_id")
    if isinstance(task_id, str) and task_id:
        return task_id
    return _digest([run.task, start_tree(run) or f"commit:{run.header.get('base_commit') or ''}", checks_id(run)])


def task_key(run: Run) -> tuple[str, str, str, str] | None:
    """Runs of "the same task": same task id (if any), same task text, same starting tree content (not
    commit id: identical trees at different commits match), same checks. None when the starting tree is
    unknown: such a run is never paired."""
    tree = start_tree(run)
    if tree is None:
        return None
    return str(run.header.get("task_id") or ""), run.task, tree, checks_id(run)


def failed_on_the_merits(run: Run) -> bool:
    """Out of budget or gave up after at least one turn: a real attempt that did not pass."""
    totals = run.footer.get("totals") or {}
    turns = totals["turns"] if isinstance(totals.get("turns"), int) else len(run.turn_numbers())
    return run.outcome in FAILED_ON_THE_MERITS and turns >= 1


def preference_pairs(runs: list[Run]) -> Iterator[tuple[Run, Run]]:
    """(chosen, rejected) for runs of one task (task_key): chosen accepted and not flagged, rejected
    failed on the merits; never an interrupted, error or incomplete run; never two identical first
    replies; and the chosen reward above the rejected one when both are recorded."""
    groups: dict[tuple[str, str, str, str], list[Run]] = {}
    for run in runs:
        key = task_key(run) if run.footer and _first_reply(run) is not None else None
        if key is not None:
            groups.setdefault(key, []).append(run)
    for group in groups.values():
        good = [r for r in group if r.outcome == Outcome.ACCEPTED and not r.flags]
        bad = [r for r in group if failed_on_the_merits(r)]
        for chosen, rejected in product(good, bad):
            if _same_reply(_first_reply(chosen), _first_reply(rejected)):
                continue
            if (chosen.export_reward is not None and rejected.export_reward is not None
                    and chosen.export_reward <= rejected.export_reward):
                continue
            yield chosen, rejected


def _same_reply(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    """Equal as training outputs: same text and same tool calls (their ids aside)."""
    def essence(message: dict[str, Any] | None) -> Any:
        message = message or {}
        calls = [(c["function"]["name"], c["function"]["arguments"]) for c in message.get("tool_calls") or []]
        return message.get("content") or "", calls
    return essence(a) == essence(b)


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]


# -- formats -----------------------------------------------------------------------------------


def openai_sft(runs: list[Run]) -> Iterator[Row]:
    """OpenAI chat fine-tuning: {"messages", "tools"}; assistant messages carry weight 0/1
    (0 for replies that held no applicable edit, so format errors are not imitated)."""
    for run in runs:
        conversation = run.final_conversation()
        if not conversation:
            continue
        messages = _openai_messages(conversation)
        usable = iter(run.usable_replies())
        for msg in messages:
            if msg["role"] == "assistant":
                msg["weight"] = 1 if next(usable, True) else 0
        yield {"messages": messages, "tools": run.tool_specs, "flags": _flags(run)}


def openai_dpo(runs: list[Run]) -> Iterator[Row]:
    """OpenAI preference fine-tuning: {"input": {"messages", "tools"}, "preferred_output",
    "non_preferred_output"}; see preference_pairs for what is compared."""
    for chosen, rejected in preference_pairs(runs):
        yield {"input": {"messages": _openai_messages(_opening(chosen)), "tools": chosen.tool_specs},
               "preferred_output": _openai_messages([_first_reply(chosen)]),
               "non_preferred_output": _openai_messages([_first_reply(rejected)]), "flags": _flags(chosen, rejected)}


def trl_sft(runs: list[Run]) -> Iterator[Row]:
    """TRL SFTTrainer conversational format: {"messages", "tools"}."""
    for run in runs:
        conversation = run.final_conversation()
        if conversation:
            yield {"messages": _trl_messages(conversation), "tools": run.tool_specs, "flags": _flags(run)}


def trl_dpo(runs: list[Run]) -> Iterator[Row]:
    """TRL DPOTrainer conversational format: {"prompt", "chosen", "rejected"}."""
    for chosen, rejected in preference_pairs(runs):
        yield {"prompt": _trl_messages(_opening(chosen)), "chosen": _trl_messages([_first_reply(chosen)]),
               "rejected": _trl_messages([_first_reply(rejected)]), "flags": _flags(chosen, rejected)}


def atif(runs: list[Run]) -> Iterator[Row]:
    """Harbor's Agent Trajectory Interchange Format v1.4: one trajectory object per line."""
    for run in runs:
        yield _atif_trajectory(run)


def _atif_trajectory(run: Run) -> Row:
    """One run as an ATIF trajectory: system and task steps, agent steps (tool answers as their
    observation), user steps for the feedback the model got."""
    steps: list[dict[str, Any]] = []

    def step(source: str, message: str, time: str | None, **extra: Any) -> dict[str, Any]:
        item = {"step_id": len(steps) + 1, "timestamp": time, "source": source, "message": message, **extra}
        steps.append(item)
        return item

    prompt = run.first("prompt")
    if prompt:
        step("system", prompt.get("system", ""), prompt.get("time"))
        step("user", prompt.get("user", ""), prompt.get("time"))
    last_agent: dict[str, Any] | None = None
    for event in run.events:
        kind = event.get("type")
        if kind == "model_call" and event.get("reply"):
            reply = event["reply"]
            metrics = {"prompt_tokens": reply.get("prompt_tokens", 0),
                       "completion_tokens": reply.get("completion_tokens", 0),
                       "cost_usd": reply.get("cost_usd", 0.0)}
            logprobs = _token_logprobs(reply.get("logprobs"))
            if logprobs is not None:
                metrics["logprobs"] = logprobs
            calls = [{"tool_call_id": c["id"], "function_name": c["name"],
                      "arguments": _parse_args(c["arguments"])} for c in reply.get("tool_calls") or []]
            last_agent = step("agent", reply.get("content") or "", event.get("time"),
                              model_name=event.get("model"), tool_calls=calls or None, observation=None,
                              metrics=metrics)
        elif kind == "tool" and last_agent is not None:
            observation = last_agent["observation"] or {"results": []}
            call_id = event.get("call_id") or next(  # schema v2 runs before call_id: match by tool name
                (c["tool_call_id"] for c in last_agent["tool_calls"] or [] if c["function_name"] == event.get("name")
                 and c["tool_call_id"] not in {r["source_call_id"] for r in observation["results"]}), None)
            observation["results"].append({"source_call_id": call_id, "content": event.get("output", "")})
            last_agent["observation"] = observation
        elif kind == "feedback":
            step("user", event.get("content", ""), event.get("time"))
    footer = run.footer
    totals = footer.get("totals") or {}
    return {"schema_version": ATIF_VERSION, "session_id": run.run_id,
            "agent": {"name": "agentloop", "version": run.header.get("agentloop_version", __version__),
                      "model_name": run.header.get("model")},
            "steps": steps,
            "final_metrics": {"total_prompt_tokens": totals.get("prompt_tokens", 0),
                              "total_completion_tokens": totals.get("completion_tokens", 0),
                              "total_cost_usd": totals.get("cost_usd", 0.0), "total_steps": len(steps)},
            "extra": {"group_id": group_id(run), "outcome": run.outcome, "reward": run.export_reward,
                      "flags": _flags(run)}}


def _token_logprobs(logprobs: Any) -> list[float] | None:
    """OpenAI-style choice.logprobs -> the list of per-token logprobs ATIF stores."""
    if isinstance(logprobs, dict) and isinstance(logprobs.get("content"), list):
        return [float(t.get("logprob", 0.0)) for t in logprobs["content"] if isinstance(t, dict)]
    return None


def rlef(runs: list[Run]) -> Iterator[Row]:
    """One row per episode for multi-turn RL on execution feedback (RLEF): its group_id (samples of one
    task share it, for GRPO-style training), the opening prompt, each turn's messages (the model's
    replies and the tool answers, exactly as in the conversation), the check verdicts and the feedback
    the model then got, the final reward. Only episodes that ended on the merits (accepted, out of
    budget, gave up): an interrupted or error run's reward says nothing about the model."""
    for run in runs:
        if run.outcome != Outcome.ACCEPTED and run.outcome not in FAILED_ON_THE_MERITS:
            continue
        turns = []
        for number in run.turn_numbers():
            events = [e for e in run.events if e.get("turn") == number]
            edits = next((e for e in events if e.get("type") == "edits"), {})
            feedback = next((e.get("content", "") for e in events if e.get("type") == "feedback"), None)
            turns.append({"turn": number, "messages": _openai_messages(_turn_messages(run, number, feedback)),
                          "edit_applied": bool(edits.get("applied")),
                          "checks": [{"name": e.get("name", ""), "exit_code": e.get("exit_code"),
                                      "passed": bool(e.get("passed")), "feedback": bool(e.get("feedback", True))}
                                     for e in events if e.get("type") == "check"],
                          "feedback": feedback})
        yield {"episode_id": run.run_id, "group_id": group_id(run), "task": run.task,
               "prompt": _openai_messages(_opening(run)), "turns": turns, "outcome": run.outcome,
               "reward": run.export_reward, "flags": _flags(run)}


def _turn_messages(run: Run, turn: int, feedback: str | None) -> list[dict[str, Any]]:
    """The messages a turn added to the conversation, without its closing feedback message."""
    calls = run.calls
    mine = [i for i, (e, _) in enumerate(calls) if e.get("turn") == turn]
    if not mine:
        return []
    start = len(calls[mine[0]][1])
    event, sent = calls[mine[-1]]
    after = calls[mine[-1] + 1][1] if mine[-1] + 1 < len(calls) else run.final_conversation()
    said = sent + [assistant_message(event["reply"])] if event.get("reply") else sent
    if after[: len(said)] != said:  # the next request did not go on from this reply (fresh_retry)
        after = said
    segment = after[start:]
    last = segment[-1] if segment else {}
    if feedback is not None and last.get("role") == "user" and last.get("content") == feedback:
        segment = segment[:-1]
    return segment


FORMATS: dict[str, Callable[[list[Run]], Iterator[Row]]] = {
    "openai-sft": openai_sft, "openai-dpo": openai_dpo, "trl-sft": trl_sft, "trl-dpo": trl_dpo,
    "atif": atif, "rlef": rlef,
}
