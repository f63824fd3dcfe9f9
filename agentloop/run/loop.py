"""The driver: ask the model, apply its edits, run the checks, feed back, until accepted or out of budget.

Control flow is by exception (`Stop`); the trajectory records every step as it happens and the
summary is written in a `finally`, whatever ends the run.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentloop.config import Check, Config
from agentloop.edits import ApplyResult, apply_reply
from agentloop.errors import AgentloopError, UsageError
from agentloop.interrupts import SignalGuard
from agentloop.outcome import Outcome
from agentloop.record.trajectory import Trajectory
from agentloop.run import feedback, opening, rules
from agentloop.run.model import Model, ModelCallFailed, ModelReply
from agentloop.run.toolbox import GIVE_UP, Toolbox, load_tool_specs, text_tool_calls
from agentloop.words import plural
from agentloop.workspace import environment as workspace_env
from agentloop.workspace import grading, held_out, sandbox
from agentloop.workspace.checks import CommandResult, cannot_start, check_env, run_command
from agentloop.workspace.gitguard import GitConfigGuard
from agentloop.workspace.guard import (
    TEST_PATH,
    ProtectedFiles,
    default_protected,
    harness_file,
    literals_of,
    protected_patterns,
    scan_diff,
    text_diff,
)
from agentloop.workspace.repo import Workspace
from agentloop.workspace.result import EditedResult

ACCEPTED, BUDGET, GAVE_UP, ERROR, INTERRUPTED = (Outcome.ACCEPTED, Outcome.BUDGET_EXHAUSTED, Outcome.GAVE_UP,
                                                 Outcome.ERROR, Outcome.INTERRUPTED)
GIVE_UP_LINE = "GIVE UP"


class Stop(Exception):
    def __init__(self, outcome: str, reason: str):
        super().__init__(reason)
        self.outcome, self.reason = outcome, reason


@dataclass
class Totals:
    turns: int = 0
    model_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    replies: int = 0  # final replies of a turn (after tool rounds)
    replies_with_edits: int = 0  # ... that held at least one well-formed edit
    replies_applied: int = 0
    unusable_turns: int = 0
    turns_finished: int = 0  # turns in which the model answered (the last turn may have failed before that)
    first_prompt_tokens: int = 0  # the provider's count of the first call's prompt (0: no reply, or not counted)
    first_prompt_estimate: int = 0  # characters / 3.5 of the opening messages (agentloop.run.budget)
    cost_notes: set[str] = field(default_factory=set)


@dataclass
class RunResult:
    outcome: str
    reason: str
    totals: Totals
    duration_s: float
    checks: list[CommandResult]
    diff: str = ""
    exit_code: int | None = None
    workspace: dict[str, Any] = field(default_factory=dict)  # how the result reached the user's tree
    kept_turn: int | None = None  # set when an earlier, better turn was restored at the end
    flags: dict[str, int] = field(default_factory=dict)  # suspicious-edit and tampering flags, by kind
    reward: float | None = None  # as written to the footer (never positive when flagged)


@dataclass
class TurnTree:
    turn: int
    checks_passed: int
    tree: str


class Loop:
    def __init__(self, config: Config, model: Model, workspace: Workspace, task: str,
                 trajectory: Trajectory, progress: Callable[[str], None] = lambda line: None,
                 show_reply: Callable[[str], None] | None = None, *, start_tree: str | None = None,
                 guard: SignalGuard | None = None,
                 on_end: Callable[[str, str | None], dict[str, Any]] | None = None,
                 on_turn: Callable[[int, str], None] | None = None,
                 first_results: list[CommandResult] | None = None, user_root: Path | None = None,
                 started: float | None = None,
                 status: Callable[[str], None] = lambda text: None,
                 check_output: Callable[[bytes], None] | None = None,
                 private_files: frozenset[str] = frozenset(),
                 on_base: Callable[[str], None] | None = None):
        self.config, self.workspace, self.task = config, workspace, task
        self.user_root = user_root or workspace.root  # the user's own tree (hidden from checks when elsewhere)
        self.first_results = first_results  # checks the caller has just run (the pre-commit hook)
        self.start_tree = start_tree  # the tree the run starts from (taken at the start if not given)
        self.guard, self.on_end, self.on_turn, self.on_base = guard, on_end, on_turn, on_base
        self.edited: EditedResult | None = None  # the result: what the model's edits wrote (agentloop.workspace.result)
        self.git_config = GitConfigGuard.for_workspace(workspace.root)
        self.turn_trees: list[TurnTree] = []  # each finished turn's tree, to keep the best at the end
        self.result: RunResult | None = None
        self.model = model  # see agentloop.run.model.Model (and LazyModel: built on first use)
        self.trajectory, self.progress, self.show_reply = trajectory, progress, show_reply
        self.status, self.check_output = status, check_output  # the live status line, -v's check output
        self.turn_model_s = 0.0  # seconds spent waiting on the model this turn
        self.turn_calls = 0  # model calls made this turn (0: the turn never really began)
        self.turn_replies = 0  # ... and answered
        self.turns_reported = 0  # the last turn whose progress line was printed
        self.warmed_up = False  # the model client is loaded (litellm imported)
        self.totals = Totals()
        self.started = time.monotonic() if started is None else started  # the time limit counts from here
        self.env = check_env(config.pass_env)
        self.private_files = private_files  # not tracked, not staged: never shown to the model
        self.toolbox = Toolbox(workspace.root, self.shared_files, private=private_files)
        self.in_play: list[str] = list(config.files)  # files shown to the model so far
        self.partial: dict[str, str] = {}  # files shown only in part -> which part (no whole-file reply to them)
        self.applied_diff = ""  # the diff of the last applied reply (the feedback shows the code it changed)
        self.unusable_in_a_row = 0
        self.examples: set[str] = set()  # format examples shown to the model, verbatim
        self.replies_seen: set[str] = set()
        self.repeat_next = False  # the last reply repeated an earlier one: sample the next one warmer
        self.last_results: list[CommandResult] = []
        self.exit_code: int | None = None  # set when an error dictates its own exit code
        self.sandbox = sandbox.Sandbox("off")
        self.held_out = held_out.HeldOut()
        self.environment = workspace_env.Environment(self.user_root, workspace.root, [], workspace.root, False)
        self.protected: ProtectedFiles | None = None
        self.tampered: list[str] = []  # protected files changed while this round of checks ran
        self.flags: dict[str, int] = {}  # suspicious-edit and tampering flags of the run, by kind
        self.protect: list[str] = list(config.protect)  # + the default harness, set when the run starts
        self.harness: list[str] = []  # what scan_diff flags edits to (even when test edits are allowed)
        self.literals: frozenset[str] = frozenset()  # literals of the test files at the start
        self.baselines: dict[str, grading.Report] = {}  # each pytest check's report at the start (turn 0)

    # -- the loop -----------------------------------------------------------------------------
    def run(self) -> RunResult:
        """The turns, then `finish`; a KeyboardInterrupt (Ctrl-C, SIGTERM) at any moment ends it interrupted."""
        try:
            outcome, reason = self.steps()
        except KeyboardInterrupt:
            outcome, reason = INTERRUPTED, "interrupted by the user"
        return self.finish(outcome, reason)

    def steps(self) -> tuple[str, str]:
        try:
            if self.start_tree is None:
                self.start_tree = self.workspace.snapshot()
            self.edited = EditedResult(self.workspace, self.start_tree, in_place=self.config.in_place,
                                       on_base=self.on_base)
            self.set_up_sandbox()
            if self.sandbox.note:
                self.progress(self.sandbox.note)
            commands = [c.run for c in self.config.checks]
            self.protect = protected_patterns(self.workspace.root, self.config.protect, commands,
                                              self.config.allow_test_edits)
            self.harness = default_protected(self.workspace.root, commands)
            self.literals = self.start_literals()
            self.protected = ProtectedFiles(self.workspace.root, self.protect, self.start_tree)
            if self.config.model and not self.first_results:
                prefetch_litellm()  # while the first checks run: it takes seconds, and they will likely fail
            results = self.record_first_results() if self.first_results else self.run_checks()
            for result in results:  # a typo in a check costs no model turn
                why = cannot_start(result)
                if why:
                    raise UsageError(f"check `{result.command}` cannot start ({why}); fix the command "
                                     "(--check/--accept or .agentloop.yaml) and run again")
            self.turn_trees.append(TurnTree(0, sum(r.passed for r in results), self.start_tree))
            if self.accepted(results):
                raise Stop(ACCEPTED, "the acceptance checks already pass")
            ready = getattr(self.model, "ready", None)
            if ready is not None:  # a failing run needs a model: fail now, before counting a turn, if none is set
                ready()
            messages = self.opening_messages(results)
            while True:
                self.totals.turns += 1
                if self.totals.turns > self.config.budget.max_turns:
                    self.totals.turns -= 1
                    raise Stop(BUDGET, f"max_turns ({self.config.budget.max_turns}) reached")
                self.turn_model_s = 0.0
                self.turn_calls = self.turn_replies = 0
                reply = self.ask(messages)
                applied = self.apply(reply, messages)
                if applied is not None:
                    results = self.run_checks()
                    if self.accepted(results):
                        self.report_turn(applied, results)
                        raise Stop(ACCEPTED, "all acceptance checks pass")
                    messages.append({"role": "user", "content": self.feedback_message(applied, results)})
                self.report_turn(applied, self.last_results)
        except Stop as stop:
            self.report_unfinished_turn()
            return stop.outcome, stop.reason
        except AgentloopError as exc:  # provider failure, or a model needed but not configured
            self.exit_code = exc.exit_code
            self.report_unfinished_turn()
            return ERROR, str(exc)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # a bug of ours: end the run recorded, the traceback in the trajectory
            import traceback

            self.trajectory.event("internal_error", traceback=traceback.format_exc())
            return ERROR, f"internal error: {type(exc).__name__}: {exc}"

    def finish(self, outcome: str, reason: str) -> RunResult:
        """Settle the tree (best turn kept, the workspace's own end) and write the footer. Runs once;
        from here on signals are only noted, so the footer and the user's tree are never left half done."""
        if self.result is not None:
            return self.result
        if self.guard is not None:
            self.guard.settle()
        try:  # interrupted mid-check, protected files may be left as the model's code made them
            self.keep_pristine(None)
        except (OSError, RuntimeError, subprocess.CalledProcessError):
            pass
        extra: dict[str, Any] = {}
        diff, final_tree = "", self.start_tree
        if self.start_tree is not None:
            final_tree = self.edited.settle() if self.edited else self.start_tree
            if outcome != ACCEPTED and self.turn_trees:
                best = max(self.turn_trees, key=lambda t: (t.checks_passed, t.turn))
                as_good = {t.tree for t in self.turn_trees if t.checks_passed == best.checks_passed}
                if final_tree not in as_good:  # later turns passed fewer checks, or never finished
                    # Only the files the model edited since: check outputs stay as the checks left them.
                    self.workspace.put(final_tree, best.tree)
                    final_tree = best.tree
                    extra["kept_turn"] = best.turn
                    self.progress(kept_turn_line(best.turn, best.checks_passed))
            diff = self.workspace.diff(self.edited.base if self.edited else self.start_tree, final_tree)
        if self.on_end is not None:
            extra["workspace"] = self.on_end(outcome, final_tree)
        duration = round(time.monotonic() - self.started, 3)
        flags = dict(sorted(self.flags.items()))
        # A flagged run is never rewarded: it scores as a failure, whatever its outcome.
        reward = self.config.reward.score(outcome == ACCEPTED and not flags, self.totals.unusable_turns)
        self.trajectory.event("outcome", outcome=outcome, reason=reason, duration_s=duration,
                              totals=_plain_totals(self.totals), diff=diff,
                              checks=[r.to_dict() | {"passed": r.passed} for r in self.last_results],
                              reward=reward, flags=flags, **extra)
        self.result = RunResult(outcome, reason, self.totals, duration, self.last_results, diff, self.exit_code,
                                extra.get("workspace") or {}, extra.get("kept_turn"), flags, reward)
        return self.result

    # -- steps ------------------------------------------------------------------------------------
    def ask(self, messages: list[dict[str, Any]]) -> ModelReply:
        """One model reply for this turn, answering read-only tool calls in between."""
        tools = list(load_tool_specs()) if self.tools_enabled else None
        for _ in range(self.config.max_tool_rounds + 1):
            reply = self.call_model(messages, tools)
            messages.append(reply.assistant_message())
            calls = reply.tool_calls or text_tool_calls(reply.content)
            if not calls:
                return reply
            for call in calls:
                if call.name == GIVE_UP:
                    raise Stop(GAVE_UP, f"the model gave up: {call.parsed_arguments().get('reason', '')}".strip())
            answers = [self.toolbox.answer(call) for call in calls]
            for answer in answers:
                self.trajectory.event("tool", turn=self.totals.turns, name=answer.call.name,
                                      arguments=answer.call.arguments, ok=answer.ok, output=answer.output,
                                      call_id=answer.call.id)
                path = answer.call.parsed_arguments().get("path")
                if answer.call.name == "read_file" and answer.ok and isinstance(path, str) and path not in self.in_play:
                    self.in_play.append(path)
                if answer.call.name == "read_file" and answer.ok and isinstance(path, str):
                    opening.read_whole(self.partial, path, answer.output)
            if reply.tool_calls:
                messages.extend(a.message() for a in answers)
            else:  # text-form calls have no ids to answer: reply in plain text
                text = feedback.render("tool_results.j2", answers=[
                    {"name": a.call.name, "arguments": a.call.arguments, "output": a.output} for a in answers])
                messages.append({"role": "user", "content": text})
        raise Stop(GAVE_UP, f"no edit after {self.config.max_tool_rounds} rounds of tool calls")

    def call_model(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> ModelReply:
        self.check_budget()
        model = self.model
        warm_up = getattr(model, "warm_up", None)
        if warm_up is not None and not self.warmed_up:  # importing litellm takes seconds: they count
            self.status("loading the model client (litellm)")
            warm_up()
            self.warmed_up = True
            self.check_budget()
        deadline = self.started + self.config.budget.time_limit  # never wait on the provider past the limit
        self.totals.model_calls += 1
        self.turn_calls += 1
        override: dict[str, Any] = {}
        if self.repeat_next:
            # At temperature 0 a model that repeated itself will repeat itself again: break the loop.
            usual = rules.params(self.config.model, self.config.model_params).get("temperature") or 0.0
            override = {"temperature": max(rules.repeat_temperature(model.name), usual)}
        self.repeat_next = False
        self.status(f"waiting for the model (turn {self.totals.turns})")
        try:
            reply = model.query(messages, tools, deadline=deadline, overrides=override)
        except ModelCallFailed as exc:
            self.trajectory.event("model_call", turn=self.totals.turns, model=model.name,
                                  **self.trajectory.conversation_delta(messages),
                                  error=str(exc), attempts=[vars(a) for a in exc.attempts])
            if time.monotonic() - self.started >= self.config.budget.time_limit - 1:
                # The call was cut short by the run's own time limit: the budget ended the run.
                raise Stop(BUDGET, f"time_limit ({self.config.budget.time_limit}s) reached while waiting "
                                   "for the model") from None
            raise
        finally:
            self.status("")
        t = self.totals
        self.turn_replies += 1
        self.turn_model_s += reply.latency_s
        if self.show_reply and reply.content:
            self.show_reply(reply.content)
        if t.model_calls == 1:
            t.first_prompt_tokens = reply.prompt_tokens
        t.prompt_tokens += reply.prompt_tokens
        t.completion_tokens += reply.completion_tokens
        t.cost_usd += reply.cost_usd
        if reply.cost_note:
            t.cost_notes.add(reply.cost_note)
        self.trajectory.event("model_call", turn=t.turns, model=model.name,
                              **self.trajectory.conversation_delta(messages),
                              tools=[s["function"]["name"] for s in tools or []], reply=reply.to_dict(),
                              **({"params_override": override} if override else {}))
        return reply

    def apply(self, reply: ModelReply, messages: list[dict[str, Any]]) -> ApplyResult | None:
        """Apply the reply's edits; on an unusable reply, say so to the model and return None."""
        self.totals.replies += 1
        said = reply.content.strip()
        self.repeat_next = bool(said) and said in self.replies_seen
        self.replies_seen.add(said)
        if (self.give_up_offered and reply.content.strip().upper().endswith(GIVE_UP_LINE)
                and len(reply.content.strip()) < 200):
            raise Stop(GAVE_UP, "the model gave up")
        content, copied = reply.content, 0
        for example in self.examples:  # small models copy the format example as if it were an edit
            copied += content.count(example)
            content = content.replace(example, "")
        self.status("applying edits")
        self.expect_edit(content)
        result = apply_reply(self.workspace.root, content, protect=self.protect, known_files=self.in_play,
                             partial=self.partial)
        self.status("")
        if copied:
            result.notes.append(f"{copied} copy(ies) of the format example ignored")
        suspicious: list[dict[str, Any]] = []
        applied_diff = ""
        if self.edited is not None:
            if result.applied:
                before = self.edited.record(result.changed_files)
                applied_diff = self.workspace.diff(before, self.edited.tree)
                self.applied_diff = applied_diff
                suspicious = scan_diff(text_diff(self.workspace.root, before, self.edited.tree), self.harness,
                                       self.literals)
            self.edited.pending = []
        seen = {f["path"] for f in suspicious}
        for path in result.changed_files if result.applied else []:  # written, yet hidden from git's view
            if path not in seen and harness_file(path, self.harness):
                suspicious.append({"kind": "harness_edit", "path": path, "line": "(not in the diff: ignored by git)"})
        for flag in suspicious:
            self.flags[flag["kind"]] = self.flags.get(flag["kind"], 0) + 1
        # `diff`: what the edits did to the files, with real line numbers (for `agentloop show`).
        self.trajectory.event("edits", turn=self.totals.turns, **result.to_dict(), suspicious=suspicious,
                              **({"diff": applied_diff} if applied_diff else {}))
        if result.edits and not any(f.reason == "malformed" for f in result.failures):
            self.totals.replies_with_edits += 1
        if result.applied:
            self.totals.replies_applied += 1
            self.unusable_in_a_row = 0
            for path in result.changed_files:
                if path not in self.in_play:
                    self.in_play.append(path)
            return result
        self.totals.unusable_turns += 1
        self.unusable_in_a_row += 1
        if self.unusable_in_a_row >= self.config.max_format_errors:
            raise Stop(GAVE_UP, f"{self.unusable_in_a_row} replies in a row had no edit that could be applied")
        if result.failures:
            from agentloop.edits import render_failures

            text = feedback.render("feedback.j2", applied=False, failures=render_failures(result),
                                   checks=[], files=[], hidden_failed=False, changed_files=[], tampered=[])
        else:
            problem = ("Your reply was cut off before the edit was complete (it hit the length limit). "
                       "Send shorter edits." if reply.finish_reason == "length" else
                       "Your reply only repeated the format example, which changes nothing. Write the edit "
                       "that fixes the problem, with the real lines of the file." if copied else
                       "Your reply contained no edit that I could find.")
            path = self.in_play[0] if self.in_play else ""
            example = feedback.format_example(self.edit_format, path, self.workspace.root)
            self.examples.add(example)
            text = feedback.render("format_error.j2", problem=problem, example=example)
        messages.append({"role": "user", "content": text})
        self.trajectory.event("feedback", turn=self.totals.turns, content=text)
        return None

    def expect_edit(self, content: str) -> None:
        """Before a reply is written, tell the result which paths it will touch (see agentloop.workspace.result)."""
        if self.edited is None:
            return
        dry = apply_reply(self.workspace.root, content, protect=self.protect, known_files=self.in_play,
                          dry_run=True, partial=self.partial)
        unseen = self.edited.expect(dry.changed_files) if dry.applied else []
        if unseen:  # their prior content belongs to every tree recorded so far (a kept turn restores it)
            for turn in self.turn_trees:
                turn.tree = self.workspace.tree_with(turn.tree, unseen)

    def run_checks(self) -> list[CommandResult]:
        """Feedback checks always; acceptance-only (hidden) checks once the visible ones pass."""
        results: list[CommandResult] = []
        self.tampered = []
        visible_ok = True
        ordered = sorted(self.config.checks, key=lambda c: not c.feedback)
        for number, check in enumerate(ordered, 1):
            if not check.feedback and not visible_ok:
                continue  # cannot be accepted this turn anyway: save the time
            self.status(f"running check {number}/{len(ordered)}: {check.label}")
            result = self.run_check(check)
            results.append(result)
            if check.feedback and check.accept and not result.passed:
                visible_ok = False
        self.status("")
        self.last_results = results
        return results

    def record_first_results(self) -> list[CommandResult]:
        """Record checks the caller has just run instead of running a slow suite twice.

        Their side files hold the head and tail the caller kept, not the full output."""
        checks = {c.run: c for c in self.config.checks}
        for result in self.first_results or []:
            check = checks[result.command]
            if result.report is not None:  # the caller ran it graded: the tests of the start are known
                self.baselines[check.run] = result.report
            log = self.trajectory.check_log()
            log.feed(result.output.encode("utf-8"))
            log.close()
            self.trajectory.event("check", turn=self.totals.turns, name=check.label, feedback=check.feedback,
                                  accept=check.accept, passed=result.passed, output_file=log.name, **result.to_dict())
        self.last_results = list(self.first_results or [])
        return self.last_results

    def set_up_sandbox(self) -> None:
        """The sandbox, the user's ignored environment and the held-out files of this run."""
        from agentloop.workspace.isolation import state_dir

        root, state = self.workspace.root, state_dir(self.workspace.root)
        self.held_out = held_out.load(self.config.accept_files, self.user_root,
                                      [c.run for c in self.config.checks if not c.feedback])
        in_place = self.user_root.resolve() == root.resolve()
        secrets = [] if not in_place else workspace_env.secret_files(
            root, self.config.workspace.get("hide", workspace_env.SECRET_PATTERNS))
        self.sandbox = sandbox.resolve(self.config.sandbox, root, _git_dirs(self.workspace),
                                       self.trajectory.run_dir.parent, user_root=self.user_root, state_dir=state,
                                       hidden=secrets)
        dirs = workspace_env.detect(self.user_root, self.config.workspace)
        self.environment = workspace_env.Environment(self.user_root, root, dirs, state,
                                                     sandboxed=self.sandbox.mode == "bwrap")
        if self.sandbox.mode == "bwrap" and self.environment.needed:
            from dataclasses import replace

            self.sandbox = replace(self.sandbox, binds=(*self.sandbox.binds, *self.environment.binds()))
        if self.environment.needed:
            self.trajectory.event("environment", dirs=[{"name": d.name, "build": d.build} for d in dirs])

    def run_check(self, check: Check) -> CommandResult:
        remaining = self.config.budget.time_limit - (time.monotonic() - self.started)
        timeout = max(1.0, min(check.timeout or self.config.check_timeout, remaining))
        self.keep_pristine(None)
        log = self.trajectory.check_log()
        hidden = not check.feedback  # an acceptance-only check: held-out files laid in, its traces swept after
        protected = list(self.protected.readonly_paths() if self.protected else ())
        env, changed_held_out = self.env, []
        skip = [d.name for d in self.environment.dirs]
        before = held_out.listing(self.workspace.root, skip) if hidden else set()
        sink = log.feed
        if self.check_output is not None:
            shown = self.check_output

            def sink(data: bytes) -> None:
                log.feed(data)
                shown(data)
        graded = None
        self.git_config.remember()
        try:
            with contextlib.ExitStack() as stack:
                stack.enter_context(self.environment.present())
                if hidden:
                    stack.enter_context(self.held_out.laid_in(self.workspace.root, changed_held_out))
                    env = held_out.hidden_check_env(env)
                    protected += self.held_out.dest_paths(self.workspace.root)
                graded = grading.prepare(check.run, check.kind, env)
                wrapper = self.sandbox.wrapper(protected,
                                               binds=self.held_out.acceptance_binds() if hidden else (),
                                               hide=() if hidden else self.held_out.hide_paths(),
                                               writable=[graded.folder] if graded else ())
                result = run_command(graded.command if graded else check.run, self.workspace.root, timeout=timeout,
                                     output_cap=self.config.output_cap, env=graded.env if graded else env,
                                     output_sink=sink, wrapper=wrapper)
                result.command = check.run
                if graded is not None:
                    self.grade(check, graded, result, log)
        finally:
            log.close()
            if graded is not None:
                graded.discard()  # interrupted mid-check: no report folder left behind in /tmp
            if hidden:
                held_out.remove_new(self.workspace.root, before, skip,
                                    only_ignored=self.workspace.root == self.user_root.resolve())
        if self.sandbox.mount_at is not None:  # paths in the output as the model knows them
            result.output = result.output.replace(str(self.sandbox.mount_at), str(self.workspace.root))
        if changed_held_out:  # only possible without the sandbox: the verdict cannot count
            result.exit_code = result.exit_code or 1
            self.flags["held_out_changed"] = self.flags.get("held_out_changed", 0) + 1
            self.trajectory.event("guard", turn=self.totals.turns, kind="held_out_changed", paths=[], unrestored=[],
                                  check=check.label)
        self.trajectory.event("check", turn=self.totals.turns, name=check.label, feedback=check.feedback,
                              accept=check.accept, passed=result.passed, output_file=log.name,
                              sandbox=self.sandbox.mode, **result.to_dict())
        self.tampered += self.keep_pristine(check)
        self.tampered += self.keep_git_config(check)
        return result

    def grade(self, check: Check, graded: grading.Graded, result: CommandResult, log) -> None:
        """Judge a pytest check by its report; the report of its first run is the baseline."""
        report = result.report = graded.read()
        baseline = self.baselines.get(check.run)
        if self.totals.turns == 0 and baseline is None:
            self.baselines[check.run] = report
        why = grading.verdict(report, baseline)
        result.grade = grading.summary(report, why)
        if why and result.exit_code == 0 and not result.timed_out:
            note = grading.grade_note(why)  # the exit code said pass: say why it does not count
            result.output += note
            log.feed(note.encode("utf-8"))

    def start_literals(self) -> frozenset[str]:
        texts = []
        for path in self.workspace.list_files():
            if TEST_PATH.search(path) and path.endswith(".py"):
                try:
                    texts.append((self.workspace.root / path).read_text(encoding="utf-8", errors="replace"))
                except OSError:
                    continue
        return literals_of(texts)

    def keep_git_config(self, check: Check) -> list[str]:
        """Undo a change the check made to the repository's git config; its verdict then does not count."""
        changed = self.git_config.restore_changed()
        if changed:
            self.flags["git_config_changed"] = self.flags.get("git_config_changed", 0) + 1
            self.trajectory.event("guard", turn=self.totals.turns, kind="git_config_changed", paths=changed,
                                  unrestored=[], check=check.label)
            self.progress(f"git configuration changed by {check.label}: {', '.join(changed)}; restored")
        return changed

    def keep_pristine(self, check: Check | None) -> list[str]:
        """Put protected files back to their start content; report the ones that had changed.

        Called before each check (None) and after it (the check: its run changed them, so its
        verdict cannot count). See agentloop.workspace.guard for why this is done in place.
        """
        if self.protected is None or not self.protected.patterns:
            return []
        changed = self.protected.changed(self.workspace.list_files())
        if not changed:
            return []
        unrestored = self.protected.restore(changed)
        self.flags["protected_changed"] = self.flags.get("protected_changed", 0) + 1
        self.trajectory.event("guard", turn=self.totals.turns, kind="protected_changed", paths=changed,
                              unrestored=unrestored, check=check.label if check else None)
        self.progress(f"protected files changed{' by ' + check.label if check else ''}: "
                      f"{', '.join(changed[:5])}; restored")
        return changed + unrestored

    def accepted(self, results: list[CommandResult]) -> bool:
        if self.tampered:  # a verdict reached while the tests were rewritten does not count
            return False
        by_command = {r.command: r for r in results}
        return all(c.run in by_command and by_command[c.run].passed for c in self.config.acceptance_checks)

    # -- messages ---------------------------------------------------------------------------------
    def shared_files(self) -> list[str]:
        """The repository's files the model may know of: all but the private ones."""
        return [f for f in self.workspace.list_files() if f not in self.private_files]

    def opening_messages(self, results: list[CommandResult]) -> list[dict[str, Any]]:
        root = self.workspace.root

        def system(example_path: str) -> str:  # the format example quotes a real file of the code under test
            return feedback.render("system.j2", tools=self.tools_enabled, edit_format=self.edit_format,
                                   give_up=self.give_up_offered, **feedback.example_values(example_path, root))

        first = opening.build(root, self.task, self.visible(results), self.shared_files(), self.config.files,
                              system, rules.first_prompt_tokens(self.model.name))
        self.examples.add(feedback.format_example(self.edit_format, first.example_path, root))
        self.in_play += [p for p in first.files if p not in self.in_play]
        self.partial = dict(first.partial)
        self.totals.first_prompt_estimate = first.estimated_tokens
        self.trajectory.event("prompt", system=first.system, user=first.user, edit_format=self.edit_format,
                              files_in_play=list(self.in_play), estimated_tokens=first.estimated_tokens,
                              shown=first.shown, left_out=first.left_out, partial=first.partial)
        return [{"role": "system", "content": first.system}, {"role": "user", "content": first.user}]

    def feedback_message(self, applied: ApplyResult, results: list[CommandResult]) -> str:
        visible = self.visible(results)
        hidden_failed = all(r.passed for r in visible) and not self.accepted(results)
        files = opening.changed_files(self.workspace.root, applied.changed_files, self.applied_diff, self.partial)
        text = feedback.render("feedback.j2", applied=True, changed_files=applied.changed_files, failures="",
                               checks=[feedback.check_view(r) for r in visible], files=files,
                               hidden_failed=hidden_failed and not self.tampered,
                               tampered=sorted(set(self.tampered)))
        self.trajectory.event("feedback", turn=self.totals.turns, content=text)
        return text

    def visible(self, results: list[CommandResult]) -> list[CommandResult]:
        shown = {c.run for c in self.config.feedback_checks}
        return [r for r in results if r.command in shown]

    # -- budget, model, progress ---------------------------------------------------------------------
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

    @property
    def edit_format(self) -> str:
        return rules.edit_format(self.model.name, self.config.edit_format)

    @property
    def give_up_offered(self) -> bool:
        return rules.give_up_offered(self.model.name)

    @property
    def tools_enabled(self) -> bool:
        return rules.tools_enabled(self.config.tools, self.model.name)

    def report_unfinished_turn(self) -> None:
        """A turn cut short (the model gave up, an error, the budget) still gets its progress line; one
        that ended before its first model call never began, so it is not counted."""
        t = self.totals
        if t.turns <= self.turns_reported:
            return
        if self.turn_calls == 0:
            t.turns = self.turns_reported
            return
        if self.turn_replies:
            t.turns_finished = t.turns
        what = "stopped after the reply" if self.turn_replies else "stopped: no reply from the model"
        self.progress(f"turn {t.turns}: model {self.turn_model_s:.1f}s, {t.prompt_tokens + t.completion_tokens} "
                      f"tokens, ${t.cost_usd:.4f}, {what}")  # the outcome line that follows says why

    def report_turn(self, applied: ApplyResult | None, results: list[CommandResult]) -> None:
        t = self.totals
        t.turns_finished = self.turns_reported = t.turns
        passed = sum(r.passed for r in results)
        edits = f"{plural(len(applied.edits), 'edit')} applied" if applied else "no edit applied"
        line = (f"turn {t.turns}: model {self.turn_model_s:.1f}s, "
                f"{t.prompt_tokens + t.completion_tokens} tokens, ${t.cost_usd:.4f}, {edits}, "
                f"checks {passed} passed, {len(results) - passed} failed")
        snapshot = self.edited.tree if self.edited else self.workspace.snapshot()
        self.turn_trees.append(TurnTree(t.turns, passed, snapshot))
        if self.on_turn is not None:
            self.on_turn(t.turns, snapshot)
        self.trajectory.event("turn", turn=t.turns, applied=bool(applied), checks_passed=passed,
                              checks_total=len(results), totals=_plain_totals(t), snapshot=snapshot)
        self.progress(line)


def _git_dirs(workspace: Workspace) -> list:
    """The git directories checks must not write: the worktree's own and the shared one."""
    from agentloop.workspace.repo import common_dir

    return [workspace.git_dir, common_dir(workspace.root)]


def prefetch_litellm() -> None:
    """Import litellm in a background thread; the first model call then finds it loaded."""
    import threading

    def load() -> None:
        try:
            from agentloop.run.model import import_litellm

            import_litellm()
        except Exception:  # noqa: BLE001 - the model call will import it again and report the error
            pass

    threading.Thread(target=load, name="agentloop-prefetch", daemon=True).start()


def kept_turn_line(turn: int, passed: int) -> str:
    """Why the result is an earlier tree than the last one, in words."""
    if turn == 0:
        return (f"no turn passed more checks than the code it started from ({passed} passed): "
                "the model's edits are set aside, the result is the starting code")
    return (f"kept the code of turn {turn}, which passed {plural(passed, 'check')}: "
            "later turns passed fewer or were cut short")


def _plain_totals(t: Totals) -> dict[str, Any]:
    data = dict(vars(t))
    data["cost_notes"] = sorted(t.cost_notes)
    data["cost_usd"] = round(t.cost_usd, 6)
    return data
