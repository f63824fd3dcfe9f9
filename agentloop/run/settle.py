"""The end of a run, written in one place whatever ended it: the tree settled (the best turn kept,
the result written back or the start restored), then the trajectory's footer.

Called once, with signals only noted (agentloop.interrupts.SignalGuard), so that the footer and the
user's tree are never left half done.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agentloop.config import Config
from agentloop.interrupts import SignalGuard
from agentloop.outcome import Outcome
from agentloop.record.trajectory import Trajectory
from agentloop.run.loop import Loop
from agentloop.run.turns import Ending, Totals
from agentloop.words import plural
from agentloop.workspace.checks import CommandResult


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


def settle(config: Config, trajectory: Trajectory, ending: Ending, loop: Loop | None, *, started: float,
           on_end: Callable[[str, str | None], dict[str, Any]] | None = None,
           progress: Callable[[str], None] = lambda line: None, guard: SignalGuard | None = None) -> RunResult:
    """Settle the tree and write the footer. `loop` is None when the run ended before its loop was
    made (interrupted during set-up): nothing was edited then. `on_end(outcome, final tree)` takes the
    result to the user's tree (agentloop.workspace.isolation) and says how."""
    if guard is not None:
        guard.settle()
    totals = loop.totals if loop is not None else Totals()
    checks = loop.checks if loop is not None else None
    if checks is not None:
        checks.turn = totals.turns
        try:  # interrupted mid-check, protected files may be left as the model's code made them
            checks.keep_pristine(None)
        except (OSError, RuntimeError, subprocess.CalledProcessError):
            pass
    extra: dict[str, Any] = {}
    diff, final_tree = "", None
    if loop is not None:
        final_tree = loop.edited.settle()
        if ending.outcome != Outcome.ACCEPTED and loop.turn_trees:
            best = max(loop.turn_trees, key=lambda t: (t.checks_passed, t.turn))
            as_good = {t.tree for t in loop.turn_trees if t.checks_passed == best.checks_passed}
            if final_tree not in as_good:  # later turns passed fewer checks, or never finished
                # Only the files the model edited since: check outputs stay as the checks left them.
                loop.workspace.put(final_tree, best.tree)
                final_tree = best.tree
                extra["kept_turn"] = best.turn
                progress(kept_turn_line(best.turn, best.checks_passed))
        diff = loop.workspace.diff(loop.edited.base, final_tree)
    if on_end is not None:
        extra["workspace"] = on_end(ending.outcome, final_tree)
    duration = round(time.monotonic() - started, 3)
    flags = dict(sorted(checks.flags.items())) if checks is not None else {}
    last_results = checks.last_results if checks is not None else []
    # A flagged run is never rewarded: it scores as a failure, whatever its outcome.
    reward = config.reward.score(ending.outcome == Outcome.ACCEPTED and not flags, totals.unusable_turns)
    trajectory.event("outcome", outcome=ending.outcome, reason=ending.reason, duration_s=duration,
                     totals=totals.plain(), diff=diff, checks=[r.to_dict() | {"passed": r.passed} for r in
                                                               last_results], reward=reward, flags=flags, **extra)
    return RunResult(ending.outcome, ending.reason, totals, duration, last_results, diff, ending.exit_code,
                     extra.get("workspace") or {}, extra.get("kept_turn"), flags, reward)


def kept_turn_line(turn: int, passed: int) -> str:
    """Why the result is an earlier tree than the last one, in words."""
    if turn == 0:
        return (f"no turn passed more checks than the code it started from ({passed} passed): "
                "the model's edits are set aside, the result is the starting code")
    return (f"kept the code of turn {turn}, which passed {plural(passed, 'check')}: "
            "later turns passed fewer or were cut short")
