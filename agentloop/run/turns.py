"""What the turns of a run come to: the totals, each turn's tree, how they ended.

Written by the turn cycle (agentloop.run.loop), read when the run is settled (agentloop.run.settle).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agentloop.errors import AgentloopError
from agentloop.outcome import Outcome

if TYPE_CHECKING:
    from agentloop.record.trajectory import Trajectory
    from agentloop.run.model import ModelReply


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
    first_prompt_estimate: int = 0  # estimated tokens of the opening messages (agentloop.run.budget)
    cost_notes: set[str] = field(default_factory=set)

    def add(self, reply: ModelReply) -> None:
        """Count a reply's tokens and cost."""
        if self.model_calls == 1:
            self.first_prompt_tokens = reply.prompt_tokens
        self.prompt_tokens += reply.prompt_tokens
        self.completion_tokens += reply.completion_tokens
        self.cost_usd += reply.cost_usd
        if reply.cost_note:
            self.cost_notes.add(reply.cost_note)

    def line(self, model_s: float, what: str) -> str:
        """A turn's progress line: the model's time, the run's tokens and cost so far, what happened."""
        return (f"turn {self.turns}: model {model_s:.1f}s, {self.prompt_tokens + self.completion_tokens} tokens, "
                f"${self.cost_usd:.4f}, {what}")

    def plain(self) -> dict[str, Any]:
        return vars(self) | {"cost_notes": sorted(self.cost_notes), "cost_usd": round(self.cost_usd, 6)}


@dataclass
class TurnTree:
    turn: int
    checks_passed: int
    tree: str


@dataclass
class Ending:
    """How the turns ended; `exit_code` when an error dictates its own."""

    outcome: str
    reason: str
    exit_code: int | None = None


def ending_of(exc: Exception, trajectory: Trajectory) -> Ending:
    """A Stop, an AgentloopError (provider failure, no model configured) or a bug of ours, as an Ending."""
    if isinstance(exc, Stop):
        return Ending(exc.outcome, exc.reason)
    if isinstance(exc, AgentloopError):
        return Ending(Outcome.ERROR, str(exc), exc.exit_code)
    import traceback  # a bug of ours: the run ends recorded, the traceback in the trajectory

    trajectory.event("internal_error", traceback=traceback.format_exc())
    return Ending(Outcome.ERROR, f"internal error: {type(exc).__name__}: {exc}")
