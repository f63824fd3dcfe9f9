"""A Model that answers from a script, in process: replies given in advance, every query recorded.

A replay serves a run's recorded replies through it (agentloop.run.replay); the loop's unit tests
script a model with it, and read back what the loop asked (messages, tools, deadline, overrides).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from agentloop.run.model import ModelCallFailed, ModelReply


@dataclass
class Query:
    """What the caller passed to one `query`."""

    messages: list[dict[str, Any]]  # as they were at the call (the caller's list goes on growing)
    tools: list[dict[str, Any]] | None
    deadline: float | None
    overrides: dict[str, Any]


class ScriptedModel:
    """Answers with `replies` in order: a ModelReply, a string (a reply with that content), or an
    exception to raise (e.g. ModelCallFailed). Past the end of the script, `exhausted` decides."""

    def __init__(self, replies: Iterable[ModelReply | str | BaseException], name: str = "scripted"):
        self.replies = [ModelReply(content=r) if isinstance(r, str) else r for r in replies]
        self.name = name
        self.queries: list[Query] = []
        self.served = 0

    def query(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None, *,
              deadline: float | None = None, overrides: dict[str, Any] | None = None) -> ModelReply:
        self.queries.append(Query(list(messages), tools, deadline, dict(overrides or {})))
        if self.served >= len(self.replies):
            return self.exhausted(messages, tools, deadline=deadline, overrides=overrides)
        self.served += 1
        reply = self.replies[self.served - 1]
        if isinstance(reply, BaseException):
            raise reply
        return reply

    def exhausted(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, *,
                  deadline: float | None, overrides: dict[str, Any] | None) -> ModelReply:
        raise ModelCallFailed(f"the script has no reply {self.served + 1}: it holds only {len(self.replies)}", [])
