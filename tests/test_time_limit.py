"""The time limit is honest: counted from the command's start, litellm's import inside it, and no
request sent once it is spent."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest
from conftest import PYTEST
from fake_llm import FakeLLM

from agentloop.config import Budget, Check, Config
from agentloop.run.model import LiteLLMModel, ModelCallFailed, ModelReply
from agentloop.run.session import run_session
from agentloop.workspace.repo import Workspace


class SlowToLoad:
    """A model whose warm-up (litellm's import, for the real one) lasts until `until`."""

    name = "slow"

    def __init__(self, until: float = 0.0):
        self.queries, self.until, self.warmed = 0, until, 0

    def warm_up(self) -> None:
        self.warmed += 1
        time.sleep(max(0.0, self.until - time.monotonic()))

    def query(self, messages, tools=None, *, deadline=None, overrides=None) -> ModelReply:
        self.queries += 1
        return ModelReply(content="no edit")


def config(time_limit: float) -> Config:
    return replace(Config(), checks=(Check(run=PYTEST),), sandbox="off",
                   budget=replace(Budget(), time_limit=time_limit))


def test_no_request_once_the_deadline_has_passed():
    with FakeLLM([{"content": "hello"}]) as server:
        model = LiteLLMModel("openai/fake", api_base=server.api_base, retries=0)
        with pytest.raises(ModelCallFailed, match="time limit was reached before the request"):
            model.query([{"role": "user", "content": "hi"}], deadline=time.monotonic() - 0.1)
    assert server.requests == []


def test_the_limit_counts_from_the_command_start(calc_repo):
    model = SlowToLoad()
    session = run_session(config(30), Workspace(calc_repo), None, model=model, started=time.monotonic() - 40)
    assert session.summary["outcome"] == "budget_exhausted" and "time_limit" in session.summary["reason"]
    assert model.queries == 0 and session.summary["duration_s"] >= 40


def test_the_warm_up_is_counted_before_the_request(calc_repo):
    started = time.monotonic()
    model = SlowToLoad(until=started + 10.5)  # the checks leave time; the warm-up spends the rest
    session = run_session(config(10), Workspace(calc_repo), None, model=model, started=started)
    assert session.summary["outcome"] == "budget_exhausted", session.summary["reason"]
    assert model.warmed == 1 and model.queries == 0
