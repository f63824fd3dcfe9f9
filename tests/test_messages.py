"""What a person reads: the progress and outcome lines of `fix`, its closing summary, `show`'s diffs.
Real repositories, real pytest, the model scripted through the real HTTP path."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import BUGGY_CALC, CALC_TEST, PYTEST, make_repo
from conftest import FIX_ADD as CONFTEST_FIX_ADD
from fake_llm import FakeLLM

from agentloop.cli import cli
from agentloop.commands.fix import outcome_line

FIX_ADD = "I will fix add.\n\n" + CONFTEST_FIX_ADD
BREAK_MUL = """calc.py
<<<<<<< SEARCH
    return a * b
=======
    return a ** b
>>>>>>> REPLACE
"""

MUL_CHECK = "python3 -c 'from calc import mul; assert mul(2, 3) == 6'"


def fix(repo: Path, server: FakeLLM, *args: str, monkeypatch) -> tuple[int, dict, str]:
    monkeypatch.chdir(repo)
    result = CliRunner().invoke(cli, ["fix", "-m", "openai/fake", "--api-base", server.api_base, "--json",
                                      "--check", PYTEST, *args], catch_exceptions=False)
    summary = json.loads(result.stdout.strip().splitlines()[-1]) if result.stdout.strip() else {}
    return result.exit_code, summary, result.stderr


def turn_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if re.match(r"turn \d+:", line)]


def test_accepted_run_says_it_once_and_ends_with_a_summary(calc_repo, monkeypatch):
    with FakeLLM([{"content": FIX_ADD}]) as server:
        code, s, err = fix(calc_repo, server, monkeypatch=monkeypatch)
    assert code == 0
    assert "1 edit applied" in err and "1 edits" not in err
    assert "accepted: all acceptance checks pass; after 1 turn, 120 tokens" in err
    assert "(all acceptance checks pass)" not in err
    # The closing summary: files with +/- counts, where the result is, how to undo it.
    assert "changed:\n  calc.py (+1 -1)" in err
    assert f"agentloop undo {s['run_id']}" in err and "git diff" in err
    assert "agentloop show last" in err


def test_a_turn_cut_short_still_gets_its_line(calc_repo, monkeypatch):
    with FakeLLM([{"content": "I think the bug is somewhere. Good luck!"}]) as server:
        code, s, err = fix(calc_repo, server, monkeypatch=monkeypatch)
    assert code == 1 and s["outcome"] == "gave_up"
    lines = turn_lines(err)
    assert len(lines) == s["turns"] == 3, err
    assert lines[-1].endswith("no edit applied") or lines[-1].endswith("stopped after the reply")
    # the fake repeats its reply: the third, sampled warmer after a repeat, repeats it again
    assert "gave up: the model sent its reply of turn 1 again, word for word, even at a higher temperature; " \
        "after 3 turns" in err


def test_no_finished_turn_is_not_called_one_turn(calc_repo, monkeypatch):
    (calc_repo / ".agentloop.yaml").write_text("retries: 0\n")
    with FakeLLM([{"status": 400, "error": "bad request"}]) as server:
        code, s, err = fix(calc_repo, server, monkeypatch=monkeypatch)
    assert code == 3 and s["turns"] == 1 and s["turns_finished"] == 0
    assert "turn 1: model 0.0s, 0 tokens, $0.0000, stopped: no reply from the model" in err
    assert "; during turn 1, 0 tokens" in err and "after 1 turns" not in err


def test_kept_turn_zero_is_said_in_words(calc_repo, monkeypatch):
    with FakeLLM([{"content": BREAK_MUL}]) as server:
        code, s, err = fix(calc_repo, server, "--max-turns", "1", "--check", MUL_CHECK, monkeypatch=monkeypatch)
    assert code == 1 and s["kept_turn"] == 0
    assert "no turn passed more checks than the code it started from" in err
    assert "kept turn 0" not in err


@pytest.mark.parametrize("outcome,reason,expected", [
    ("accepted", "all acceptance checks pass", "accepted: all acceptance checks pass; after 2 turns"),
    ("interrupted", "interrupted by the user", "interrupted by the user; after 2 turns"),
    ("budget_exhausted", "max_turns (2) reached", "budget exhausted: max_turns (2) reached; after 2 turns"),
    ("gave_up", "the model gave up: too hard", "the model gave up: too hard; after 2 turns"),
])
def test_outcome_line_states_the_reason_once(outcome, reason, expected):
    line = outcome_line({"outcome": outcome, "reason": reason, "turns": 2, "turns_finished": 2, "tokens": 10,
                         "cost_usd": 0.0, "duration_s": 1.0})
    assert line.startswith(expected)


def test_show_labels_an_edit_with_its_real_lines(tmp_path, monkeypatch):
    source = "".join(f"X{i} = {i}\n" for i in range(1, 40)) + BUGGY_CALC
    repo = make_repo(tmp_path / "repo", {"calc.py": source, "test_calc.py": CALC_TEST})
    with FakeLLM([{"content": FIX_ADD}]) as server:
        code, s, _ = fix(repo, server, monkeypatch=monkeypatch)
    assert code == 0
    shown = CliRunner().invoke(cli, ["show", "last"]).stdout
    assert "@@ -38,7 +38,7 @@" in shown, shown
    assert "@@ -1 +1 @@" not in shown


def test_show_of_an_old_record_does_not_invent_line_numbers():
    from agentloop.record.transcript import _edits

    block = _edits({"type": "edits", "applied": True, "changed_files": ["calc.py"],
                    "edits": [{"kind": "replace", "path": "calc.py", "search": "a - b\n", "replace": "a + b\n"}]})
    assert "@@ (line not recorded) @@" in block.body and "@@ -1 +1 @@" not in block.body


def test_an_unapplied_result_says_where_it_is_and_how_to_take_it(calc_repo, monkeypatch):
    harmless = BREAK_MUL.replace("a ** b", "b * a")  # changes the code, fixes nothing
    with FakeLLM([{"content": harmless}]) as server:
        code, s, err = fix(calc_repo, server, "--max-turns", "1", monkeypatch=monkeypatch)
    assert code == 1 and s["outcome"] == "budget_exhausted"
    assert "changed:\n  calc.py (+1 -1)" in err
    assert f"your tree is untouched; the result is on branch agentloop/{s['run_id']}" in err
    assert f"to take it: git apply {s['patch']}" in err
    assert (calc_repo / "calc.py").read_text() == BUGGY_CALC
