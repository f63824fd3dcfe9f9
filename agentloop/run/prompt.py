"""What the model is told: the opening messages, each turn's feedback, the files it has seen.

Kept apart from the turn cycle (agentloop.run.loop) so that the loop reads as the cycle alone; the
wording itself lives in `prompts/*.j2` and the facts the templates need in agentloop.run.feedback.
"""

from __future__ import annotations

from typing import Any

from agentloop.config import Config
from agentloop.edits import ApplyResult
from agentloop.record.trajectory import Trajectory
from agentloop.run import feedback, followup, opening, rules
from agentloop.run.model import Model, ModelReply
from agentloop.run.toolbox import ToolAnswer
from agentloop.workspace.checks import CommandResult
from agentloop.workspace.repo import Workspace


class Prompt:
    """The messages of one run, and what they have shown the model so far (files, format examples)."""

    def __init__(self, config: Config, model: Model, workspace: Workspace, task: str, trajectory: Trajectory,
                 private_files: frozenset[str] = frozenset()):
        self.config, self.model, self.workspace, self.task, self.trajectory = config, model, workspace, task, trajectory
        self.private_files = private_files  # not tracked, not staged: never shown to the model
        self.in_play: list[str] = list(config.files)  # files shown to the model so far
        self.examples: set[str] = set()  # format examples shown to the model, verbatim
        self.partial: dict[str, str] = {}  # files shown only in part -> which part (no whole-file reply to them)
        self.first_prompt_estimate = 0  # estimated tokens of the opening messages (agentloop.run.budget)

    def shared_files(self, listed: list[str] | None = None) -> list[str]:
        """The repository's files the model may know of: all but the private ones. `listed`: the
        workspace's files as Workspace.list_files() would give them now, when the caller has them."""
        files = self.workspace.list_files() if listed is None else listed
        return [f for f in files if f not in self.private_files]

    def opening_messages(self, results: list[CommandResult], listed: list[str] | None = None) -> list[dict[str, Any]]:
        """The system and first user message; `listed`: see shared_files."""
        root = self.workspace.root

        def system(example_path: str) -> str:  # the format example quotes a real file of the code under test
            return feedback.render("system.j2", tools=self.tools_enabled, edit_format=self.edit_format,
                                   give_up=self.give_up_offered, **feedback.example_values(example_path, root))

        first = opening.build(root, self.task, self.visible(results), self.shared_files(listed), self.config.files,
                              system, rules.first_prompt_tokens(self.model.name))
        self.examples.add(feedback.format_example(self.edit_format, first.example_path, root))
        self.in_play += [p for p in first.files if p not in self.in_play]
        self.partial = dict(first.partial)
        self.first_prompt_estimate = first.estimated_tokens
        self.trajectory.event("prompt", system=first.system, user=first.user, edit_format=self.edit_format,
                              files_in_play=list(self.in_play), estimated_tokens=first.estimated_tokens,
                              shown=first.shown, left_out=first.left_out, partial=first.partial)
        return [{"role": "system", "content": first.system}, {"role": "user", "content": first.user}]

    def feedback_message(self, applied: ApplyResult, results: list[CommandResult], *, turn: int, accepted: bool,
                         tampered: list[str], applied_diff: str = "") -> str:
        """After an applied reply: the checks' results and the code the reply changed (`applied_diff`)."""
        visible = self.visible(results)
        hidden_failed = all(r.passed for r in visible) and not accepted
        files = opening.changed_files(self.workspace.root, applied.changed_files, applied_diff, self.partial)

        def render(checks: list[dict[str, Any]], shown: list[feedback.ShownFile]) -> str:
            return feedback.render("feedback.j2", applied=True, changed_files=applied.changed_files, failures="",
                                   checks=checks, files=shown, hidden_failed=hidden_failed and not tampered,
                                   tampered=sorted(set(tampered)))

        # the first prompt's cap holds for this message too (a CPU server reads it at ~25 tokens a second)
        text = followup.fit(render, [feedback.check_view(r) for r in visible], files,
                            rules.first_prompt_tokens(self.model.name))
        self.trajectory.event("feedback", turn=turn, content=text)
        return text

    def undone_message(self, applied: ApplyResult, results: list[CommandResult], *, turn: int,
                       tampered: list[str]) -> str:
        """After an applied reply that is undone (rules.undo_failed): how the checks failed, sent after the
        first prompt, which shows the code as it is again; recorded with `fresh_retry` and `undone`."""

        def render(checks: list[dict[str, Any]], shown: list[feedback.ShownFile]) -> str:
            return feedback.render("undone.j2", changed_files=applied.changed_files, checks=checks,
                                   tampered=sorted(set(tampered)))

        checks = [feedback.check_view(r) for r in self.visible(results)]
        text = followup.fit(render, checks, [], rules.first_prompt_tokens(self.model.name))
        self.trajectory.event("feedback", turn=turn, content=text, fresh_retry=True, undone=applied.changed_files)
        return text

    def visible(self, results: list[CommandResult]) -> list[CommandResult]:
        shown = {c.run for c in self.config.feedback_checks}
        return [r for r in results if r.command in shown]

    @property
    def edit_format(self) -> str:
        return rules.edit_format(self.model.name, self.config.edit_format)

    @property
    def give_up_offered(self) -> bool:
        return rules.give_up_offered(self.model.name)

    @property
    def tools_enabled(self) -> bool:
        return rules.tools_enabled(self.config.tools, self.model.name)

    def strip_examples(self, content: str) -> tuple[str, int]:
        """The reply without the format examples it copied (small models copy them as if they were
        edits), and how many copies there were."""
        copied = 0
        for example in self.examples:
            copied += content.count(example)
            content = content.replace(example, "")
        return content, copied

    def unusable_message(self, result: ApplyResult, *, cut_off: bool, copied: int, turn: int,
                         repeated: tuple[int, str] | None = None, fresh: bool = False) -> str:
        """What to tell the model when its reply held no edit that could be applied; `repeated`: the turn
        and the outcome of an earlier reply this one repeats word for word. `fresh`: sent after the first
        prompt instead of after the reply (rules.fresh_retry), recorded with `fresh_retry`."""
        if result.failures:
            from agentloop.edits import render_failures

            text = feedback.render("feedback.j2", applied=False, failures=render_failures(result),
                                   checks=[], files=[], hidden_failed=False, changed_files=[], tampered=[])
        else:
            problem = ("Your reply was cut off before the edit was complete (it hit the length limit). "
                       "Send shorter edits." if cut_off else
                       "Your reply only repeated the format example, which changes nothing. Write the edit "
                       "that fixes the problem, with the real lines of the file." if copied else
                       "Your reply contained no edit that I could find.")
            path = self.in_play[0] if self.in_play else ""
            example = feedback.format_example(self.edit_format, path, self.workspace.root)
            self.examples.add(example)
            text = feedback.render("format_error.j2", problem=problem, example=example)
        if repeated is not None:
            earlier, what = repeated
            text = feedback.render("repeated.j2", turn=earlier, what=what) + "\n" + text
        self.trajectory.event("feedback", turn=turn, content=text, **({"fresh_retry": True} if fresh else {}))
        return text

    def tool_answers(self, reply: ModelReply, answers: list[ToolAnswer], *, turn: int) -> list[dict[str, Any]]:
        """The messages answering a reply's read-only tool calls (recorded; a file read is in play from now)."""
        for answer in answers:
            self.trajectory.event("tool", turn=turn, name=answer.call.name, arguments=answer.call.arguments,
                                  ok=answer.ok, output=answer.output, call_id=answer.call.id)
            path = answer.call.parsed_arguments().get("path")
            if answer.call.name == "read_file" and answer.ok and isinstance(path, str):
                if path not in self.in_play:
                    self.in_play.append(path)
                opening.read_whole(self.partial, path, answer.output)
        if reply.tool_calls:
            return [a.message() for a in answers]
        # Text-form calls have no ids to answer: reply in plain text.
        text = feedback.render("tool_results.j2", answers=[
            {"name": a.call.name, "arguments": a.call.arguments, "output": a.output} for a in answers])
        return [{"role": "user", "content": text}]
