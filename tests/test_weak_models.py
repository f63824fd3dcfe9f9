"""Forgiveness for the replies small local models write, through the applier and through the CLI.

Real replies of Qwen2.5-Coder-1.5B: the placeholder path from the instructions, a file's name
that is not quite its path, a whole file with no path line, while a test file is also in play.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import PYTEST, make_repo
from fake_llm import FakeLLM
from test_fix_e2e import run_fix

from agentloop.config import Config, load_config
from agentloop.edits import apply_reply
from agentloop.run import feedback, rules

GEOMETRY = '''\
def area(width, height):
    """Area of a width x height rectangle."""
    return width + height


def perimeter(width, height):
    return 2 * (width + height)
'''
GEOMETRY_TEST = '''\
from geometry import area, perimeter


def test_area():
    assert area(3, 4) == 12


def test_perimeter():
    assert perimeter(3, 4) == 14
'''
FIXED = GEOMETRY.replace("width + height\n\n", "width * height\n\n")
KNOWN = ["geometry.py", "test_geometry.py"]  # what agentloop has in play for this failing test


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo", {"geometry.py": GEOMETRY, "test_geometry.py": GEOMETRY_TEST})


def block(path: str) -> str:
    head = f"{path}\n" if path else ""
    return f"{head}```python\n<<<<<<< SEARCH\n    return width + height\n=======\n    return width * height\n" \
           ">>>>>>> REPLACE\n```\n"


@pytest.mark.parametrize("written", ["path/to/file.py", "path/to/geometry_module.py", "src/geom.py", "file.py", ""])
def test_search_replace_with_a_bad_path_finds_the_one_file_holding_its_lines(repo, written):
    res = apply_reply(repo, block(written), known_files=KNOWN)
    assert res.applied, res.failures
    assert (repo / "geometry.py").read_text() == FIXED
    assert any("geometry.py" in n for n in res.notes)


def test_search_text_in_two_files_is_not_guessed(repo):
    (repo / "other.py").write_text(GEOMETRY)
    res = apply_reply(repo, block("path/to/file.py"), known_files=KNOWN + ["other.py"])
    assert not res.applied and res.failures[0].reason == "path_refused"
    assert (repo / "geometry.py").read_text() == GEOMETRY


def test_a_real_new_file_is_still_created(repo):
    reply = "helpers.py\n<<<<<<< SEARCH\n=======\ndef helper():\n    return 1\n>>>>>>> REPLACE\n"
    res = apply_reply(repo, reply, known_files=KNOWN)
    assert res.applied and (repo / "helpers.py").read_text() == "def helper():\n    return 1\n"


@pytest.mark.parametrize("header", ["", "path/to/file.py\n"])
def test_whole_file_without_its_path_goes_to_the_file_it_rewrites(repo, header):
    reply = f"Here is the fixed code:\n\n{header}```python\n{FIXED}```\n"
    res = apply_reply(repo, reply, known_files=KNOWN)
    assert res.applied, res.failures
    assert (repo / "geometry.py").read_text() == FIXED
    assert (repo / "test_geometry.py").read_text() == GEOMETRY_TEST


def test_whole_file_unlike_any_file_is_not_applied(repo):
    reply = "```python\nimport os\nprint(os.getcwd())\nprint(1)\n```\n"
    res = apply_reply(repo, reply, known_files=KNOWN)
    assert not res.applied
    assert (repo / "geometry.py").read_text() == GEOMETRY


def test_a_placeholder_reply_fixes_the_bug_end_to_end(repo, monkeypatch):
    with FakeLLM([{"content": "The operator is wrong.\n\n" + block("path/to/file.py")}]) as server:
        code, summary, err = run_fix(repo, server, "--check", PYTEST, "--file", "geometry.py",
                                     "--edit-format", "search_replace", monkeypatch=monkeypatch)
    assert code == 0, err
    assert summary["outcome"] == "accepted" and summary["replies_with_edits"] == 1
    assert (repo / "geometry.py").read_text() == FIXED
    system = server.requests[0]["messages"][0]["content"]
    assert "geometry.py\n<<<<<<< SEARCH" in system  # the format example names the real file
    assert "path/to" not in system


def test_format_error_feedback_shows_an_example_from_the_file_at_hand(repo, monkeypatch):
    with FakeLLM([{"content": "I think the area function is wrong."}, {"content": block("geometry.py")}]) as server:
        code, summary, _ = run_fix(repo, server, "--check", PYTEST, "--file", "geometry.py",
                                   "--edit-format", "search_replace", monkeypatch=monkeypatch)
    assert code == 0 and summary["replies"] == 2 and summary["replies_with_edits"] == 1
    text = server.requests[1]["messages"][-1]["content"]
    assert "geometry.py\n<<<<<<< SEARCH\ndef area(width, height):\n=======" in text
    assert len(text) < 600  # short: the problem and one example, not the instructions again


def test_prompt_prefix_stays_the_same_from_turn_to_turn(repo, monkeypatch):
    """A local server reuses its cache for a shared prefix: earlier messages must never change."""
    wrong = block("geometry.py").replace("width * height", "width - height")
    with FakeLLM([{"content": wrong}, {"content": block("geometry.py").replace("width + height", "width - height")}]) \
            as server:
        code, _, _ = run_fix(repo, server, "--check", PYTEST, "--edit-format", "search_replace",
                             monkeypatch=monkeypatch)
    assert code == 0
    first, second = server.requests[0]["messages"], server.requests[1]["messages"]
    assert second[: len(first)] == first


def test_small_local_models_get_a_reply_length_limit(repo, monkeypatch):
    assert rules.params("openai/qwen2.5-coder-1.5b")["max_tokens"] <= 2048
    assert rules.params("gpt-4.1")["max_tokens"] == 4096
    with FakeLLM([{"content": block("geometry.py")}]) as server:
        monkeypatch.chdir(repo)
        from click.testing import CliRunner

        from agentloop.cli import cli

        CliRunner().invoke(cli, ["fix", "-m", "openai/qwen2.5-coder-1.5b", "--api-base", server.api_base,
                                 "--check", PYTEST], catch_exceptions=False)
    body = server.requests[0]
    assert body["max_tokens"] == rules.params("openai/qwen2.5-coder-1.5b")["max_tokens"]
    assert body["temperature"] == 0.8  # sampled: at 0 it copied the function it was shown, unchanged
    assert rules.params("gpt-4.1")["temperature"] == 0.0  # everyone else: the same prompt, the same reply


def test_small_local_models_draw_a_fresh_seed_for_every_request_unless_the_user_sets_one(repo, monkeypatch):
    """llama-cpp-python draws its seeds from a chain that starts again with the server: without a seed of
    our own, every run of a task (and every sample of a batch group) got the same replies."""
    from click.testing import CliRunner
    from conftest import validate_event

    from agentloop.cli import cli
    from agentloop.record.trajectory import read_events

    monkeypatch.chdir(repo)

    def run(model: str, *extra: str) -> tuple[list[dict], list[dict]]:
        with FakeLLM([{"content": f"I am not sure ({n})."} for n in range(3)]) as server:
            result = CliRunner().invoke(cli, ["fix", "-m", model, "--api-base", server.api_base, "--check", PYTEST,
                                              "--max-turns", "3", "--json", *extra], catch_exceptions=False)
        summary = json.loads(result.stdout.strip().splitlines()[-1])
        calls = [e for e in read_events(Path(summary["trajectory"])) if e["type"] == "model_call"]
        assert all(validate_event(e) == [] for e in calls)
        return server.requests, calls

    requests, calls = run("openai/qwen2.5-coder-1.5b")
    seeds = [r.get("seed") for r in requests]
    assert len(seeds) == 3 and all(isinstance(s, int) for s in seeds) and len(set(seeds)) == 3
    assert [c["params_override"]["seed"] for c in calls] == seeds  # the record says which draw it was
    requests, calls = run("openai/fake")  # every other model: the provider's own seeding
    assert [r.get("seed") for r in requests] == [None] * 3 and not any("params_override" in c for c in calls)
    (repo / "seeded.yaml").write_text("model_params: {seed: 7}\n")
    requests, calls = run("openai/qwen2.5-coder-1.5b", "--config", "seeded.yaml")
    assert [r.get("seed") for r in requests] == [7] * 3 and not any("params_override" in c for c in calls)


def test_the_user_s_model_params_win_over_the_per_model_ones(repo):
    (repo / ".agentloop.yaml").write_text("model_params:\n  max_tokens: 300\n")
    config = load_config(repo, flags={"model": "openai/qwen2.5-coder-1.5b"})
    assert rules.params(config.model, config.model_params)["max_tokens"] == 300
    assert rules.params("openai/qwen2.5-coder-1.5b", Config().model_params)["max_tokens"] != 300


def test_small_qwen_models_get_their_own_edit_format():
    assert rules.edit_format("openai/qwen2.5-coder-1.5b", "auto") == "function"
    assert rules.edit_format("gpt-4o", "auto") == "search_replace"
    assert rules.edit_format("openai/qwen2.5-coder-1.5b", "udiff") == "udiff"
    small = rules.rule_for("openai/qwen2.5-coder-1.5b")
    assert (small.tools, small.give_up) == (False, False)
    assert rules.tools_enabled("on", "openai/qwen2.5-coder-1.5b") and rules.tools_enabled("auto", "gpt-4o")


def test_models_yaml_is_read_once_and_its_params_cannot_be_changed_by_a_caller():
    rules._table.cache_clear()
    rules.rule_for.cache_clear()
    for model in ("gpt-4o", "openai/qwen2.5-coder-1.5b", "gpt-4.1", "gpt-4o"):
        rules.params(model)["max_tokens"] = 1  # a caller's copy
        rules.edit_format(model, "auto")
    assert rules._table.cache_info().misses == 1
    assert rules.params("gpt-4o")["max_tokens"] == 4096


def test_file_flag_shows_the_file(repo, monkeypatch):
    with FakeLLM([{"content": block("geometry.py")}]) as server:
        code, _, _ = run_fix(repo, server, "--check", PYTEST, "--file", "geometry.py", monkeypatch=monkeypatch)
    assert code == 0
    assert "geometry.py\n```python\ndef area" in server.requests[0]["messages"][1]["content"]


def test_a_code_block_that_only_quotes_a_file_is_not_an_edit(repo):
    res = apply_reply(repo, f"The current code:\n\n```python\n{GEOMETRY}```\n", known_files=KNOWN)
    assert res.edits == [] and not res.applied


def test_files_are_shown_with_their_blank_lines(repo, monkeypatch):
    with FakeLLM([{"content": block("geometry.py")}]) as server:
        code, _, _ = run_fix(repo, server, "--check", PYTEST, "--file", "geometry.py", monkeypatch=monkeypatch)
    assert code == 0
    user = server.requests[0]["messages"][1]["content"]
    assert f"geometry.py\n```python\n{GEOMETRY}```" in user
    assert "\n\n\n" not in user.replace(GEOMETRY, "").replace(GEOMETRY_TEST, "")


def test_a_copied_format_example_is_not_applied(repo, monkeypatch):
    example = feedback.format_example("search_replace", "geometry.py", repo).rstrip()
    with FakeLLM([{"content": example}, {"content": f"{example}\n\n{block('geometry.py')}"}]) as server:
        code, summary, _ = run_fix(repo, server, "--check", PYTEST, "--file", "geometry.py",
                                   "--edit-format", "search_replace", monkeypatch=monkeypatch)
    assert code == 0 and summary["outcome"] == "accepted" and summary["replies_with_edits"] == 1
    assert (repo / "geometry.py").read_text() == FIXED  # no "# changed" comment from the example
    assert "only repeated the format example" in server.requests[1]["messages"][-1]["content"]


def test_a_model_call_cut_by_the_time_limit_ends_the_run_as_out_of_budget(repo, monkeypatch):
    with FakeLLM([{"delay": 40, "content": block("geometry.py")}]) as server:
        code, summary, err = run_fix(repo, server, "--check", PYTEST, "--time-limit", "12",
                                     monkeypatch=monkeypatch)
    assert code == 1, err
    assert summary["outcome"] == "budget_exhausted" and "time_limit" in summary["reason"]
    assert summary["duration_s"] < 35


def test_small_local_models_are_not_offered_tools_unless_asked(repo, monkeypatch):
    from click.testing import CliRunner

    from agentloop.cli import cli

    monkeypatch.chdir(repo)
    for extra, offered in (([], False), (["--config", "tools.yaml"], True)):
        (repo / "tools.yaml").write_text(f"checks: [{PYTEST!r}]\ntools: on\n")
        with FakeLLM([{"content": block("geometry.py")}]) as server:
            CliRunner().invoke(cli, ["fix", "-m", "openai/qwen2.5-coder-1.5b", "--api-base", server.api_base,
                                     "--check", PYTEST, *extra], catch_exceptions=False)
        assert ("tools" in server.requests[0]) == offered
        (repo / "geometry.py").write_text(GEOMETRY)


def test_small_local_models_are_not_offered_a_give_up_line(repo, monkeypatch):
    from click.testing import CliRunner

    from agentloop.cli import cli

    monkeypatch.chdir(repo)
    whole = f"geometry.py\n```python\n{FIXED}```\n"
    with FakeLLM([{"content": "GIVE UP"}, {"content": whole}]) as server:
        result = CliRunner().invoke(cli, ["fix", "-m", "openai/qwen2.5-coder-1.5b", "--api-base", server.api_base,
                                          "--check", PYTEST, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    assert "GIVE UP" not in server.requests[0]["messages"][0]["content"]
    assert (repo / "geometry.py").read_text() == FIXED


def test_a_repeated_reply_is_followed_by_a_warmer_request(repo, monkeypatch):
    unchanged = f"geometry.py\n```python\n{GEOMETRY}```\n"
    with FakeLLM([{"content": unchanged}, {"content": unchanged}, {"content": block("geometry.py")}]) as server:
        code, summary, _ = run_fix(repo, server, "--check", PYTEST, "--file", "geometry.py",
                                   "--edit-format", "whole", monkeypatch=monkeypatch)
    assert code == 0 and summary["outcome"] == "accepted"
    temps = [r.get("temperature") for r in server.requests]
    assert temps == [0.0, 0.0, 0.7]  # only the request after the repeat is warmer
    assert "changes nothing" in server.requests[1]["messages"][-1]["content"]
    from conftest import validate_event

    from agentloop.record.trajectory import read_events

    events = read_events(Path(summary["trajectory"]))
    calls = [e for e in events if e["type"] == "model_call"]
    assert [c.get("params_override") for c in calls] == [None, None, {"temperature": 0.7}]
    assert all(validate_event(e) == [] for e in events)


def test_a_whole_file_sent_back_unchanged_does_not_sink_the_real_edit(repo):
    reply = f"geometry.py\n```python\n{FIXED}```\n\ntest_geometry.py\n```python\n{GEOMETRY_TEST}```\n"
    res = apply_reply(repo, reply, known_files=KNOWN)
    assert res.applied, res.failures
    assert res.changed_files == ["geometry.py"] and any("unchanged; skipped" in n for n in res.notes)
    only_unchanged = apply_reply(repo, f"test_geometry.py\n```python\n{GEOMETRY_TEST}```\n", known_files=KNOWN)
    assert not only_unchanged.applied and only_unchanged.failures[0].reason == "already_applied"
