"""Trajectories as training data: real `agentloop fix` runs against the scripted server, then the
schema, the reader, and the runs / show / replay / export commands over those runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import BUGGY_CALC, CALC_TEST, PYTEST, git, make_repo, validate_event
from fake_llm import FakeLLM
from test_fix_e2e import FIX_ADD, FIX_FROM_WRONG, WRONG_FIX

from agentloop.cli import cli
from agentloop.record.runlog import Run

CONFIG = f"checks:\n  - run: {PYTEST}\nreward:\n  unusable_turn: -0.5\nmodel_params:\n  logprobs: true\n"


def fix(repo: Path, script: list[dict], *args: str) -> tuple[dict, list[dict]]:
    git(repo, "checkout", "-q", "--", ".")
    with FakeLLM(script) as server:
        result = CliRunner().invoke(cli, ["fix", "-m", "openai/fake", "--api-base", server.api_base, "--json", *args],
                                    catch_exceptions=False)
    assert result.exit_code in (0, 1), result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1]), server.requests


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three real runs of one task: accepted after a tool call and a wrong fix; out of budget after a
    reply with no edit; accepted at once."""
    repo = make_repo(tmp_path_factory.mktemp("traj") / "repo",
                     {"calc.py": BUGGY_CALC, "test_calc.py": CALC_TEST, ".agentloop.yaml": CONFIG})
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(repo)
        mp.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        for name in ("OPENAI_API_KEY", "AGENTLOOP_MODEL"):
            mp.delenv(name, raising=False)
        done = {
            "tool_then_fix": fix(repo, [{"tool_calls": [{"name": "read_file", "arguments": {"path": "calc.py"}}]},
                                        {"content": WRONG_FIX}, {"content": FIX_FROM_WRONG}]),
            "no_edit_then_wrong": fix(repo, [{"content": "I am not sure."}, {"content": WRONG_FIX}],
                                      "--max-turns", "2"),
            "direct": fix(repo, [{"content": FIX_ADD}]),
        }
        git(repo, "checkout", "-q", "--", ".")
    return repo, {k: (s, Run.load(Path(s["run_dir"])), reqs) for k, (s, reqs) in done.items()}


def invoke(repo: Path, monkeypatch, *args: str):
    monkeypatch.chdir(repo)
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


# -- the record --------------------------------------------------------------------------------


def test_every_event_matches_the_shipped_schema(runs):
    _, done = runs
    kinds = set()
    for _, run, _ in done.values():
        for event in run.events:
            kinds.add(event["type"])
            assert validate_event(event) == [], event["type"]
    assert {"header", "prompt", "model_call", "tool", "edits", "check", "feedback", "turn", "outcome"} <= kinds


def test_the_schema_rejects_broken_events():
    broken = [{"type": "check", "seq": 1, "time": "t", "turn": "one"},
              {"type": "outcome", "seq": 2, "time": "t", "outcome": "won", "reason": "", "duration_s": 1,
               "totals": {}, "diff": "", "checks": [], "reward": "high"},
              {"type": "nonsense", "seq": 0}]
    for event in broken:
        assert validate_event(event), event


def test_header_and_footer_hold_what_a_trainer_needs(runs):
    _, done = runs
    summary, run, _ = done["no_edit_then_wrong"]
    h = run.header
    assert h["schema_version"] == "2" and h["run_id"] == summary["run_id"]
    assert len(h["base_commit"]) == 40 and h["repo_name"] == "repo"
    assert h["config"]["reward"] == {"accepted": 1.0, "failed": -1.0, "unusable_turn": -0.5}
    assert h["checks"][0]["run"] == PYTEST and h["budget"]["max_turns"] == 2
    assert h["templates"] and h["tools"] and {t["function"]["name"] for t in h["tool_specs"]} >= {"read_file"}
    assert "temperature" in h["model_params"]
    footer = run.footer
    assert footer["outcome"] == "budget_exhausted" and footer["reward"] == -1.5 == summary["reward"]
    assert footer["checks"][0]["passed"] is False and "return a - b + 0" in footer["diff"]
    assert footer["totals"]["unusable_turns"] == 1
    assert done["direct"][1].footer["reward"] == 1.0


def test_logprobs_are_recorded_when_asked_for(runs):
    _, done = runs
    event = next(e for e, _ in done["direct"][1].calls)
    assert event["reply"]["logprobs"]["content"][0]["token"] == FIX_ADD.split(" ")[0]
    assert done["direct"][2][0]["logprobs"] is True  # the provider was asked


def test_reward_weights_are_validated(calc_repo, monkeypatch):
    (calc_repo / ".agentloop.yaml").write_text(f"checks: [{PYTEST!r}]\nreward: {{acepted: 2}}\n")
    result = invoke(calc_repo, monkeypatch, "fix", "-m", "openai/fake")
    assert result.exit_code == 2 and "'reward.acepted' is not a reward weight" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_conversation_deltas_rebuild_exactly_what_the_model_was_sent(runs):
    _, done = runs
    for _, run, requests in done.values():
        calls = run.calls
        assert len(calls) == len(requests)
        for (_, messages), request in zip(calls, requests, strict=True):
            assert messages == request["messages"]
        # Deltas, not the whole conversation each time: later calls carry only what is new.
        assert all(e["messages_base"] > 0 for e, _ in calls[1:])
        assert all("messages" not in e for e, _ in calls)


def test_check_output_side_files(runs):
    _, done = runs
    run = done["tool_then_fix"][1]
    checks = run.of_type("check")
    assert [c["turn"] for c in checks] == [0, 1, 2]
    for check in checks:
        full = (run.run_dir / check["output_file"]).read_text()
        assert full == check["output"]  # short output: the capped copy is the whole of it
    assert "assert -1 == 5" in (run.run_dir / checks[0]["output_file"]).read_text()


def test_full_output_streams_to_the_side_file_redacted(tmp_path):
    from agentloop.record.redact import Redactor
    from agentloop.record.trajectory import Trajectory
    from agentloop.workspace.checks import run_command

    traj = Trajectory(tmp_path / "run", Redactor(environ={"MY_TOKEN": "s3cr3t-value-123"}))
    log = traj.check_log()
    command = "for i in $(seq 1 3000); do echo line $i s3cr3t-value-123; done; echo sk-abcdefghijklmnopqrstuvwx; exit 3"
    result = run_command(command, tmp_path, output_cap=2000, output_sink=log.feed)
    log.close()
    full = log.path.read_text()
    assert result.exit_code == 3 and result.elided_bytes > 0 and len(result.output) < 2100
    assert full.count("\n") == 3001 and "line 1500 " in full and "line 1500 " not in result.output
    assert "s3cr3t" not in full and "sk-abc" not in full and full.count("[REDACTED]") == 3001
    assert log.name == "checks/0001.log" and traj.check_log().name == "checks/0002.log"


def test_a_crash_leaves_a_readable_prefix(runs, tmp_path, monkeypatch):
    _, done = runs
    source = done["tool_then_fix"][1].run_dir
    crashed = tmp_path / "runs" / source.name
    crashed.mkdir(parents=True)
    data = (source / "trajectory.jsonl").read_text()
    cut = data.index('"type": "edits"')  # the middle of a line: as if killed while writing it
    (crashed / "trajectory.jsonl").write_text(data[:cut + 20])
    run = Run.load(crashed)
    assert run.outcome == "incomplete" and run.events[-1]["type"] == "model_call"
    listing = invoke(tmp_path, monkeypatch, "runs", "--runs-dir", str(tmp_path / "runs"), "--json")
    assert json.loads(listing.stdout)["outcome"] == "incomplete"
    shown = invoke(tmp_path, monkeypatch, "show", str(crashed))
    assert shown.exit_code == 0 and "run incomplete" in shown.stdout


# -- commands -------------------------------------------------------------------------------------


def test_runs_lists_newest_first_with_filters(runs, monkeypatch):
    repo, done = runs
    result = invoke(repo, monkeypatch, "runs")
    lines = result.stdout.splitlines()
    assert lines[0].split()[:4] == ["RUN", "STARTED", "OUTCOME", "TURNS"]
    ids = [line.split()[0] for line in lines[1:]]
    originals = {s["run_id"] for s, _, _ in done.values()}
    assert [i for i in ids if i in originals] == sorted(originals, reverse=True)
    assert "\x1b[" not in result.stdout  # not a terminal: no colour
    accepted = invoke(repo, monkeypatch, "runs", "--outcome", "accepted", "--json")
    listed = {json.loads(line)["run_id"] for line in accepted.stdout.splitlines()}
    assert listed & originals == {done[k][0]["run_id"] for k in ("tool_then_fix", "direct")}
    assert invoke(repo, monkeypatch, "runs", "--min-reward", "0", "-n", "1", "--json").stdout.count("\n") == 1
    assert invoke(repo, monkeypatch, "runs", "--task", "no such task").stdout == ""


def test_runs_reads_the_index_and_skips_deleted_runs(runs, tmp_path, monkeypatch):
    repo, done = runs
    index = repo / ".agentloop" / "runs" / "index.jsonl"
    indexed = {json.loads(line)["run_id"] for line in index.read_text().splitlines()}
    assert {s["run_id"] for s, _, _ in done.values()} <= indexed
    copy = tmp_path / "runs"
    shutil.copytree(repo / ".agentloop" / "runs", copy)
    gone = done["direct"][0]["run_id"]
    shutil.rmtree(copy / gone)
    listed = invoke(repo, monkeypatch, "runs", "--runs-dir", str(copy), "--json").stdout
    assert gone not in listed and done["tool_then_fix"][0]["run_id"] in listed


def test_show_prints_a_transcript(runs, monkeypatch):
    repo, done = runs
    summary = done["tool_then_fix"][0]
    result = invoke(repo, monkeypatch, "show", summary["run_id"][:17])
    out = result.stdout
    assert result.exit_code == 0
    for text in ("##### turn 1", "##### turn 2", "tool read_file", "check ", "exit 1", "exit 0",
                 "-    return a - b", "+    return a + b", "accepted: all acceptance checks pass", "reward 1.0"):
        assert text in out, text
    assert "\x1b[" not in out


def test_show_colours_only_on_a_terminal_without_no_color(runs, monkeypatch):
    from agentloop.commands.show import render_block
    from agentloop.commands.style import use_colour
    from agentloop.record.transcript import blocks

    _, done = runs
    diff_block = next(b for b in blocks(done["direct"][1]) if b.is_diff)
    assert "\x1b[32m" in render_block(diff_block, True, False)
    assert "\x1b[" not in render_block(diff_block, False, False)

    class Tty:
        def isatty(self):
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    assert use_colour(Tty())
    monkeypatch.setenv("NO_COLOR", "1")
    assert not use_colour(Tty())


def test_show_html_is_one_self_contained_page(runs, tmp_path, monkeypatch):
    repo, done = runs
    page = tmp_path / "run.html"
    result = invoke(repo, monkeypatch, "show", done["tool_then_fix"][0]["run_id"], "--html", str(page))
    assert result.exit_code == 0
    html = page.read_text()
    assert html.startswith("<!DOCTYPE html>") and "<style>" in html
    assert "<script" not in html and "src=" not in html and "<link" not in html and "@import" not in html
    assert "Turn 2" in html and '<span class="add">+    return a + b</span>' in html
    assert "&lt;&lt;&lt;&lt;&lt;&lt;&lt; SEARCH" in html  # replies are escaped, not interpreted


def test_unknown_run_is_one_line_and_exit_2(runs, monkeypatch):
    repo, _ = runs
    result = invoke(repo, monkeypatch, "show", "nosuchrun")
    assert result.exit_code == 2 and "no such run" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_replay_matches_the_record_and_cleans_up(runs, monkeypatch):
    repo, done = runs
    summary = done["tool_then_fix"][0]
    worktrees_before = git(repo, "worktree", "list", "--porcelain")  # the runs' pooled worktrees stay
    result = invoke(repo, monkeypatch, "replay", summary["run_id"], "--json")
    report = json.loads(result.stdout)
    assert result.exit_code == 0 and report["matches"] is True
    assert [(v["turn"], v["recorded"], v["replayed"]) for v in report["verdicts"]] == [
        (0, False, False), (1, False, False), (2, True, True)]
    replayed = Run.load(Path(summary["run_dir"]).parent / report["replay_run_id"])
    assert replayed.header["replay_of"] == summary["run_id"] and replayed.outcome == "accepted"
    assert git(repo, "worktree", "list", "--porcelain") == worktrees_before  # the replay worktree is gone
    assert git(repo, "status", "--porcelain") == ""  # and the user's tree untouched


def test_replay_leaves_the_users_away_worktree_registered(runs, tmp_path, monkeypatch):
    """A worktree of the user's whose folder is away for a while (an unmounted disk) keeps its
    registration, index and HEAD through a replay: `git worktree prune` would have dropped them."""
    import shutil

    repo, done = runs
    away = tmp_path / "usb" / "feature"
    git(repo, "worktree", "add", "-q", "--detach", str(away))
    shutil.rmtree(tmp_path / "usb")
    try:
        result = invoke(repo, monkeypatch, "replay", done["tool_then_fix"][0]["run_id"], "--json")
        assert result.exit_code == 0, result.stderr
        assert str(away) in git(repo, "worktree", "list", "--porcelain")
    finally:
        git(repo, "worktree", "prune")


def test_replay_reports_a_verdict_that_differs(runs, tmp_path, monkeypatch):
    repo, done = runs
    source = Path(done["direct"][0]["run_dir"])
    forged = tmp_path / source.name
    shutil.copytree(source, forged)
    lines = (forged / "trajectory.jsonl").read_text().splitlines()
    for i, line in enumerate(lines):  # pretend the fixed code still failed its check
        event = json.loads(line)
        if event["type"] == "check" and event["turn"] == 1:
            lines[i] = json.dumps(event | {"exit_code": 1, "passed": False})
    (forged / "trajectory.jsonl").write_text("\n".join(lines) + "\n")
    result = invoke(repo, monkeypatch, "replay", str(forged))
    assert result.exit_code == 1
    assert "DIFFERS" in result.stdout and "the replay differs from the record" in result.stdout


def test_replay_with_another_model_continues_the_recorded_prefix(runs, monkeypatch):
    repo, done = runs
    summary = done["no_edit_then_wrong"][0]
    with FakeLLM([{"content": FIX_ADD}]) as server:
        result = invoke(repo, monkeypatch, "replay", summary["run_id"], "--model", "openai/other",
                        "--api-base", server.api_base, "--from-turn", "2", "--json")
    report = json.loads(result.stdout)
    assert result.exit_code == 0 and report["replayed_outcome"] == "accepted"
    assert report["live_model"] == "openai/other" and len(server.requests) == 1
    # The new model saw the recorded prefix: the turn-1 reply and the feedback it got.
    sent = server.requests[0]["messages"]
    assert any(m["role"] == "assistant" and m["content"] == "I am not sure." for m in sent)


# -- exports -------------------------------------------------------------------------------------

FIELDS = {
    "openai-sft": {"messages", "tools", "flags"},
    "openai-dpo": {"input", "preferred_output", "non_preferred_output", "flags"},
    "trl-sft": {"messages", "tools", "flags"},
    "trl-dpo": {"prompt", "chosen", "rejected", "flags"},
    "atif": {"schema_version", "session_id", "agent", "steps", "final_metrics", "extra"},
    "rlef": {"episode_id", "group_id", "task", "prompt", "turns", "outcome", "reward", "flags"},
}


@pytest.mark.parametrize("fmt", sorted(FIELDS))
def test_every_export_loads_with_hugging_face_datasets(runs, tmp_path, monkeypatch, fmt):
    import datasets
    repo, done = runs
    out = tmp_path / f"{fmt}.jsonl"
    result = invoke(repo, monkeypatch, "export", ".agentloop/runs", "--format", fmt, "--out", str(out))
    assert result.exit_code == 0, result.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows and all(set(row) == FIELDS[fmt] for row in rows)
    datasets.disable_progress_bars()
    loaded = datasets.load_dataset("json", data_files=str(out), split="train", cache_dir=str(tmp_path / "hf"))
    assert set(loaded.column_names) == FIELDS[fmt] and len(loaded) == len(rows)


def export(runs, monkeypatch, tmp_path, fmt, *args):
    """Export the fixture's three runs (replay tests add more runs to the directory)."""
    repo, done = runs
    ids = [summary["run_id"] for summary, _, _ in done.values()]
    out = tmp_path / f"{fmt}.jsonl"
    result = invoke(repo, monkeypatch, "export", *ids, "--format", fmt, "--out", str(out), *args)
    assert result.exit_code == 0, result.stderr
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_openai_sft_weights_and_tools(runs, tmp_path, monkeypatch):
    repo, done = runs
    rows = export(runs, monkeypatch, tmp_path, "openai-sft", "--outcome", "accepted", "--task", "checks")
    assert len(rows) >= 2
    by_length = sorted(rows, key=lambda r: len(r["messages"]))
    direct, tool_then_fix = by_length[0], by_length[-1]
    assert [m["role"] for m in direct["messages"]] == ["system", "user", "assistant"]
    assert direct["messages"][-1] == {"role": "assistant", "content": FIX_ADD, "weight": 1}
    roles = [m["role"] for m in tool_then_fix["messages"]]
    assert roles == ["system", "user", "assistant", "tool", "assistant", "user", "assistant"]
    call = tool_then_fix["messages"][2]["tool_calls"][0]
    assert call["type"] == "function" and call["function"]["name"] == "read_file"
    assert tool_then_fix["messages"][3]["tool_call_id"] == call["id"]
    assert all(set(m) <= {"role", "content", "tool_calls", "tool_call_id", "weight"} for m in tool_then_fix["messages"])
    assert all("weight" in m for m in tool_then_fix["messages"] if m["role"] == "assistant")
    assert tool_then_fix["tools"][0]["type"] == "function"
    # The reply with no edit gets weight 0: a trainer should not imitate it.
    failed = export(runs, monkeypatch, tmp_path, "openai-sft", "--outcome", "budget_exhausted")[0]
    weights = [m["weight"] for m in failed["messages"] if m["role"] == "assistant"]
    assert weights == [0, 1]


def test_dpo_pairs_runs_of_one_task_with_different_outcomes(runs, tmp_path, monkeypatch):
    repo, done = runs
    pairs = export(runs, monkeypatch, tmp_path, "trl-dpo")
    assert len(pairs) == 2  # two accepted runs x one failed run
    assert all(p["rejected"] == [{"role": "assistant", "content": "I am not sure."}] for p in pairs)
    assert [m["role"] for m in pairs[0]["prompt"]] == ["system", "user"]
    assert {json.dumps(p["chosen"]) for p in pairs} >= {json.dumps([{"role": "assistant", "content": FIX_ADD}])}
    openai = export(runs, monkeypatch, tmp_path, "openai-dpo")
    assert len(openai) == 2 and set(openai[0]["input"]) == {"messages", "tools"}
    assert openai[0]["non_preferred_output"][0]["content"] == "I am not sure."
    assert export(runs, monkeypatch, tmp_path, "trl-dpo", "--outcome", "accepted") == []


def test_atif_steps(runs, tmp_path, monkeypatch):
    repo, done = runs
    rows = export(runs, monkeypatch, tmp_path, "atif", "--min-reward", "1")
    row = next(r for r in rows if r["session_id"] == done["tool_then_fix"][0]["run_id"])
    assert row["schema_version"] == "ATIF-v1.4" and row["agent"]["name"] == "agentloop"
    assert set(row["agent"]) == {"name", "version", "model_name"}
    assert set(row["final_metrics"]) == {"total_prompt_tokens", "total_completion_tokens", "total_cost_usd",
                                         "total_steps"}
    allowed = {"step_id", "timestamp", "source", "message", "model_name", "tool_calls", "observation", "metrics"}
    assert all(set(step) <= allowed for step in row["steps"])
    assert [s["source"] for s in row["steps"]] == ["system", "user", "agent", "agent", "user", "agent"]
    assert [s["step_id"] for s in row["steps"]] == list(range(1, 7))
    tool_step = row["steps"][2]
    assert tool_step["tool_calls"][0]["function_name"] == "read_file"
    assert tool_step["tool_calls"][0]["arguments"] == {"path": "calc.py"}
    result = tool_step["observation"]["results"][0]
    assert result["source_call_id"] == tool_step["tool_calls"][0]["tool_call_id"]
    assert "return a - b" in result["content"]
    assert set(tool_step["metrics"]) == {"prompt_tokens", "completion_tokens", "cost_usd", "logprobs"}
    edit_step = row["steps"][3]
    assert edit_step["metrics"]["logprobs"] == [-0.5 * (i % 3) for i in range(len(WRONG_FIX.split(" ")))]
    assert row["final_metrics"]["total_prompt_tokens"] == 300 and row["final_metrics"]["total_steps"] == 6


def test_rlef_episodes(runs, tmp_path, monkeypatch):
    repo, done = runs
    rows = {r["episode_id"]: r for r in export(runs, monkeypatch, tmp_path, "rlef")}
    tool_turn = rows[done["tool_then_fix"][0]["run_id"]]["turns"][0]
    assert [m["role"] for m in tool_turn["messages"]] == ["assistant", "tool", "assistant"]
    assert tool_turn["messages"][1]["tool_call_id"] == tool_turn["messages"][0]["tool_calls"][0]["id"]
    assert tool_turn["messages"][2]["content"] == WRONG_FIX
    failed = rows[done["no_edit_then_wrong"][0]["run_id"]]
    assert failed["reward"] == -1.5 and failed["outcome"] == "budget_exhausted"
    assert [t["turn"] for t in failed["turns"]] == [1, 2]
    first, second = failed["turns"]
    assert first["edit_applied"] is False and first["checks"] == [] and "no edit" in first["feedback"]
    assert second["edit_applied"] is True and second["checks"][0]["passed"] is False
    assert "failed with exit code 1" in second["feedback"]
    assert rows[done["direct"][0]["run_id"]]["reward"] == 1.0


def test_reading_runs_never_imports_litellm(runs):
    import subprocess
    import sys

    import agentloop

    repo, done = runs
    code = ("import sys\nfrom click.testing import CliRunner\nfrom agentloop.cli import cli\n"
            "for args in (['runs'], ['show', sys.argv[1]]):\n"
            "    assert CliRunner().invoke(cli, args).exit_code == 0, args\n"
            "assert 'litellm' not in sys.modules\n")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(agentloop.__file__).parents[1])}
    proc = subprocess.run([sys.executable, "-c", code, done["direct"][0]["run_id"]], cwd=repo, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_template_hashes_follow_each_templates_bytes(tmp_path: Path, monkeypatch):
    """The header's template hashes are the files' own, read again once a file changed (a batch worker
    runs many episodes; a template edited between two must not keep the first one's hash)."""
    import hashlib
    import os

    from agentloop.run import feedback

    prompts = tmp_path / "prompts"
    prompts.mkdir()
    (prompts / "a.j2").write_text("one {{ x }}\n")
    (prompts / "b.j2").write_text("two\n")
    monkeypatch.setattr(feedback, "data_dir", lambda name: tmp_path / name)
    first = feedback.template_hashes()
    assert first == {name: hashlib.sha256((prompts / name).read_bytes()).hexdigest()[:16] for name in ("a.j2", "b.j2")}
    stat = os.stat(prompts / "a.j2")
    (prompts / "a.j2").write_text("ONE {{ x }}\n")  # the same size
    os.utime(prompts / "a.j2", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    second = feedback.template_hashes()
    assert second["a.j2"] != first["a.j2"] and second["b.j2"] == first["b.j2"]
