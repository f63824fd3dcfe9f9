"""The first user message: the task, the failing output, the code it is about, under a token budget.

The loop's `opening_messages` calls `build`; the finding is `agentloop.run.context`'s, the choice
under the cap `agentloop.run.budget`'s. What the model was shown of each file (whole or in part) is
kept, so a whole-file reply to a file seen only in part can be refused (`agentloop.edits.apply`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentloop.edits.definitions import unseen_ranges
from agentloop.run import budget, context, feedback
from agentloop.workspace.checks import CommandResult
from agentloop.workspace.guard import TEST_PATH

REFILLS = 4  # fills of the first prompt at most, each tighter, until the rendered prompt fits its cap


@dataclass
class Opening:
    system: str
    user: str
    example_path: str  # the file the format example quotes
    files: list[str]  # the files shown, in order
    partial: dict[str, str] = field(default_factory=dict)  # file -> what of it was shown (e.g. "lines 40-61")
    estimated_tokens: int = 0  # of the system message and this one (budget.estimate_tokens)
    shown: list[str] = field(default_factory=list)  # labels of the parts shown
    left_out: list[str] = field(default_factory=list)  # labels of what the budget left out or shortened


def shown_files(parts: Sequence[context.Part]) -> list[feedback.ShownFile]:
    """The parts as the templates show files: each under a title saying which lines of how many; the
    last part of a definition shown only in part says which of its lines were left out."""
    out = []
    last_of = {(p.path, p.span): i for i, p in enumerate(parts) if p.span is not None and p.kind == "lines"}
    for i, part in enumerate(parts):
        lang = "" if part.kind == "outline" else feedback.language(part.path)
        note = cut_definition_note(parts, part) if last_of.get((part.path, part.span)) == i else ""
        out.append(feedback.ShownFile(part.path, part.text, lang, title=part.label if part.kind != "whole" else "",
                                      note=note, outline=part.kind == "outline"))
    return out


def cut_definition_note(parts: Sequence[context.Part], part: context.Part) -> str:
    """For a definition the budget showed only in part: which of its lines were not shown, and how to
    change it without writing it whole (a small model otherwise writes out the cut definition)."""
    if part.span is None:
        return ""
    first, last = part.span
    if any(p.path == part.path and p.kind == "whole" for p in parts):
        return ""
    seen = sorted((p.start, p.end) for p in parts if p.path == part.path and p.kind == "lines")
    missing = unseen_ranges(seen, first, last)
    if not missing:
        return ""
    where = ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in missing)
    return (f"(`{part.definition}` runs from line {first} to line {last}; lines {where} of it were not shown. "
            "Do not write it whole: change the lines shown with a SEARCH/REPLACE block.)")


def partial_of(parts: Sequence[context.Part]) -> dict[str, str]:
    """File -> which of its lines were shown, for files shown only in part."""
    whole = {p.path for p in parts if p.kind == "whole"}
    out: dict[str, str] = {}
    for part in parts:
        if part.path in whole:
            continue
        ranges = [f"{p.start}-{p.end}" for p in parts if p.path == part.path and p.kind == "lines"]
        out[part.path] = (f"lines {', '.join(ranges)} of {part.total:,}" if ranges
                          else f"only an outline of its {part.total:,} lines")
    return out


def build(root: Path, task: str, visible: Sequence[CommandResult], repo_files: Sequence[str],
          given: Sequence[str], render_system: Callable[[str], str], cap: int | None) -> Opening:
    """The opening messages (see the module docstring). `render_system(path)`: the system message with
    its format example drawn from `path` (a file of the code under test when one is found); it counts
    against the cap."""
    failing = [r for r in visible if not r.passed]
    found = context.find_context(root, [r.output for r in failing], repo_files, given=given, task=task)
    named = list(given) + [p.path for p in found.parts]
    example = next((p for p in named if not TEST_PATH.search(p)), None) or _source_like(named, repo_files)
    system = render_system(example)
    fixed = "\n".join([system, task, *(r.command for r in visible)])  # shown whatever else fits
    limit, tokens = cap, None
    for _ in range(REFILLS):
        last = tokens
        filled = budget.fill(found.parts, [r.output for r in failing], repo_files, fixed=fixed, cap=limit,
                             wholes=found.wholes)
        user = _render(task, visible, failing, filled)
        tokens = budget.estimate_tokens(system + user)
        if cap is None or limit is None or tokens <= cap or (last is not None and tokens >= last):
            break  # fits, or nothing more gives way (the fixed text and the failure's floor are over the cap)
        # The fill counts part by part; the rendered whole can come out a little higher. Fill again,
        # that much tighter, so the cap holds for the prompt as sent.
        limit -= tokens - cap
    return Opening(system, user, example, list(dict.fromkeys(p.path for p in filled.parts)),
                   partial_of(filled.parts), tokens, [p.label for p in filled.parts], filled.left_out)


def _source_like(named: Sequence[str], repo_files: Sequence[str]) -> str:
    """When only tests were found: a repository file in the first one's language that is not a test, so
    the format example never quotes a file the model may not edit (it copied that path three times)."""
    first = next(iter(named), "")
    suffix = Path(first).suffix
    return next((p for p in repo_files if suffix and p.endswith(suffix) and not TEST_PATH.search(p)), first)


def _render(task: str, visible: Sequence[CommandResult], failing: Sequence[CommandResult],
            filled: budget.Filled) -> str:
    trimmed = dict(zip((id(r) for r in failing), filled.outputs, strict=True))
    checks: list[dict[str, Any]] = []
    for result in visible:
        view = feedback.check_view(result)
        if id(result) in trimmed:
            view["output"] = trimmed[id(result)].rstrip()
        checks.append(view)
    return feedback.render("task.j2", task=task, checks=checks, files=shown_files(filled.parts),
                           file_list=filled.file_list)


def read_whole(partial: dict[str, str], path: str, output: str) -> None:
    """After a read_file answer that held every line of `path`, the model has seen it whole."""
    first = output.split("\n", 1)[0]
    match = re.search(r"\(lines 1-(\d+) of (\d+)\)$", first)
    if match and match.group(1) == match.group(2):
        partial.pop(path, None)


def changed_files(root: Path, paths: Sequence[str], diff: str, partial: dict[str, str]) -> list[feedback.ShownFile]:
    """How the feedback shows files an edit changed: whole when short, else the functions around the
    changed lines and an outline. `partial` is kept up to date with what was shown."""
    changed = _changed_lines(diff)
    shown: list[feedback.ShownFile] = []
    for rel in paths:
        parts = context.changed_views(root, rel, changed.get(rel, []))
        if not parts:
            continue
        shown += shown_files(parts)
        seen = partial_of(parts)
        if rel in seen:
            partial[rel] = seen[rel]
        else:
            partial.pop(rel, None)
    return shown


_HUNK = re.compile(r"^@@ -\d+(?:,\d+)? \+(\d+)(?:,(\d+))? @@", re.M)


def _changed_lines(diff: str) -> dict[str, list[int]]:
    """File -> first lines (new numbering) of the hunks of a git diff."""
    out: dict[str, list[int]] = {}
    current = ""
    for line in diff.splitlines():
        if line.startswith("+++ "):
            current = line[4:].removeprefix("b/")
        match = _HUNK.match(line)
        if match and current:
            start, count = int(match.group(1)), int(match.group(2) or 1)
            out.setdefault(current, []).append(start + max(0, count // 2))
    return out
