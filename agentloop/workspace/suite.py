"""A run's checks: set up once (sandbox, environment, held-out files, protected files), then run
round after round, each verdict kept honest (protected files and git config restored around every
check, pytest checks graded against their first report) and recorded in the trajectory.

The turn cycle (agentloop.run.loop) only asks for a round and reads the verdict.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from agentloop.config import Check, Config
from agentloop.edits.paths import is_protected
from agentloop.workspace import environment as workspace_env
from agentloop.workspace import grading, held_out, sandbox
from agentloop.workspace.checks import CommandResult, check_env, run_command, run_suite
from agentloop.workspace.gitguard import GitConfigGuard
from agentloop.workspace.guard import (
    TEST_PATH,
    ProtectedFiles,
    default_protected,
    literals_of,
    protected_patterns,
)
from agentloop.workspace.repo import Workspace, ignored_entries, tree_listing

if TYPE_CHECKING:
    from agentloop.record.trajectory import Trajectory


class CheckSuite:
    """The checks of one run on `workspace` (the user's tree is `user_root`, hidden from checks when
    the run works elsewhere); `started` is when the run's time limit began (time.monotonic())."""

    def __init__(self, config: Config, workspace: Workspace, trajectory: Trajectory, *, user_root: Path | None = None,
                 started: float | None = None, progress: Callable[[str], None] = lambda line: None,
                 status: Callable[[str], None] = lambda text: None,
                 check_output: Callable[[bytes], None] | None = None):
        self.config, self.workspace, self.trajectory = config, workspace, trajectory
        self.user_root = user_root or workspace.root
        self.started = time.monotonic() if started is None else started
        self.progress, self.status, self.check_output = progress, status, check_output  # -v's check output
        self.turn = 0  # the turn the checks run for, as the trajectory records it
        self.env = check_env(config.pass_env)
        self.git_config = GitConfigGuard.for_workspace(workspace)
        self.sandbox = sandbox.Sandbox("off")
        self.held_out = held_out.HeldOut()
        self.environment = workspace_env.Environment(self.user_root, workspace.root, [], workspace.root, False)
        self.protected: ProtectedFiles | None = None
        self.protect: list[str] = list(config.protect)  # + the default harness, set by `set_up`
        self.harness: list[str] = []  # what scan_diff flags edits to (even when test edits are allowed)
        self.literals: frozenset[str] = frozenset()  # literals of the test files at the start
        self.baselines: dict[str, grading.Report] = {}  # each pytest check's report at the start (turn 0)
        self.tampered: list[str] = []  # protected files changed while this round of checks ran
        self.flags: dict[str, int] = {}  # suspicious-edit and tampering flags of the run, by kind
        self.last_results: list[CommandResult] = []
        # Protected files as at the start, as of the last look, and nothing has run or been written
        # since (then the look before the next check, or at the end, is saved). See `touched`.
        self.pristine = False
        # The workspace's files as the last look listed them, while nothing has run, been written or
        # restored since (see `files_now`).
        self._listed: list[str] | None = None

    def flag(self, kind: str) -> None:
        self.flags[kind] = self.flags.get(kind, 0) + 1

    # -- set-up -----------------------------------------------------------------------------------
    def set_up(self, start_tree: str, ignored_now: list[str] | None = None) -> None:
        """Sandbox, environment and held-out files; the protected files as they are in `start_tree`.
        `ignored_now`: the workspace's ignored files, when the caller knows them (a tree it has just
        made holds none); else git lists them."""
        root, commands = self.workspace.root, [c.run for c in self.config.checks]
        listing: list[list[str]] = [] if ignored_now is None else [ignored_now]

        def ignored() -> list[str]:  # the secret files and the protected ones ask; nothing writes in between
            if not listing:
                listing.append(ignored_entries(root))
            return listing[0]

        self.set_up_sandbox(ignored)
        if self.sandbox.note:
            self.progress(self.sandbox.note)
        self.protect = protected_patterns(root, self.config.protect, commands, self.config.allow_test_edits)
        self.harness = default_protected(root, commands)
        self.literals = self.start_literals(start_tree)
        self.protected = ProtectedFiles(root, self.protect, start_tree, ignored)
        self.pristine = True  # taken from the tree as it is now: nothing has run or been written since

    def set_up_sandbox(self, ignored: Callable[[], list[str]] | None = None) -> None:
        """The sandbox, the user's ignored environment and the held-out files of this run (`ignored`:
        the workspace's ignored files now, see secret_files)."""
        from agentloop.workspace.isolation import state_dir

        root, state = self.workspace.root, state_dir(self.workspace.root)
        self.held_out = held_out.load(self.config.accept_files, self.user_root,
                                      [c.run for c in self.config.checks if not c.feedback])
        in_place = self.user_root.resolve() == root.resolve()
        secrets = [] if not in_place else workspace_env.secret_files(
            root, self.config.workspace.get("hide", workspace_env.SECRET_PATTERNS), ignored)
        self.sandbox = sandbox.resolve(self.config.sandbox, root, _git_dirs(self.workspace),
                                       self.trajectory.run_dir.parent, user_root=self.user_root, state_dir=state,
                                       hidden=secrets)
        dirs = workspace_env.detect(self.user_root, self.config.workspace)
        self.environment = workspace_env.Environment(self.user_root, root, dirs, state,
                                                     sandboxed=self.sandbox.mode == "bwrap")
        if self.sandbox.mode == "bwrap" and self.environment.needed:
            self.sandbox = replace(self.sandbox, binds=(*self.sandbox.binds, *self.environment.binds()))
        if self.environment.needed:
            self.trajectory.event("environment", dirs=[{"name": d.name, "build": d.build} for d in dirs])

    def start_literals(self, start_tree: str) -> frozenset[str]:
        """The literals of the test files at the start. Their paths come from `start_tree`, the
        workspace's files as they are now (nothing has run or been written since it was taken; the
        protected files' look reads the same listing), not from another `git ls-files`."""
        texts = []
        for item in tree_listing(self.workspace.root, start_tree).split("\0"):
            path = item.split("\t", 1)[-1]
            if item and TEST_PATH.search(path) and path.endswith(".py"):
                try:
                    texts.append((self.workspace.root / path).read_text(encoding="utf-8", errors="replace"))
                except OSError:
                    continue
        return literals_of(texts)

    # -- rounds -----------------------------------------------------------------------------------
    def run(self) -> list[CommandResult]:
        """One round: feedback checks always; acceptance-only (hidden) checks once the visible ones pass."""
        self.tampered = []

        def run_one(check: Check, number: int, count: int) -> CommandResult:
            self.status(f"running check {number}/{count}: {check.label}")
            return self.run_check(check)

        results = run_suite(self.config.checks, run_one)
        self.status("")
        self.last_results = results
        return results

    def record_first(self, first_results: list[CommandResult]) -> list[CommandResult]:
        """Record checks the caller has just run instead of running a slow suite twice.

        Their side files hold the head and tail the caller kept, not the full output."""
        checks = {c.run: c for c in self.config.checks}
        for result in first_results:
            check = checks[result.command]
            if result.report is not None:  # the caller ran it graded: the tests of the start are known
                self.baselines[check.run] = result.report
            log = self.trajectory.check_log()
            log.feed(result.output.encode("utf-8"))
            log.close()
            self.trajectory.event("check", turn=self.turn, name=check.label, feedback=check.feedback,
                                  accept=check.accept, passed=result.passed, output_file=log.name, **result.to_dict())
        self.last_results = list(first_results)
        return self.last_results

    def accepted(self, results: list[CommandResult]) -> bool:
        if self.tampered:  # a verdict reached while the tests were rewritten does not count
            return False
        by_command = {r.command: r for r in results}
        return all(c.run in by_command and by_command[c.run].passed for c in self.config.acceptance_checks)

    def run_check(self, check: Check) -> CommandResult:
        remaining = self.config.budget.time_limit - (time.monotonic() - self.started)
        timeout = max(1.0, min(check.timeout or self.config.check_timeout, remaining))
        self.keep_pristine(None)
        self.pristine = False  # code runs now
        self._listed = None
        log = self.trajectory.check_log()
        hidden = not check.feedback  # an acceptance-only check: held-out files laid in, its traces swept after
        protected = list(self.protected.readonly_paths() if self.protected and self.sandbox.confines else ())
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
            self.flag("held_out_changed")
            self.trajectory.event("guard", turn=self.turn, kind="held_out_changed", paths=[], unrestored=[],
                                  check=check.label)
        self.trajectory.event("check", turn=self.turn, name=check.label, feedback=check.feedback,
                              accept=check.accept, passed=result.passed, output_file=log.name,
                              sandbox=self.sandbox.mode, **result.to_dict())
        self.tampered += self.keep_pristine(check)
        self.tampered += self.keep_git_config(check)
        return result

    def grade(self, check: Check, graded: grading.Graded, result: CommandResult, log) -> None:
        """Judge a pytest check by its report; the report of its first run is the baseline."""
        report = result.report = graded.read()
        baseline = self.baselines.get(check.run)
        if self.turn == 0 and baseline is None:
            self.baselines[check.run] = report
        why = grading.verdict(report, baseline)
        result.grade = grading.summary(report, why)
        if why and result.exit_code == 0 and not result.timed_out:
            note = grading.grade_note(why)  # the exit code said pass: say why it does not count
            result.output += note
            log.feed(note.encode("utf-8"))

    # -- keeping verdicts honest --------------------------------------------------------------------
    def keep_git_config(self, check: Check) -> list[str]:
        """Undo a change the check made to the repository's git config; its verdict then does not count."""
        changed = self.git_config.restore_changed()
        if changed:
            self._listed = None  # what git ignores may have been changed back
            self.flag("git_config_changed")
            self.trajectory.event("guard", turn=self.turn, kind="git_config_changed", paths=changed,
                                  unrestored=[], check=check.label)
            self.progress(f"git configuration changed by {check.label}: {', '.join(changed)}; restored")
        return changed

    def touched(self, paths: Iterable[str] | None = None, *, was_pristine: bool = False) -> None:
        """Files of the workspace were written: look at the protected ones again before the next check.

        With `paths` (what the model's edits wrote: apply refuses protected paths and links to them)
        and `was_pristine` (the state before the write), the look is needed only if one of them is
        protected. A write that went wrong some other way still meets the look after the check."""
        protected = self.protected
        self._listed = None
        self.pristine = (paths is not None and was_pristine and protected is not None
                         and not any(p in protected.start or is_protected(p, protected.patterns) for p in paths))

    def files_now(self) -> list[str] | None:
        """Workspace.list_files() as it would answer now, when the look after the last check took
        it and nothing has run, been written or restored since (the opening prompt asks right after
        the first checks); else None."""
        return None if self._listed is None else list(self._listed)

    def keep_pristine(self, check: Check | None) -> list[str]:
        """Put protected files back to their start content; report the ones that had changed.

        Called before each check (None) and after it (the check: its run changed them, so its
        verdict cannot count). See agentloop.workspace.guard for why this is done in place. The look
        before a check is skipped when nothing ran or was written since the last one.
        """
        if self.protected is None or not self.protected.patterns or (check is None and self.pristine):
            return []
        files, ignored = self.workspace.files_and_ignored()
        changed = self.protected.changed(files, ignored)
        self.pristine = not changed
        if not changed:
            self._listed = files
            return []
        self._listed = None
        unrestored = self.protected.restore(changed)
        self.pristine = not unrestored
        self.flag("protected_changed")
        self.trajectory.event("guard", turn=self.turn, kind="protected_changed", paths=changed,
                              unrestored=unrestored, check=check.label if check else None)
        self.progress(f"protected files changed{' by ' + check.label if check else ''}: "
                      f"{', '.join(changed[:5])}; restored")
        return changed + unrestored


def _git_dirs(workspace: Workspace) -> list:
    """The git directories checks must not write: the worktree's own and the shared one."""
    from agentloop.workspace.repo import common_dir

    return [workspace.git_dir, common_dir(workspace.root)]
