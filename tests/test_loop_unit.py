"""The turn cycle on its own: `Loop` with a scripted in-process model (agentloop.run.scripted), between
the run's start (agentloop.run.start) and its settling (agentloop.run.settle).

Fast beside the end-to-end tests over HTTP (test_fix_e2e.py): no litellm, no server, one quick
check command against a real git repository; what the loop asked the model is read back from the
script's record of queries.
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import make_repo, validate_event

from agentloop.config import Budget, Check, Config
from agentloop.record.trajectory import Trajectory, read_events
from agentloop.run import rules
from agentloop.run.loop import Loop
from agentloop.run.model import LazyModel, ModelCallFailed, ModelReply, ToolCall
from agentloop.run.scripted import ScriptedModel
from agentloop.run.settle import settle
from agentloop.run.start import first_checks
from agentloop.run.turns import Ending
from agentloop.workspace.repo import Workspace
from agentloop.workspace.suite import CheckSuite

BUGGY = "def add(a, b):\n    return a - b\n"
CHECK = f'{sys.executable} -c "from calc import add; assert add(2, 3) == 5"'
FIX = "calc.py\n<<<<<<< SEARCH\n    return a - b\n=======\n    return a + b\n>>>>>>> REPLACE\n"
WRONG = "calc.py\n<<<<<<< SEARCH\n    return a - b\n=======\n    return a * b\n>>>>>>> REPLACE\n"
FIX_WRONG = FIX.replace("a - b", "a * b")
NO_EDIT = "I am not sure what to change."


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo", {"calc.py": BUGGY})


def run_loop(repo: Path, model: ScriptedModel | LazyModel, *, started: float | None = None, **settings):
    budget = replace(Budget(), **settings.pop("budget", {}))
    settings.setdefault("checks", (Check(run=CHECK, kind="command"),))
    config = replace(Config(), sandbox="off", in_place=True, tools="on", budget=budget, **settings)
    trajectory, workspace = Trajectory(repo.parent / "runs" / "run"), Workspace(repo)
    try:
        checks = CheckSuite(config, workspace, trajectory, started=started)
        loop = Loop(config, model, workspace, checks, "Fix add.", trajectory, start_tree=workspace.snapshot())
        ending = loop.run(first_checks(checks, loop.start_tree))
        return settle(config, trajectory, ending, loop, started=checks.started)
    finally:
        trajectory.close()


def test_accepted_on_the_first_good_reply(repo):
    model = ScriptedModel([FIX, FIX])
    result = run_loop(repo, model)
    assert (result.outcome, result.totals.turns, model.served) == ("accepted", 1, 1)
    assert "return a + b" in (repo / "calc.py").read_text()
    assert result.checks[0].passed


def test_budget_stops_the_run(repo):
    model = ScriptedModel([WRONG, FIX_WRONG.replace("a + b", "a ** b"), FIX])
    result = run_loop(repo, model, budget={"max_turns": 2})
    assert result.outcome == "budget_exhausted" and "max_turns (2)" in result.reason
    assert model.served == 2 and result.totals.turns == 2


def test_the_model_gives_up(repo):
    give_up = ModelReply(content="", tool_calls=[ToolCall("c1", "give_up", '{"reason": "no idea"}')])
    result = run_loop(repo, ScriptedModel([give_up, FIX]))
    assert result.outcome == "gave_up" and "no idea" in result.reason


def test_format_errors_in_a_row_end_the_run(repo):
    model = ScriptedModel([NO_EDIT, NO_EDIT + " Really.", NO_EDIT + " Sorry.", FIX])
    result = run_loop(repo, model, max_format_errors=3)
    assert result.outcome == "gave_up" and "3 replies in a row" in result.reason
    assert model.served == 3 and result.totals.unusable_turns == 3
    assert "<<<<<<< SEARCH" in model.queries[1].messages[-1]["content"]  # told the format, with an example


def test_edits_that_change_nothing_are_wrong_answers_not_format_errors(repo):
    """The small Qwen coder sent the buggy function back unchanged (a well-formed edit), then a malformed
    reply, then another: the run ended as 3 format errors with a turn of its budget left (issue 16)."""
    same = f"calc.py::add\n```python\n{BUGGY}```\n"
    model = ScriptedModel([same, NO_EDIT, NO_EDIT + " Really.", FIX])
    result = run_loop(repo, model, max_format_errors=3)
    assert result.outcome == "accepted" and model.served == 4 and result.totals.unusable_turns == 3
    assert "changes nothing" in model.queries[1].messages[-1]["content"]


def test_a_fresh_retry_model_is_not_shown_its_refused_reply_nor_its_failed_fix(repo, tmp_path):
    """models.yaml `fresh_retry` and `undo_failed` (the small Qwen coders): after a refused reply the next
    request is the first prompt and why the reply was refused, not the conversation with the reply in it;
    an applied fix after which the check still fails is undone, and the next request is the first prompt
    and how the check failed (the first prompt shows the code as it is again)."""
    same = f"calc.py::add\n```python\n{BUGGY}```\n"
    model = ScriptedModel([NO_EDIT, same, WRONG, FIX], name="openai/qwen2.5-coder-1.5b")
    result = run_loop(repo, model, max_format_errors=5)
    assert result.outcome == "accepted" and model.served == 4 and result.totals.turns == 4
    assert "return a + b" in (repo / "calc.py").read_text()
    first = model.queries[0].messages
    second, third, fourth = (q.messages for q in model.queries[1:])
    assert second[:-1] == first and "no edit that I could find" in second[-1]["content"]
    assert third[:-1] == first and "changes nothing" in third[-1]["content"]
    assert fourth[:-1] == first and "has been undone" in fourth[-1]["content"]
    assert "calc.py" in fourth[-1]["content"] and "AssertionError" in fourth[-1]["content"]  # how WRONG failed
    events = read_events(tmp_path / "runs" / "run" / "trajectory.jsonl")
    feedback = [e for e in events if e["type"] == "feedback"]
    assert [e.get("fresh_retry") for e in feedback] == [True, True, True]
    assert [e.get("undone") for e in feedback] == [None, None, ["calc.py"]]
    assert all(validate_event(e) == [] for e in events)
    # The turn event keeps the tree the checks judged; the result is the accepted fix alone.
    assert result.diff.count("+    return a + b") == 1 and "a * b" not in result.diff
    # Exports: each turn holds its own reply and the message the model got after it.
    from agentloop.record.exporters import atif, rlef
    from agentloop.record.runlog import Run

    run = Run.load(tmp_path / "runs" / "run")
    turns = next(rlef([run]))["turns"]
    assert [[m["content"] for m in t["messages"]] for t in turns] == [[NO_EDIT], [same], [WRONG], [FIX]]
    assert [t["feedback"] for t in turns[:3]] == [second[-1]["content"], third[-1]["content"], fourth[-1]["content"]]
    assert [t["edit_applied"] for t in turns] == [False, False, True, True]
    assert [s["source"] for s in next(atif([run]))["steps"]] == ["system", "user"] + ["agent", "user"] * 3 + ["agent"]
    other = ScriptedModel([NO_EDIT, WRONG, FIX_WRONG])  # any other model: the conversation goes on
    run_loop(make_repo(tmp_path / "other" / "repo", {"calc.py": BUGGY}), other)
    assert other.queries[1].messages[-2] == {"role": "assistant", "content": NO_EDIT}
    assert other.queries[2].messages[-2] == {"role": "assistant", "content": WRONG}  # not undone


def test_a_fix_that_passes_more_checks_is_kept_and_the_conversation_goes_on(tmp_path):
    """`undo_failed` undoes only a fix made from the starting code that passes no more checks than it
    did: one that mends one of two checks stays, and from then on the conversation goes on as usual."""
    repo = make_repo(tmp_path / "repo", {"calc.py": BUGGY + "def mul(a, b):\n    return a + b\n"})
    mul = f'{sys.executable} -c "from calc import mul; assert mul(2, 3) == 6"'
    checks = (Check(run=CHECK, kind="command"), Check(run=mul, kind="command"))
    fix_mul = "calc.py\n<<<<<<< SEARCH\n    return a + b\n=======\n    return a * b\n>>>>>>> REPLACE\n"
    model = ScriptedModel([NO_EDIT, fix_mul, NO_EDIT + " Again.", FIX], name="openai/qwen2.5-coder-1.5b")
    result = run_loop(repo, model, checks=checks, max_format_errors=5)
    assert result.outcome == "accepted" and model.served == 4
    third, fourth = model.queries[2].messages, model.queries[3].messages
    assert third[-2] == {"role": "assistant", "content": fix_mul}  # kept: the conversation goes on
    assert "has been undone" not in third[-1]["content"]
    assert fourth[-2] == {"role": "assistant", "content": NO_EDIT + " Again."}  # no fresh retry after an edit
    assert (repo / "calc.py").read_text() == "def add(a, b):\n    return a + b\ndef mul(a, b):\n    return a * b\n"


def test_an_interrupt_during_an_undo_leaves_the_result_as_the_disk_has_it(repo, monkeypatch):
    """Nothing lost: an interrupt that lands once the undo has written the file, before the loop notes
    it, still settles to what the disk holds (the starting code), as for an edit being written."""
    real_put = Workspace.put

    def put_then_interrupt(self, from_tree, to_tree, paths=None):
        real_put(self, from_tree, to_tree, paths)
        raise KeyboardInterrupt

    monkeypatch.setattr(Workspace, "put", put_then_interrupt)
    config = replace(Config(), sandbox="off", in_place=True, checks=(Check(run=CHECK, kind="command"),))
    trajectory, workspace = Trajectory(repo.parent / "runs" / "run"), Workspace(repo)
    checks = CheckSuite(config, workspace, trajectory)
    model = ScriptedModel([WRONG, FIX], name="openai/qwen2.5-coder-1.5b")
    loop = Loop(config, model, workspace, checks, "Fix add.", trajectory, start_tree=workspace.snapshot())
    with pytest.raises(KeyboardInterrupt):
        loop.run(first_checks(checks, loop.start_tree))
    result = settle(config, trajectory, Ending("interrupted", "Ctrl-C", 130), loop, started=checks.started)
    trajectory.close()
    assert (repo / "calc.py").read_text() == BUGGY and result.diff == ""  # the disk and the result agree


def test_tool_rounds_answer_the_model_within_one_turn(repo):
    read = ModelReply(content="", tool_calls=[ToolCall("c1", "read_file", '{"path": "calc.py"}')])
    model = ScriptedModel([read, FIX])
    result = run_loop(repo, model)
    assert result.outcome == "accepted" and result.totals.turns == 1 and result.totals.model_calls == 2
    assert model.queries[0].tools and "read_file" in {t["function"]["name"] for t in model.queries[0].tools}
    answer = model.queries[1].messages[-1]
    assert answer["role"] == "tool" and answer["tool_call_id"] == "c1" and "return a - b" in answer["content"]


def test_too_many_tool_rounds_end_the_run(repo):
    read = ModelReply(content="", tool_calls=[ToolCall("c1", "list_files", "{}")])
    model = ScriptedModel([read] * 5)
    result = run_loop(repo, model, max_tool_rounds=2)
    assert result.outcome == "gave_up" and "2 rounds of tool calls" in result.reason
    assert model.served == 3


def test_a_repeated_reply_is_followed_by_a_warmer_request(repo):
    model = ScriptedModel([NO_EDIT, NO_EDIT, FIX])
    result = run_loop(repo, model)
    assert result.outcome == "accepted"
    warm = rules.repeat_temperature(model.name)
    assert [q.overrides for q in model.queries] == [{}, {}, {"temperature": warm}]


def test_a_repeated_reply_is_told_so_and_a_repeat_at_the_warmer_temperature_ends_the_run(repo):
    """The small Qwen coder sent one reply on every turn, word for word, even at temperature 0.7 (issue
    16's real suite): the message after a repeat says plainly that this reply was tried and what it did,
    and a repeat of the warmer request ends the run instead of waiting for the same reply again."""
    model = ScriptedModel([WRONG, WRONG, WRONG, FIX])
    result = run_loop(repo, model, max_format_errors=5)
    assert result.outcome == "gave_up" and "its reply of turn 1 again, word for word" in result.reason
    assert model.served == 3 and "return a * b" in (repo / "calc.py").read_text()
    told = model.queries[2].messages[-1]["content"]
    assert told.startswith("This reply is word for word the same as your reply in turn 1, which was applied, "
                           "and then 1 check still failed. Sending it again changes nothing")
    assert model.queries[2].overrides == {"temperature": rules.repeat_temperature(model.name)}


def test_a_repeated_refused_reply_is_told_why_it_was_refused(repo):
    model = ScriptedModel([NO_EDIT, NO_EDIT, FIX])
    result = run_loop(repo, model)
    assert result.outcome == "accepted"
    told = model.queries[2].messages[-1]["content"]
    assert told.startswith("This reply is word for word the same as your reply in turn 1, which held no edit")


def test_the_user_temperature_wins_when_it_is_warmer(repo):
    model = ScriptedModel([NO_EDIT, NO_EDIT, FIX])
    run_loop(repo, model, model_params={"temperature": 1.3})
    assert model.queries[2].overrides == {"temperature": 1.3}


def test_the_deadline_is_passed_to_every_query(repo):
    started = time.monotonic()
    model = ScriptedModel([WRONG, FIX_WRONG])
    result = run_loop(repo, model, started=started, budget={"time_limit": 500})
    assert result.outcome == "accepted"
    assert [q.deadline for q in model.queries] == [started + 500] * 2


def test_a_failed_model_call_ends_the_run_with_an_error(repo):
    model = ScriptedModel([ModelCallFailed("the provider is down", [])])
    result = run_loop(repo, model)
    assert result.outcome == "error" and "the provider is down" in result.reason
    assert result.totals.turns == 1 and result.totals.turns_finished == 0


def test_checks_that_already_pass_ask_nothing(repo):
    (repo / "calc.py").write_text(BUGGY.replace("a - b", "a + b"))
    model = ScriptedModel([FIX])
    result = run_loop(repo, model)
    assert result.outcome == "accepted" and model.queries == []


def test_a_lazy_model_is_built_only_when_the_checks_fail(repo):
    built: list[ScriptedModel] = []

    def build() -> ScriptedModel:
        built.append(ScriptedModel([FIX]))
        return built[-1]

    (repo / "calc.py").write_text(BUGGY.replace("a - b", "a + b"))
    assert run_loop(repo, LazyModel("scripted", build)).outcome == "accepted" and built == []
    (repo / "calc.py").write_text(BUGGY)
    result = run_loop(repo, LazyModel("scripted", build))
    assert result.outcome == "accepted" and len(built) == 1 and built[0].served == 1


def test_a_model_that_cannot_be_built_fails_before_a_turn_is_counted(repo):
    from agentloop.errors import UsageError

    def missing():
        raise UsageError("no model is configured")

    result = run_loop(repo, LazyModel("", missing))
    assert result.outcome == "error" and result.reason == "no model is configured"
    assert result.totals.turns == 0 and result.exit_code == UsageError.exit_code


def test_the_best_turn_is_kept_when_a_later_one_passes_fewer_checks(repo):
    """Turn 1 (a * b) keeps `add(0, 0) == 0` passing; turn 2 (a ** b) breaks it: turn 1's code is the result."""
    keeps_zero = f'{sys.executable} -c "from calc import add; assert add(0, 0) == 0"'
    power = "calc.py\n<<<<<<< SEARCH\n    return a * b\n=======\n    return a ** b\n>>>>>>> REPLACE\n"
    model = ScriptedModel([WRONG, power])
    result = run_loop(repo, model, budget={"max_turns": 2},
                      checks=(Check(run=CHECK, kind="command"), Check(run=keeps_zero, kind="command")))
    assert result.outcome == "budget_exhausted" and result.kept_turn == 1
    assert "return a * b" in (repo / "calc.py").read_text()
    assert "+    return a * b" in result.diff


def test_a_check_that_cannot_start_ends_the_run_before_any_model_call(repo):
    from agentloop.errors import UsageError

    config = replace(Config(), checks=(Check(run="no-such-command-agentloop", kind="command"),), sandbox="off",
                     in_place=True)
    trajectory, workspace = Trajectory(repo.parent / "runs" / "run"), Workspace(repo)
    try:
        checks = CheckSuite(config, workspace, trajectory)
        with pytest.raises(UsageError, match="cannot start"):
            first_checks(checks, workspace.snapshot())
    finally:
        trajectory.close()


def test_settling_a_run_that_never_reached_its_loop_still_writes_the_footer(tmp_path):
    import json

    ended: list[tuple[str, str | None]] = []
    trajectory = Trajectory(tmp_path / "run")
    try:
        result = settle(Config(), trajectory, Ending("interrupted", "interrupted by the user"), None,
                        started=time.monotonic(), on_end=lambda outcome, tree: ended.append((outcome, tree)) or {})
    finally:
        trajectory.close()
    assert ended == [("interrupted", None)] and result.outcome == "interrupted" and result.totals.turns == 0
    events = [json.loads(line) for line in (tmp_path / "run" / "trajectory.jsonl").read_text().splitlines()]
    assert events[-1]["type"] == "outcome" and events[-1]["reason"] == "interrupted by the user"


def test_the_suite_order_runs_hidden_checks_only_once_the_visible_ones_pass():
    from agentloop.workspace.checks import CommandResult, run_suite

    visible, hidden = Check(run="visible"), Check(run="hidden", feedback=False)
    ran: list[str] = []

    def run_one(exit_code: int):
        def run(check, number, count):
            ran.append(check.run)
            return CommandResult(command=check.run, exit_code=exit_code if check is visible else 0, output="",
                                 duration_s=0.0)
        return run

    assert [r.command for r in run_suite([hidden, visible], run_one(1))] == ["visible"]
    assert [r.command for r in run_suite([hidden, visible], run_one(0))] == ["visible", "hidden"]
    assert ran == ["visible", "visible", "hidden"]
