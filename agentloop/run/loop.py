"""The turn cycle: ask the model, apply its edits, run the checks, feed back, until accepted or out of budget.

`Loop` gets a model, a workspace and its checks (agentloop.workspace.suite) and returns how the turns
ended; its totals and turn records stay on it. Set-up (sandbox, protected files, first checks) is
agentloop.run.start's, the end of a run (best turn, write-back, footer) agentloop.run.settle's.
Control flow is by exception (`Stop`).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

from agentloop.config import Config
from agentloop.edits import ApplyResult, apply_reply
from agentloop.errors import AgentloopError
from agentloop.outcome import Outcome
from agentloop.record.trajectory import Trajectory
from agentloop.run import rules
from agentloop.run.model import Model, ModelCallFailed, ModelReply
from agentloop.run.prompt import Prompt
from agentloop.run.toolbox import GIVE_UP, Toolbox, load_tool_specs, text_tool_calls
from agentloop.run.turns import Ending, Stop, Totals, TurnTree, ending_of
from agentloop.words import plural
from agentloop.workspace.checks import CommandResult
from agentloop.workspace.guard import suspicious_edits
from agentloop.workspace.repo import Workspace
from agentloop.workspace.result import EditedResult
from agentloop.workspace.suite import CheckSuite

ACCEPTED, BUDGET, GAVE_UP = Outcome.ACCEPTED, Outcome.BUDGET_EXHAUSTED, Outcome.GAVE_UP
GIVE_UP_LINE = "GIVE UP"


class Loop:
    """The turns of one run on `workspace`; `edited` records what the edits wrote (made here if not given)."""

    def __init__(self, config: Config, model: Model, workspace: Workspace, checks: CheckSuite, task: str,
                 trajectory: Trajectory, *, start_tree: str, edited: EditedResult | None = None,
                 private_files: frozenset[str] = frozenset(), progress: Callable[[str], None] = lambda line: None,
                 status: Callable[[str], None] = lambda text: None, show_reply: Callable[[str], None] | None = None,
                 on_turn: Callable[[int, str], None] | None = None):
        self.config, self.model, self.workspace, self.checks = config, model, workspace, checks
        self.trajectory = trajectory
        self.start_tree, self.started = start_tree, checks.started  # the time limit counts from there
        self.edited = edited or EditedResult(workspace, start_tree, in_place=config.in_place)
        self.progress, self.status, self.show_reply, self.on_turn = progress, status, show_reply, on_turn
        self.prompt = Prompt(config, model, workspace, task, trajectory, private_files)
        self.toolbox = Toolbox(workspace.root, self.prompt.shared_files, private=private_files)
        self.totals = Totals()
        self.turn_trees: list[TurnTree] = []  # each finished turn's tree, to keep the best at the end
        self.turn_model_s, self.turn_calls, self.turn_replies = 0.0, 0, 0  # this turn's model time, calls, replies
        self.turns_reported = 0  # the last turn whose progress line was printed
        self.warmed_up = False  # the model client is loaded (litellm imported)
        self.unusable_in_a_row = 0
        self.replies_seen: dict[str, tuple[int, str]] = {}  # reply -> (its turn, what it did), for repeats
        self.repeat_next = False  # the last reply repeated an earlier one: sample the next one warmer
        self.warm_call = False  # the last reply was sampled warmer, after a repeat
        self.applied_diff = ""  # the diff of the last applied reply (the feedback shows the code it changed)
        self.last_reply = ""
        self.opening: list[dict[str, Any]] = []  # the first request's messages (see rules.fresh_retry)
        self.fresh_retry = rules.fresh_retry(model.name)
        self.undo_failed = rules.undo_failed(model.name)
        # a seed the user set is theirs to keep; otherwise each request may draw its own (rules.fresh_seed)
        self.fresh_seed = rules.fresh_seed(model.name) and "seed" not in rules.params(model.name, config.model_params)
        self.at_start = True  # the files are as the first prompt showed them (no edit, or every edit undone)

    def run(self, results: list[CommandResult]) -> Ending:
        """The turns, from the first checks' `results`. A KeyboardInterrupt goes to the caller."""
        try:
            self.turn_trees.append(TurnTree(0, sum(r.passed for r in results), self.start_tree))
            if self.checks.accepted(results):
                raise Stop(ACCEPTED, "the acceptance checks already pass")
            ready = getattr(self.model, "ready", None)
            if ready is not None:  # a failing run needs a model: fail now, before counting a turn, if none is set
                ready()
            messages = self.prompt.opening_messages(results, self.checks.files_now())
            self.opening = list(messages)
            self.totals.first_prompt_estimate = self.prompt.first_prompt_estimate
            while True:
                self.turn(messages)
        except (Stop, AgentloopError) as exc:
            self.report_unfinished_turn()
            return ending_of(exc, self.trajectory)
        except Exception as exc:  # noqa: BLE001 - recorded with its traceback
            return ending_of(exc, self.trajectory)

    def turn(self, messages: list[dict[str, Any]]) -> None:
        t = self.totals
        if t.turns >= self.config.budget.max_turns:
            raise Stop(BUDGET, f"max_turns ({self.config.budget.max_turns}) reached")
        t.turns = self.checks.turn = t.turns + 1
        self.turn_model_s, self.turn_calls, self.turn_replies = 0.0, 0, 0
        from_start = self.at_start
        applied = self.apply(self.ask(messages), messages)
        if applied is not None:
            results = self.checks.run()
            if self.checks.accepted(results):
                self.report_turn(applied, results)
                raise Stop(ACCEPTED, "all acceptance checks pass")
            failed = sum(not r.passed for r in results)
            self.outcome_of_reply(f"was applied, and then {plural(failed, 'check')} still failed")
            if self.undo_failed and from_start and len(results) - failed <= self.turn_trees[0].checks_passed:
                # A small model rarely mends a wrong fix; a fresh sample of the first prompt may get it right.
                told = self.prompt.undone_message(applied, results, turn=t.turns, tampered=self.checks.tampered)
                self.report_turn(applied, results)
                self.undo()
                messages[:] = [*self.opening, {"role": "user", "content": told}]
                return
            messages.append({"role": "user", "content": self.prompt.feedback_message(
                applied, results, turn=t.turns, accepted=False, tampered=self.checks.tampered,
                applied_diff=self.applied_diff)})
        self.report_turn(applied, self.checks.last_results)

    def undo(self) -> None:
        """Put the files the edits changed back as they were at the start (rules.undo_failed). An
        interrupt in between leaves the result as the disk has it (`pending`), as for an edit."""
        edited = self.edited
        paths = [c.path for c in self.workspace.changes(edited.base, edited.tree)]
        was_pristine = self.checks.pristine
        self.checks.touched()
        edited.pending = paths
        self.workspace.put(edited.tree, edited.base)
        edited.tree, edited.pending = edited.base, []
        self.checks.touched(paths, was_pristine=was_pristine)
        self.at_start = True

    def ask(self, messages: list[dict[str, Any]]) -> ModelReply:
        """One model reply for this turn, answering read-only tool calls in between."""
        tools = list(load_tool_specs()) if self.prompt.tools_enabled else None
        for _ in range(self.config.max_tool_rounds + 1):
            reply = self.call_model(messages, tools)
            messages.append(reply.assistant_message())
            calls = reply.tool_calls or text_tool_calls(reply.content)
            if not calls:
                return reply
            for call in calls:
                if call.name == GIVE_UP:
                    raise Stop(GAVE_UP, f"the model gave up: {call.parsed_arguments().get('reason', '')}".strip())
            messages.extend(self.prompt.tool_answers(reply, [self.toolbox.answer(call) for call in calls],
                                                     turn=self.totals.turns))
        raise Stop(GAVE_UP, f"no edit after {self.config.max_tool_rounds} rounds of tool calls")

    def call_model(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> ModelReply:
        self.check_budget()
        model, t = self.model, self.totals
        warm_up = getattr(model, "warm_up", None)
        if warm_up is not None and not self.warmed_up:  # importing litellm takes seconds: they count
            self.status("loading the model client (litellm)")
            warm_up()
            self.warmed_up = True
            self.check_budget()
        deadline = self.started + self.config.budget.time_limit  # never wait on the provider past the limit
        t.model_calls += 1
        self.turn_calls += 1
        override: dict[str, Any] = {}
        if self.repeat_next:
            # At temperature 0 a model that repeated itself will repeat itself again: break the loop.
            usual = rules.params(self.config.model, self.config.model_params).get("temperature") or 0.0
            override = {"temperature": max(rules.repeat_temperature(model.name), usual)}
        self.repeat_next = False
        self.warm_call = bool(override)
        if self.fresh_seed:
            override["seed"] = random.randrange(2**31)
        self.status(f"waiting for the model (turn {t.turns})")
        try:
            reply = model.query(messages, tools, deadline=deadline, overrides=override)
        except ModelCallFailed as exc:
            self.trajectory.event("model_call", turn=t.turns, model=model.name,
                                  **self.trajectory.conversation_delta(messages),
                                  error=str(exc), attempts=[vars(a) for a in exc.attempts])
            if time.monotonic() - self.started >= self.config.budget.time_limit - 1:
                # The call was cut short by the run's own time limit: the budget ended the run.
                raise Stop(BUDGET, f"time_limit ({self.config.budget.time_limit}s) reached while waiting "
                                   "for the model") from None
            raise
        finally:
            self.status("")
        self.turn_replies += 1
        self.turn_model_s += reply.latency_s
        if self.show_reply and reply.content:
            self.show_reply(reply.content)
        t.add(reply)
        self.trajectory.event("model_call", turn=t.turns, model=model.name,
                              **self.trajectory.conversation_delta(messages),
                              tools=[s["function"]["name"] for s in tools or []], reply=reply.to_dict(),
                              **({"params_override": override} if override else {}))
        return reply

    def apply(self, reply: ModelReply, messages: list[dict[str, Any]]) -> ApplyResult | None:
        """Apply the reply's edits; on an unusable reply, say so to the model and return None."""
        t, said = self.totals, reply.content.strip()
        t.replies += 1
        earlier = self.replies_seen.get(said) if said else None
        if earlier is not None and self.warm_call and not self.fresh_retry:
            # sampled warmer after a repeat and repeated again: more turns would only wait for the same reply
            raise Stop(GAVE_UP, f"the model sent its reply of turn {earlier[0]} again, word for word, even at a "
                                "higher temperature")
        self.repeat_next = earlier is not None
        self.replies_seen.setdefault(said, (t.turns, ""))
        self.last_reply = said
        if self.prompt.give_up_offered and said.upper().endswith(GIVE_UP_LINE) and len(said) < 200:
            raise Stop(GAVE_UP, "the model gave up")
        content, copied = self.prompt.strip_examples(reply.content)
        self.status("applying edits")
        self.expect_edit(content)
        was_pristine = self.checks.pristine
        self.checks.touched()  # until apply returns: an interrupted write leaves the look to the next check
        result = apply_reply(self.workspace.root, content, protect=self.checks.protect, known_files=self.prompt.in_play,
                             partial=self.prompt.partial, repo_files=self.prompt.shared_files)
        self.checks.touched(result.changed_files, was_pristine=was_pristine)
        self.status("")
        if copied:
            result.notes.append(f"{copied} copy(ies) of the format example ignored")
        suspicious, applied_diff = [], ""
        if result.applied:
            before = self.edited.record(result.changed_files)
            applied_diff = self.applied_diff = self.workspace.diff(before, self.edited.tree)
            suspicious = suspicious_edits(self.workspace.root, before, self.edited.tree, result.changed_files,
                                          self.checks.harness, self.checks.literals, diff=applied_diff)
        self.edited.pending = []
        for flag in suspicious:
            self.checks.flag(flag["kind"])
        # `diff`: what the edits did to the files, with real line numbers (for `agentloop show`).
        self.trajectory.event("edits", turn=t.turns, **result.to_dict(), suspicious=suspicious,
                              **({"diff": applied_diff} if applied_diff else {}))
        if result.edits and not any(f.reason == "malformed" for f in result.failures):
            t.replies_with_edits += 1
        if result.applied:
            t.replies_applied += 1
            self.unusable_in_a_row, self.at_start = 0, False
            self.prompt.in_play.extend(p for p in dict.fromkeys(result.changed_files) if p not in self.prompt.in_play)
            return result
        t.unusable_turns += 1
        # A well-formed edit that only restates the code (the function sent back unchanged) is a wrong answer,
        # not a format error: like an applied edit whose checks fail, it leaves the turn budget to end the run.
        if not (result.failures and all(f.reason == "already_applied" for f in result.failures)):
            self.unusable_in_a_row += 1
        if self.unusable_in_a_row >= self.config.max_format_errors:
            raise Stop(GAVE_UP, f"{self.unusable_in_a_row} replies in a row had no edit that could be applied")
        refused = next((f.message for f in result.failures), "")
        self.outcome_of_reply(f"was refused ({refused})" if refused else "held no edit that could be applied")
        fresh = self.fresh_retry and self.at_start  # the first prompt still shows the code as it is
        repeated = None if earlier is None or fresh else (earlier[0], self.replies_seen[said][1])
        told = {"role": "user", "content": self.prompt.unusable_message(
            result, cut_off=reply.finish_reason == "length", copied=copied, turn=t.turns, fresh=fresh,
            repeated=repeated)}
        # A small model shown its own refused reply sends it again: it gets the first prompt and why that
        # reply was refused, not the reply itself.
        messages[:] = [*self.opening, told] if fresh else [*messages, told]
        return None

    def outcome_of_reply(self, what: str) -> None:
        """Note what the last reply did, the first time it was sent (a repeat is told what it did then)."""
        turn, known = self.replies_seen.get(self.last_reply, (self.totals.turns, ""))
        if self.last_reply and not known:
            self.replies_seen[self.last_reply] = (turn, what)

    def expect_edit(self, content: str) -> None:
        """Before a reply is written, tell the result which paths it will touch (see agentloop.workspace.result)."""
        dry = apply_reply(self.workspace.root, content, protect=self.checks.protect, known_files=self.prompt.in_play,
                          dry_run=True, partial=self.prompt.partial)
        unseen = self.edited.expect(dry.changed_files) if dry.applied else []
        if unseen:  # their prior content belongs to every tree recorded so far (a kept turn restores it)
            for turn in self.turn_trees:
                turn.tree = self.workspace.tree_with(turn.tree, unseen)

    def check_budget(self) -> None:
        b, t = self.config.budget, self.totals
        if t.model_calls >= b.max_model_calls:
            raise Stop(BUDGET, f"max_model_calls ({b.max_model_calls}) reached")
        if t.prompt_tokens + t.completion_tokens >= b.max_tokens:
            raise Stop(BUDGET, f"max_tokens ({b.max_tokens}) reached")
        if t.cost_usd >= b.max_cost:
            raise Stop(BUDGET, f"max_cost (${b.max_cost}) reached")
        if time.monotonic() - self.started >= b.time_limit:
            raise Stop(BUDGET, f"time_limit ({b.time_limit}s) reached")

    def report_unfinished_turn(self) -> None:
        """A turn cut short (the model gave up, an error, the budget) still gets its progress line; one
        that ended before its first model call never began, so it is not counted."""
        t = self.totals
        if t.turns <= self.turns_reported:
            return
        if self.turn_calls == 0:
            t.turns = self.checks.turn = self.turns_reported
            return
        if self.turn_replies:
            t.turns_finished = t.turns
        what = "stopped after the reply" if self.turn_replies else "stopped: no reply from the model"
        self.progress(t.line(self.turn_model_s, what))  # the outcome line that follows says why

    def report_turn(self, applied: ApplyResult | None, results: list[CommandResult]) -> None:
        t = self.totals
        t.turns_finished = self.turns_reported = t.turns
        passed = sum(r.passed for r in results)
        edits = f"{plural(len(applied.edits), 'edit')} applied" if applied else "no edit applied"
        self.turn_trees.append(TurnTree(t.turns, passed, self.edited.tree))
        if self.on_turn is not None:
            self.on_turn(t.turns, self.edited.tree)
        self.trajectory.event("turn", turn=t.turns, applied=bool(applied), checks_passed=passed,
                              checks_total=len(results), totals=t.plain(), snapshot=self.edited.tree)
        self.progress(t.line(self.turn_model_s, f"{edits}, checks {passed} passed, {len(results) - passed} failed"))
