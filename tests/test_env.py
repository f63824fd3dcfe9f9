"""`agentloop.env`: each interface driven with scripted replies; the reward checked against the real
exit codes of the hidden check, run again on the rollout's repository."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import BUGGY_CALC, CALC_TEST, FIX_ADD, PYTEST, make_repo
from fake_llm import FakeLLM

from agentloop.env import AgentloopEnv, GymEnv, rollout

WRONG = FIX_ADD.replace("a + b", "a - b + 0")
FROM_WRONG = FIX_ADD.replace("a - b", "a - b + 0")
CHEAT = """test_calc.py
<<<<<<< SEARCH
    assert add(2, 3) == 5
=======
    assert True
>>>>>>> REPLACE
"""
HELD = "from calc import add\n\n\ndef test_held():\n    assert add(10, 5) == 15\n"


@pytest.fixture
def row(tmp_path):
    repo = make_repo(tmp_path / "repo", {"calc.py": BUGGY_CALC, "test_calc.py": CALC_TEST})
    held = tmp_path / "held-out"
    held.mkdir()
    (held / "test_held.py").write_text(HELD)
    return {"id": "calc-1", "task": "add() must return the sum", "source": {"path": str(repo)},
            "checks": [f"{PYTEST} test_calc.py"], "accept": [f"{PYTEST} held"],
            "accept_files": {str(held): "held"}, "limits": {"max_turns": 3}}


def hidden_check_exit_code(result_repo: Path, held: Path) -> int:
    """The hidden check run again by hand on the rollout's final tree."""
    (result_repo / "held").mkdir(exist_ok=True)
    (result_repo / "held" / "test_held.py").write_text(held.read_text())
    return subprocess.run(f"{PYTEST} held", shell=True, cwd=result_repo, capture_output=True).returncode


def test_skyrl_shape_wrong_then_right(row, tmp_path):
    env = AgentloopEnv({"out": str(tmp_path / "out"), "sandbox": "off"}, {"task": row})
    try:
        obs, info = env.init([])
        assert info["task_id"] == "calc-1"
        assert obs[0]["role"] == "system" and "add() must return the sum" in str(obs)
        first = env.step(WRONG)
        assert first["done"] is False and first["reward"] == 0.0
        assert "exit code 1" in str(first["observations"]) and all(m["role"] != "assistant"
                                                                   for m in first["observations"])
        assert "test_held" not in str(first["observations"])  # the hidden check is never shown
        second = env.step(FROM_WRONG)
        assert second["done"] is True and second["reward"] == 1.0
        assert second["metadata"]["status"] == "passed"
    finally:
        env.close()
    repo = tmp_path / "out" / "rollouts" / "calc-1" / "0" / "repo"
    assert hidden_check_exit_code(repo, tmp_path / "held-out" / "test_held.py") == 0
    assert "return a - b" in (tmp_path / "repo" / "calc.py").read_text()  # the source untouched


def test_a_policy_whose_wrong_fix_is_undone_still_gets_the_feedback_as_its_observation(row, tmp_path):
    """For a policy named like a small Qwen coder (models.yaml fresh_retry, undo_failed) the loop's next
    request is the opening messages and a new one, not a continuation: the observation is that new
    message (it was empty), and the episode goes on from the starting code."""
    env = AgentloopEnv({"out": str(tmp_path / "out"), "sandbox": "off", "model": "qwen2.5-coder-1.5b"},
                       {"task": row})
    try:
        env.init([])
        for wrong in (WRONG, FIX_ADD.replace("a + b", "a * b")):
            step = env.step(wrong)
            assert [m["role"] for m in step["observations"]] == ["user"]
            assert "has been undone" in step["observations"][0]["content"]
            assert "exit code 1" in step["observations"][0]["content"]
        last = env.step(FIX_ADD)  # from the starting code again: FROM_WRONG would not apply
        assert last["done"] is True and last["reward"] == 1.0
    finally:
        env.close()


def test_trainer_prompt_is_kept_and_budget_ends_with_zero_reward(row, tmp_path):
    row["limits"] = {"max_turns": 2}
    env = AgentloopEnv({"out": str(tmp_path / "out"), "sandbox": "off"}, {"task": row})
    try:
        prompt = [{"role": "user", "content": "my own prompt"}]
        obs, _ = env.init(prompt)
        assert obs == prompt
        assert env.step(WRONG)["done"] is False
        last = env.step(FIX_ADD.replace("a + b", "a * b"))
        assert last["done"] is True and last["reward"] == 0.0
        assert last["metadata"]["outcome"] == "budget_exhausted"
    finally:
        env.close()
    repo = tmp_path / "out" / "rollouts" / "calc-1" / "0" / "repo"
    assert hidden_check_exit_code(repo, tmp_path / "held-out" / "test_held.py") != 0


def test_editing_the_tests_earns_nothing(row, tmp_path):
    row["accept"], row["accept_files"] = [], {}
    env = AgentloopEnv({"out": str(tmp_path / "out"), "sandbox": "off", "max_turns": 1}, {"task": row})
    try:
        env.init([])
        out = env.step(CHEAT)
        assert out["done"] is True and out["reward"] == 0.0
    finally:
        env.close()


def test_close_mid_episode_records_it_interrupted(row, tmp_path):
    env = AgentloopEnv({"out": str(tmp_path / "out"), "sandbox": "off"}, {"task": row})
    env.init([])
    env.step(WRONG)
    env.close()
    assert env.result is not None and env.result["outcome"] == "interrupted"
    assert Path(env.result["run_dir"], "summary.json").is_file()


def test_gym_adapter(row, tmp_path):
    env = GymEnv(row, out=str(tmp_path / "out"), sandbox="off")
    try:
        obs, info = env.reset(seed=0)
        assert obs and info["sample"] == 0
        obs, reward, terminated, truncated, info = env.step(FIX_ADD)
        assert (reward, terminated, truncated) == (1.0, True, False)
        assert info["status"] == "passed"
    finally:
        env.close()


def test_whole_episode_against_an_endpoint(row, tmp_path):
    with FakeLLM([{"content": WRONG}, {"content": FROM_WRONG}]) as server:
        episode = rollout(row, model="openai/fake", api_base=server.api_base, out=tmp_path / "out", sandbox="off",
                          max_turns=4)
    assert episode.status == "passed" and episode.reward == 1.0 and episode.turns == 2
    assert [m["role"] for m in episode.messages][:2] == ["system", "user"]
    assert any(m["role"] == "assistant" for m in episode.messages)
    assert Path(episode.run_dir).is_dir()


def test_a_flagged_acceptance_is_not_a_pass():
    from agentloop.batch.rollout import classify

    assert classify("accepted", "all acceptance checks pass", {}) == "passed"
    assert classify("accepted", "all acceptance checks pass", {"tests_modified": 1}) == "failed"
    assert classify("error", "cannot connect to the model server at x: connection refused") == "infra_error"
    assert classify("error", "internal error: ValueError") == "agent_error"
    assert classify("budget_exhausted", "time_limit (5s) reached") == "timeout"
    assert classify("gave_up", "3 unusable replies") == "failed"
